// Test helpers: approximate comparison of tensors and gradcheck assertions.
#pragma once
#include <doctest/doctest.h>

#include <cmath>
#include <algorithm>
#include <functional>
#include <string>
#include <vector>

#include "colt5.h"

namespace colt5::testing {

// Relative L2 error ||got - want|| / ||want|| over all elements (the bound
// the GPU tests state their kernels' tolerances in).
inline double rel_norm_err(const Tensor& got, const Tensor& want) {
  const std::vector<double> a = got.to_vector<double>(), b = want.to_vector<double>();
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

// No NaN or infinity anywhere in t.
inline bool all_finite(const Tensor& t) {
  for (double v : t.to_vector<double>())
    if (!std::isfinite(v)) return false;
  return true;
}

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

// Gradient check of a whole module: central differences on at most `max_per_tensor` evenly spaced elements of
// every tensor, against the analytic gradient of <f(), w> for a random w.
inline void module_gradcheck(const Module& m, const std::vector<std::pair<std::string, Tensor>>& inputs,
                      const std::function<Tensor()>& f, int64_t max_per_tensor = 100000, double atol = 1e-6,
                      double rtol = 1e-4) {
  std::vector<std::pair<std::string, Tensor>> targets = m.named_parameters();
  for (const auto& in : inputs) targets.push_back(in);
  for (auto& [n, t] : targets) {
    REQUIRE(t.dtype() == DType::f64);
    REQUIRE(t.is_contiguous());
    REQUIRE(t.requires_grad());
    t.zero_grad();
  }
  Tensor out = f();
  REQUIRE(out.requires_grad());
  Generator g(4242);
  Tensor w = randn(out.shape(), g, {.dtype = DType::f64});
  out.backward(w);
  const std::vector<double> wv = w.to_vector<double>();
  auto project = [&]() {
    NoGradGuard ng;
    std::vector<double> y = f().to_vector<double>();
    double s = 0;
    for (size_t i = 0; i < y.size(); ++i) s += y[i] * wv[i];
    return s;
  };
  const double eps = 1e-6;
  std::string failure;
  double worst = 0;
  int checked = 0;
  for (auto& [name, t] : targets) {
    Tensor ga = t.grad();
    std::vector<double> an = ga.defined() ? ga.to_vector<double>() : std::vector<double>(t.numel(), 0.0);
    double* p = t.data<double>();
    const int64_t n = t.numel(), step = std::max<int64_t>(1, n / max_per_tensor);
    for (int64_t i = (n > max_per_tensor ? static_cast<int64_t>(std::hash<std::string>{}(name) % step) : 0); i < n; i += step) {
      const double orig = p[i];
      p[i] = orig + eps;
      const double fp = project();
      p[i] = orig - eps;
      const double fm = project();
      p[i] = orig;
      const double num = (fp - fm) / (2 * eps);
      const double err = std::abs(num - an[i]);
      worst = std::max(worst, err);
      ++checked;
      if (err > atol + rtol * std::abs(num) && failure.empty())
        failure = name + "[" + std::to_string(i) + "]: analytic " + std::to_string(an[i]) + ", numeric " +
                  std::to_string(num);
    }
  }
  INFO("elements checked " << checked << ", worst abs err " << worst << "; first failure: " << failure);
  CHECK(failure.empty());
}

}  // namespace colt5::testing
