// Test helpers: approximate comparison of tensors and gradcheck assertions.
#pragma once
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "colt5.h"

namespace colt5::testing {

// Max |a - b| / (atol + rtol |b|) <= 1 elementwise; reports the worst element.
inline void check_close(const Tensor& a, const Tensor& b, double rtol = 1e-5, double atol = 1e-6) {
  REQUIRE(a.shape() == b.shape());
  std::vector<double> x = a.to_vector<double>(), y = b.to_vector<double>();
  double worst = 0;
  size_t wi = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    double r = std::abs(x[i] - y[i]) / (atol + rtol * std::abs(y[i]));
    if (std::isnan(x[i]) != std::isnan(y[i])) r = INFINITY;
    if (r > worst) {
      worst = r;
      wi = i;
    }
  }
  INFO("worst element " << wi << ": " << (x.empty() ? 0 : x[wi]) << " vs " << (y.empty() ? 0 : y[wi]));
  CHECK(worst <= 1.0);
}

inline void check_values(const Tensor& a, const std::vector<double>& want, double tol = 1e-6) {
  std::vector<double> x = a.to_vector<double>();
  REQUIRE(x.size() == want.size());
  for (size_t i = 0; i < x.size(); ++i) {
    INFO("element " << i);
    CHECK(x[i] == doctest::Approx(want[i]).epsilon(tol));
  }
}

// Random f64 CPU leaf requiring grad.
inline Tensor rleaf(const Shape& s, uint64_t seed, double lo = -1, double hi = 1) {
  Generator g(seed);
  return uniform(s, lo, hi, g, {.dtype = DType::f64, .requires_grad = true});
}

inline void check_grad(const std::function<Tensor(const std::vector<Tensor>&)>& fn, const std::vector<Tensor>& inputs,
                       GradcheckOptions opt = {}) {
  GradcheckResult r = gradcheck(fn, inputs, opt);
  INFO(r.message);
  CHECK(r.ok);
}

}  // namespace colt5::testing
