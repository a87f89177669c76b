// Errors: one exception type, thrown by COLT5_CHECK with the call site and a message.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>
#include <cstdint>

namespace colt5 {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

namespace detail {
inline void append(std::ostringstream&) {}
template <class T, class... R>
void append(std::ostringstream& os, const T& v, const R&... rest) {
  os << v;
  append(os, rest...);
}
[[noreturn]] inline void fail(const char* file, int line, const std::string& msg) {
  std::ostringstream os;
  os << msg << " (" << file << ":" << line << ")";
  throw Error(os.str());
}
}  // namespace detail

// Shape printing for messages: [2, 3, 4]
inline std::string shape_str(const std::vector<int64_t>& s) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << "]";
  return os.str();
}

}  // namespace colt5

// COLT5_CHECK(cond, "op: expected ", a, " got ", b)  -> throws colt5::Error
#define COLT5_CHECK(cond, ...)                                               \
  do {                                                                       \
    if (!(cond)) {                                                           \
      std::ostringstream colt5_os_;                                          \
      ::colt5::detail::append(colt5_os_, __VA_ARGS__);                       \
      ::colt5::detail::fail(__FILE__, __LINE__, colt5_os_.str());            \
    }                                                                        \
  } while (0)

#define COLT5_FAIL(...) COLT5_CHECK(false, __VA_ARGS__)
