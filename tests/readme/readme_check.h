// Checks shared by the README programs (tests/readme/*.cpp): each program
// runs one README snippet, then checks its output with these and returns
// their verdict as its exit status (ctest: readme_<name>).
//
// The README shows each program's code between "// README:begin" and
// "// README:end" lines (tests/test_readme.cpp checks it shows them verbatim).
#pragma once
#include <colt5.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace readme {

using namespace colt5;

// Prints a failure and returns false.
inline bool fail(const std::string& what) {
  std::fprintf(stderr, "README example check failed: %s\n", what.c_str());
  return false;
}

// y has shape `want`, lives on `device` and is finite everywhere.
inline bool check_output(const char* what, const Tensor& y, const Shape& want, Device device) {
  if (y.shape() != want)
    return fail(std::string(what) + ": shape " + shape_str(y.shape()) + ", expected " + shape_str(want));
  if (y.device() != device) return fail(std::string(what) + ": on " + y.device().str() + ", expected " + device.str());
  std::vector<float> v = y.to(Device::cpu()).to_vector<float>();
  for (size_t i = 0; i < v.size(); ++i)
    if (!std::isfinite(v[i])) return fail(std::string(what) + ": element " + std::to_string(i) + " is not finite");
  return true;
}

// For a (B, N, D) tensor a and a (D) row: per batch row, how many of the N
// rows equal `row` within `tol` (max abs difference).
inline std::vector<int64_t> rows_equal(const Tensor& a, const Tensor& row, double tol) {
  const int64_t B = a.size(0), N = a.size(1), D = a.size(2);
  std::vector<float> x = a.to(Device::cpu()).contiguous().to_vector<float>();
  std::vector<float> r = row.to(Device::cpu()).to_vector<float>();
  std::vector<int64_t> count(B, 0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t n = 0; n < N; ++n) {
      const float* p = x.data() + (b * N + n) * D;
      bool same = true;
      for (int64_t d = 0; d < D && same; ++d) same = std::abs(p[d] - r[d]) <= tol;
      count[b] += same;
    }
  return count;
}

// Every entry of `counts` equals `want`.
inline bool check_counts(const char* what, const std::vector<int64_t>& counts, int64_t want) {
  for (size_t b = 0; b < counts.size(); ++b)
    if (counts[b] != want)
      return fail(std::string(what) + ": batch " + std::to_string(b) + " has " + std::to_string(counts[b]) +
                  ", expected " + std::to_string(want));
  return true;
}

}  // namespace readme
