// The README's C++ example is tests/consumer/readme_example.cpp, built and run
// against the installed package by the install_consumer test; this checks the
// README shows exactly that file.
#include <doctest/doctest.h>

#include <fstream>
#include <sstream>
#include <string>

static std::string slurp(const std::string& path) {
  std::ifstream f(path);
  REQUIRE_MESSAGE(f.good(), "cannot open " << path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

TEST_CASE("readme: the C++ example in README.md is the compiled consumer program") {
  std::string readme = slurp(COLT5_SOURCE_DIR "/README.md");
  std::string example = slurp(COLT5_SOURCE_DIR "/tests/consumer/readme_example.cpp");
  CHECK(readme.find("```cpp\n" + example + "```") != std::string::npos);
  CHECK(readme.find("bash scripts/run.sh") != std::string::npos);
  CHECK(readme.find("bash scripts/test.sh") != std::string::npos);
}
