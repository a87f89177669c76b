// The README's C++ is compiled code. Its snippets live in programs that the
// test suite builds and runs: tests/consumer/readme_example.cpp (built against
// the installed package by the install_consumer test) and tests/readme/*.cpp
// (ctest readme_<name>). This checks that the README shows exactly their code
// and no C++ that is not theirs.
//
// What a program shows: each run of lines between a "// README:begin" and a
// "// README:end" line (the markers may be indented), less the run's common
// indentation (a snippet from inside main() is shown flush left); a file
// without markers is shown whole. The README shows each as a ```cpp block.
#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace {

std::string slurp(const std::string& path) {
  std::ifstream f(path);
  REQUIRE_MESSAGE(f.good(), "cannot open " << path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::string trim(const std::string& s) {
  size_t a = s.find_first_not_of(" \t"), b = s.find_last_not_of(" \t");
  return a == std::string::npos ? std::string() : s.substr(a, b - a + 1);
}

// Lines joined with "\n" after each, less their common indentation (blank lines become empty).
std::string dedent(const std::vector<std::string>& lines) {
  size_t indent = std::string::npos;
  for (const std::string& l : lines)
    if (!trim(l).empty()) indent = std::min(indent, l.find_first_not_of(' '));
  std::string out;
  for (const std::string& l : lines) out += (trim(l).empty() ? std::string() : l.substr(indent)) + "\n";
  return out;
}

// The snippets a program shows in the README (see the top of this file).
std::vector<std::string> shown_code(const std::string& path) {
  const std::string text = slurp(path);
  std::vector<std::string> regions, run;
  bool inside = false, any_marker = false;
  for (const std::string& line : split_lines(text)) {
    const std::string t = trim(line);
    if (t == "// README:begin") {
      REQUIRE_MESSAGE(!inside, path << ": README:begin inside a README region");
      inside = any_marker = true;
      run.clear();
    } else if (t == "// README:end") {
      REQUIRE_MESSAGE(inside, path << ": README:end without README:begin");
      REQUIRE_MESSAGE(!run.empty(), path << ": empty README region");
      regions.push_back(dedent(run));
      inside = false;
    } else if (inside) {
      run.push_back(line);
    }
  }
  REQUIRE_MESSAGE(!inside, path << ": README:begin without README:end");
  if (!any_marker) regions.push_back(text);
  return regions;
}

// The ```cpp blocks of a markdown text, each with its final newline.
std::vector<std::string> cpp_blocks(const std::string& md) {
  std::vector<std::string> blocks;
  const std::string open = "```cpp\n", close = "\n```";
  for (size_t at = md.find(open); at != std::string::npos; at = md.find(open, at)) {
    size_t begin = at + open.size(), end = md.find(close, begin);
    REQUIRE_MESSAGE(end != std::string::npos, "README.md: unterminated ```cpp block at offset " << at);
    blocks.push_back(md.substr(begin, end + 1 - begin));
    at = end + close.size();
  }
  return blocks;
}

// The programs whose code the README shows: the consumer example, then tests/readme/*.cpp by name.
std::vector<std::string> readme_programs() {
  std::vector<std::string> paths;
  for (const auto& e : std::filesystem::directory_iterator(COLT5_SOURCE_DIR "/tests/readme"))
    if (e.path().extension() == ".cpp") paths.push_back(e.path().string());
  std::sort(paths.begin(), paths.end());
  paths.insert(paths.begin(), COLT5_SOURCE_DIR "/tests/consumer/readme_example.cpp");
  return paths;
}

}  // namespace

TEST_CASE("readme: the README shows every README region of the compiled programs, verbatim") {
  const std::vector<std::string> blocks = cpp_blocks(slurp(COLT5_SOURCE_DIR "/README.md"));
  const std::vector<std::string> programs = readme_programs();
  CHECK(programs.size() >= 9);  // the consumer example + 8 layer snippets
  for (const std::string& path : programs) {
    const std::vector<std::string> shown = shown_code(path);
    CHECK(!shown.empty());
    for (size_t i = 0; i < shown.size(); ++i) {
      INFO(path << ", region " << i << ":\n" << shown[i]);
      CHECK(std::find(blocks.begin(), blocks.end(), shown[i]) != blocks.end());
    }
  }
}

TEST_CASE("readme: every C++ block of the README is code of a compiled program") {
  const std::vector<std::string> blocks = cpp_blocks(slurp(COLT5_SOURCE_DIR "/README.md"));
  std::vector<std::string> shown;
  for (const std::string& path : readme_programs())
    for (const std::string& s : shown_code(path)) shown.push_back(s);
  CHECK(blocks.size() >= 10);  // the first program, the shared prologue, 8 layer snippets
  for (const std::string& b : blocks) {
    INFO("README block not found in tests/consumer/readme_example.cpp or tests/readme/*.cpp:\n" << b);
    CHECK(std::find(shown.begin(), shown.end(), b) != shown.end());
  }
}

TEST_CASE("readme: the README's region finder and block finder on a hand-made file") {
  const std::string dir = std::filesystem::temp_directory_path().string();
  const std::string path = dir + "/colt5_test_readme_regions.cpp";
  {
    std::ofstream f(path);
    f << "// hidden\n// README:begin\nint main() {\n// README:end\n  // README:begin\n  int x = 1;\n\n"
         "    x += 2;\n  // README:end\n  return x;\n}\n";
  }
  std::vector<std::string> r = shown_code(path);
  REQUIRE(r.size() == 2);
  CHECK(r[0] == "int main() {\n");
  CHECK(r[1] == "int x = 1;\n\n  x += 2;\n");
  std::filesystem::remove(path);
  std::vector<std::string> b = cpp_blocks("text\n```cpp\nint a;\n```\n```sh\nls\n```\n```cpp\nint b;\n\nint c;\n```\n");
  REQUIRE(b.size() == 2);
  CHECK(b[0] == "int a;\n");
  CHECK(b[1] == "int b;\n\nint c;\n");
}

TEST_CASE("readme: set-up commands, and the C++ section sits between set-up and training") {
  const std::string readme = slurp(COLT5_SOURCE_DIR "/README.md");
  CHECK(readme.find("bash scripts/run.sh") != std::string::npos);
  CHECK(readme.find("bash scripts/test.sh") != std::string::npos);
  const size_t setup = readme.find("\n## Set-up"), layers = readme.find("\n## Using the layers from C++"),
               training = readme.find("\n## Training");
  REQUIRE(setup != std::string::npos);
  REQUIRE(layers != std::string::npos);
  REQUIRE(training != std::string::npos);
  CHECK(setup < layers);
  CHECK(layers < training);
  CHECK(readme.find("\n## ", setup + 1) == layers);  // right after the set-up section
  CHECK(readme.find("COLT5_README_SMALL") != std::string::npos);
}
