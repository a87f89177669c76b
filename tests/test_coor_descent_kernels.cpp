// CPU coordinate-descent kernels (kernels/cpu/coor_descent.h) against an
// independent oracle: the SPEC §1 loop written out plainly in double below.
// Forward: the f64 kernel matches it to 1e-10 relative. Gradients: ds and dk
// of the f64 kernel match central finite differences of the oracle (per entry
// and along a random direction). f32 agrees with f64 to float rounding.
#include <doctest/doctest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "engine/error.h"
#include "engine/parallel.h"
#include "kernels/cpu/coor_descent.h"

using colt5::kernels::CoorDescentParams;
namespace cpu = colt5::kernels::cpu;

namespace {

// ---------------------------------------------------------------- the oracle
// SPEC §1, literally: masked scores -> -MAX, b_0 = -s, logsumexp with its max
// shift, e decayed after every iteration, out with the last e.
// Rows [r0, r1) (all rows by default); other rows of the result are 0.
std::vector<double> naive_forward(const CoorDescentParams& p, const std::vector<double>& s,
                                  const std::vector<uint8_t>& mask, const std::vector<double>& k, int64_t r0 = 0,
                                  int64_t r1 = -1) {
  const int64_t n = p.n;
  if (r1 < 0) r1 = p.rows;
  std::vector<double> out(size_t(p.rows * n));
  std::vector<double> sm(static_cast<size_t>(n)), b(static_cast<size_t>(n)), z(static_cast<size_t>(n));
  for (int64_t r = r0; r < r1; ++r) {
    auto keep = [&](int64_t i) { return mask.empty() || mask[size_t(r * n + i)] != 0; };
    for (int64_t i = 0; i < n; ++i) sm[size_t(i)] = keep(i) ? s[size_t(r * n + i)] : -DBL_MAX;
    for (int64_t i = 0; i < n; ++i) b[size_t(i)] = -sm[size_t(i)];
    double a = 0;
    double e = std::max(p.eps_init > 0 ? p.eps_init : p.eps, p.eps);
    const double logk = std::log(std::max(k[size_t(r)], 1e-20));
    for (int it = 0; it < p.n_iters; ++it) {
      double mx = -DBL_MAX;
      for (int64_t i = 0; i < n; ++i) {
        z[size_t(i)] = keep(i) ? (sm[size_t(i)] + b[size_t(i)]) / e : -DBL_MAX;
        mx = std::max(mx, z[size_t(i)]);
      }
      double sum = 0;
      for (int64_t i = 0; i < n; ++i) sum += std::exp(z[size_t(i)] - mx);
      const double lse = mx + std::log(sum);
      a = e * (logk - lse);
      for (int64_t i = 0; i < n; ++i) b[size_t(i)] = -std::max(sm[size_t(i)] + a, 0.0);
      e = std::max(e * p.eps_decay, p.eps);
    }
    for (int64_t i = 0; i < n; ++i)
      out[size_t(r * n + i)] = keep(i) ? std::exp((sm[size_t(i)] + a + b[size_t(i)]) / e) : 0.0;
  }
  return out;
}

double dot(const std::vector<double>& x, const std::vector<double>& y) {
  double r = 0;
  for (size_t i = 0; i < x.size(); ++i) r += x[i] * y[i];
  return r;
}

// ---------------------------------------------------------------- fixtures
struct Case {
  CoorDescentParams p;
  std::vector<double> s, k, g;  // scores, per-row k, upstream gradient
  std::vector<uint8_t> mask;    // empty: no mask
};

// Rows: 0 plain, 1 about a quarter masked, 2 fully masked (with a mask),
// 3 k >= the number of kept entries. Without a mask rows 2 and 3 are plain rows.
Case make_case(int64_t n, int n_iters, bool eps_scaling, bool with_mask, uint32_t seed) {
  Case c;
  c.p.rows = 4;
  c.p.n = n;
  c.p.n_iters = n_iters;
  if (eps_scaling) {
    c.p.eps = 0.03;
    c.p.eps_init = 4;
    c.p.eps_decay = 0.7;
  } else {
    c.p.eps = 0.1;
  }
  std::mt19937 rng(seed);
  std::normal_distribution<double> nd;
  std::uniform_real_distribution<double> ud(0, 1);
  c.s.resize(size_t(4 * n));
  c.g.resize(size_t(4 * n));
  for (auto& v : c.s) v = nd(rng);
  for (auto& v : c.g) v = nd(rng);
  if (with_mask) {
    c.mask.assign(size_t(4 * n), 1);
    for (int64_t i = 0; i < n; ++i) c.mask[size_t(1 * n + i)] = ud(rng) < 0.25 ? 0 : 1;
    for (int64_t i = 0; i < n; ++i) c.mask[size_t(2 * n + i)] = 0;
    for (int64_t i = 0; i < n; ++i) c.mask[size_t(3 * n + i)] = ud(rng) < 0.5 ? 0 : 1;
  }
  int64_t kept3 = 0;
  for (int64_t i = 0; i < n; ++i) kept3 += c.mask.empty() || c.mask[size_t(3 * n + i)];
  const double kb = std::max(0.5, 0.13 * double(n));
  c.k = {kb, 0.7 * kb + 0.25, kb, double(kept3) + 1.5};
  return c;
}

struct Result {
  std::vector<double> out, saved, ds, dk;
};

template <class T>
Result run_kernel(const Case& c) {
  const auto& p = c.p;
  const size_t N = size_t(p.rows * p.n);
  std::vector<T> s(c.s.begin(), c.s.end()), k(c.k.begin(), c.k.end()), g(c.g.begin(), c.g.end());
  std::vector<T> out(N, T(-7)), saved(size_t(colt5::kernels::coor_descent_saved_size(p)), T(-7));
  std::vector<T> ds(N, T(-7)), dk(size_t(p.rows), T(-7));
  const uint8_t* m = c.mask.empty() ? nullptr : c.mask.data();
  cpu::coor_descent_forward<T>(p, s.data(), m, k.data(), out.data(), saved.data());
  cpu::coor_descent_backward<T>(p, s.data(), m, k.data(), out.data(), saved.data(), g.data(), ds.data(), dk.data());
  Result r;
  r.out.assign(out.begin(), out.end());
  r.saved.assign(saved.begin(), saved.end());
  r.ds.assign(ds.begin(), ds.end());
  r.dk.assign(dk.begin(), dk.end());
  return r;
}

bool all_finite(const std::vector<double>& v) {
  return std::all_of(v.begin(), v.end(), [](double x) { return std::isfinite(x); });
}

// max_i |x_i - y_i| / max_i |y_i| over one row
double row_err(const std::vector<double>& x, const std::vector<double>& y, int64_t r, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = r * n; i < (r + 1) * n; ++i) {
    num = std::max(num, std::abs(x[size_t(i)] - y[size_t(i)]));
    den = std::max(den, std::abs(y[size_t(i)]));
  }
  return den > 0 ? num / den : num;
}

// Loss of the oracle for finite differences: sum g·out (over one row, or all).
double naive_loss(const Case& c, const std::vector<double>& s, const std::vector<double>& k, int64_t row = -1) {
  return row < 0 ? dot(naive_forward(c.p, s, c.mask, k), c.g)
                 : dot(naive_forward(c.p, s, c.mask, k, row, row + 1), c.g);
}

void check_case(int64_t n, int n_iters, bool eps_scaling, bool with_mask) {
  CAPTURE(n);
  CAPTURE(n_iters);
  CAPTURE(eps_scaling);
  CAPTURE(with_mask);
  const Case c = make_case(n, n_iters, eps_scaling, with_mask, uint32_t(1000 * n + 10 * n_iters + 2 * eps_scaling + with_mask));
  const Result r = run_kernel<double>(c);
  REQUIRE(all_finite(r.out));
  REQUIRE(all_finite(r.saved));
  REQUIRE(all_finite(r.ds));
  REQUIRE(all_finite(r.dk));

  // forward: f64 kernel vs the oracle, 1e-10 relative per entry
  const std::vector<double> ref = naive_forward(c.p, c.s, c.mask, c.k);
  double worst = 0;
  bool in_range = true;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double err = std::abs(r.out[i] - ref[i]) / (std::abs(ref[i]) + 1e-290);
    if (std::abs(r.out[i] - ref[i]) > 1e-290) worst = std::max(worst, err);
    in_range = in_range && r.out[i] >= 0.0 && r.out[i] <= 1.0;
  }
  CHECK(worst <= 1e-10);
  CHECK(in_range);

  // masked entries and fully masked rows: zeros
  if (with_mask) {
    bool zeros = true;
    for (size_t i = 0; i < ref.size(); ++i)
      if (!c.mask[i]) zeros = zeros && r.out[i] == 0.0 && r.ds[i] == 0.0;
    CHECK(zeros);
    CHECK(r.dk[2] == 0.0);
  }

  // gradient w.r.t. s, per entry: central differences of the oracle
  const double h = 1e-6;
  const int64_t stride = n <= 16 ? 1 : n / 9;
  for (int64_t row = 0; row < c.p.rows; ++row) {
    const double scale = [&] {
      double m = 0;
      for (int64_t i = 0; i < n; ++i) m = std::max(m, std::abs(r.ds[size_t(row * n + i)]));
      return m;
    }();
    for (int64_t i = (row * 7) % std::max<int64_t>(stride, 1); i < n; i += stride) {
      const size_t j = size_t(row * n + i);
      std::vector<double> sp = c.s, sm = c.s;
      sp[j] += h;
      sm[j] -= h;
      const double fd = (naive_loss(c, sp, c.k, row) - naive_loss(c, sm, c.k, row)) / (2 * h);
      CAPTURE(row);
      CAPTURE(i);
      CHECK(std::abs(fd - r.ds[j]) <= 1e-6 * std::max(1.0, scale) + 1e-5 * std::abs(fd));
    }
    // gradient w.r.t. k
    std::vector<double> kp = c.k, km = c.k;
    const double hk = 1e-6 * c.k[size_t(row)];
    kp[size_t(row)] += hk;
    km[size_t(row)] -= hk;
    const double fdk = (naive_loss(c, c.s, kp, row) - naive_loss(c, c.s, km, row)) / (2 * hk);
    CAPTURE(row);
    CHECK(std::abs(fdk - r.dk[size_t(row)]) <= 1e-5 * std::max(1.0, std::abs(fdk)));
  }

  // all entries at once: derivative along a random direction v
  {
    std::mt19937 rng(7);
    std::normal_distribution<double> nd;
    std::vector<double> v(c.s.size());
    for (auto& x : v) x = nd(rng);
    const double hv = 1e-7;
    std::vector<double> sp = c.s, sm = c.s;
    for (size_t i = 0; i < v.size(); ++i) {
      sp[i] += hv * v[i];
      sm[i] -= hv * v[i];
    }
    const double fd = (naive_loss(c, sp, c.k) - naive_loss(c, sm, c.k)) / (2 * hv);
    const double an = dot(r.ds, v);
    double nrm = 0;
    for (size_t i = 0; i < v.size(); ++i) nrm += std::abs(r.ds[i] * v[i]);
    CHECK(std::abs(fd - an) <= 1e-6 * std::max(1.0, nrm));
  }
}

}  // namespace

TEST_CASE("coor_descent kernels cpu: f64 forward and gradients match the SPEC loop and finite differences") {
  for (int64_t n : {1, 7, 1000, 8193})
    for (int n_iters : {1, 2, 20, 50})
      for (bool eps_scaling : {false, true})
        for (bool with_mask : {false, true}) check_case(n, n_iters, eps_scaling, with_mask);
}

TEST_CASE("coor_descent kernels cpu: long rows split over threads match the oracle and do not depend on threads") {
  const int64_t n = colt5::kernels::cpu::kCoorDescentSplit + 4097;
  Case c = make_case(n, 20, true, true, 99);
  c.p.rows = 2;
  c.s.resize(size_t(2 * n));
  c.g.resize(size_t(2 * n));
  c.mask.resize(size_t(2 * n));
  c.k.resize(2);
  const std::vector<double> ref = naive_forward(c.p, c.s, c.mask, c.k);
  const int saved_threads = colt5::get_num_threads();
  colt5::set_num_threads(2);
  const Result r2 = run_kernel<double>(c);
  const Result f2 = run_kernel<float>(c);
  colt5::set_num_threads(1);
  const Result r1 = run_kernel<double>(c);
  const Result f1 = run_kernel<float>(c);
  colt5::set_num_threads(saved_threads);
  for (int64_t row = 0; row < 2; ++row) CHECK(row_err(r2.out, ref, row, n) <= 1e-10);
  CHECK(r1.out == r2.out);
  CHECK(r1.ds == r2.ds);
  CHECK(r1.dk == r2.dk);
  CHECK(f1.out == f2.out);
  CHECK(f1.ds == f2.ds);
  // gradient along a random direction against the oracle
  std::mt19937 rng(3);
  std::normal_distribution<double> nd;
  std::vector<double> v(c.s.size());
  for (auto& x : v) x = nd(rng);
  const double hv = 1e-7;
  std::vector<double> sp = c.s, sm = c.s;
  for (size_t i = 0; i < v.size(); ++i) {
    sp[i] += hv * v[i];
    sm[i] -= hv * v[i];
  }
  const double fd = (naive_loss(c, sp, c.k) - naive_loss(c, sm, c.k)) / (2 * hv);
  double nrm = 0;
  for (size_t i = 0; i < v.size(); ++i) nrm += std::abs(r2.ds[i] * v[i]);
  CHECK(std::abs(fd - dot(r2.ds, v)) <= 1e-6 * std::max(1.0, nrm));
}

TEST_CASE("coor_descent kernels cpu: row sums are close to k when more than k entries are kept") {
  // Converged settings: the paper's (eps = 1, 50 iterations) and eps = 0.1 with
  // 50 iterations. k well below the kept count (rows 0, 1, 3; row 2 is fully masked).
  for (int setting = 0; setting < 2; ++setting) {
    Case c = make_case(8193, 50, false, true, 5);
    c.p.eps = setting == 0 ? 1.0 : 0.1;
    c.k = {1024.0, 700.5, 64.0, 128.0};
    const Result r = run_kernel<double>(c);
    for (int64_t row : {0, 1, 3}) {
      double sum = 0;
      for (int64_t i = 0; i < c.p.n; ++i) sum += r.out[size_t(row * c.p.n + i)];
      CAPTURE(setting);
      CAPTURE(row);
      CAPTURE(sum);
      CHECK(std::abs(sum - c.k[size_t(row)]) <= 1e-3 * c.k[size_t(row)]);
    }
  }
  // Router defaults (eps 4 -> 0.03 by 0.7, 20 iterations) are not converged on
  // Gaussian scores: the SPEC loop itself (the oracle, matched above to 1e-10)
  // gives row sums of about 0.77 k here. Pin that behaviour loosely.
  {
    Case c = make_case(8193, 20, true, true, 5);
    c.k = {1024.0, 700.5, 64.0, 128.0};
    const Result r = run_kernel<double>(c);
    for (int64_t row : {0, 1, 3}) {
      double sum = 0;
      for (int64_t i = 0; i < c.p.n; ++i) sum += r.out[size_t(row * c.p.n + i)];
      CAPTURE(row);
      CAPTURE(sum);
      CHECK(sum >= 0.6 * c.k[size_t(row)]);
      CHECK(sum <= 1.02 * c.k[size_t(row)]);
    }
  }
}

// The scale of the terms that make up the gradient of one row: sum_i |g_i| out_i / e_{T+1}.
// ds and dk are differences of such terms (often with heavy cancellation), so
// float rounding is measured against this scale, not against |ds|.
double grad_scale(const Case& c, const Result& r, int64_t row) {
  double e = std::max(c.p.eps_init > 0 ? c.p.eps_init : c.p.eps, c.p.eps);
  for (int t = 0; t < c.p.n_iters; ++t) e = std::max(e * c.p.eps_decay, c.p.eps);
  double s = 0;
  for (int64_t i = row * c.p.n; i < (row + 1) * c.p.n; ++i) s += std::abs(c.g[size_t(i)]) * r.out[size_t(i)] / e;
  return s;
}

TEST_CASE("coor_descent kernels cpu: f32 agrees with f64") {
  // Tolerances: out absolute (entries are in [0, 1]) 2e-5, or 1e-4 with eps = 0.03
  // (exp(x / 0.03) turns float rounding of x into ~3e-6·|x| relative error);
  // ds and dk 5e-6 of the row's gradient scale (grad_scale above).
  for (int64_t n : {7, 1000, 8193})
    for (int n_iters : {2, 20, 50})
      for (bool eps_scaling : {false, true}) {
        CAPTURE(n);
        CAPTURE(n_iters);
        CAPTURE(eps_scaling);
        Case c = make_case(n, n_iters, eps_scaling, true, uint32_t(n + n_iters));
        for (auto& x : c.s) x = double(float(x));  // identical inputs for both precisions
        for (auto& x : c.g) x = double(float(x));
        for (auto& x : c.k) x = double(float(x));
        const Result d = run_kernel<double>(c), f = run_kernel<float>(c);
        REQUIRE(all_finite(f.out));
        REQUIRE(all_finite(f.ds));
        const int64_t W = colt5::kernels::coor_descent_saved_per_row(c.p);
        for (int64_t row = 0; row < c.p.rows; ++row) {
          CAPTURE(row);
          double eo = 0, eds = 0;
          for (int64_t i = row * n; i < (row + 1) * n; ++i) {
            eo = std::max(eo, std::abs(f.out[size_t(i)] - d.out[size_t(i)]));
            eds = std::max(eds, std::abs(f.ds[size_t(i)] - d.ds[size_t(i)]));
          }
          const double gs = grad_scale(c, d, row);
          const double Q = d.saved[size_t(row * W + 3 * n_iters + 1)];
          CHECK(eo <= (eps_scaling ? 1e-4 : 2e-5));
          CHECK(eds <= 5e-6 * gs);
          CHECK(std::abs(f.dk[size_t(row)] - d.dk[size_t(row)]) <= 5e-6 * gs * Q / c.k[size_t(row)] + 1e-30);
        }
      }
}

TEST_CASE("coor_descent kernels cpu: no mask equals an all-ones mask; scalar k equals per-row k") {
  Case c = make_case(1000, 20, true, false, 11);
  c.k = {100.0, 100.0, 100.0, 100.0};
  const Result plain = run_kernel<double>(c);
  Case cm = c;
  cm.mask.assign(c.s.size(), 1);
  const Result ones = run_kernel<double>(cm);
  CHECK(plain.out == ones.out);
  CHECK(plain.ds == ones.ds);
  CHECK(plain.dk == ones.dk);

  CoorDescentParams p = c.p;
  p.k_scalar = 100.0;
  std::vector<double> out(c.s.size()), saved(size_t(colt5::kernels::coor_descent_saved_size(p)));
  std::vector<double> ds(c.s.size()), dk(4);
  cpu::coor_descent_forward<double>(p, c.s.data(), nullptr, nullptr, out.data(), saved.data());
  cpu::coor_descent_backward<double>(p, c.s.data(), nullptr, nullptr, out.data(), saved.data(), c.g.data(), ds.data(),
                                     dk.data());
  CHECK(out == plain.out);
  CHECK(ds == plain.ds);
  CHECK(dk == plain.dk);
}

TEST_CASE("coor_descent kernels cpu: parameters are checked") {
  CoorDescentParams p;
  p.rows = 1;
  p.n = 4;
  std::vector<float> s(4, 0.f), out(4), saved(size_t(colt5::kernels::coor_descent_saved_size(p)));
  float k = 2;
  p.n_iters = 0;
  CHECK_THROWS_AS(cpu::coor_descent_forward<float>(p, s.data(), nullptr, &k, out.data(), saved.data()), colt5::Error);
  p.n_iters = 5;
  p.eps = 0;
  CHECK_THROWS_AS(cpu::coor_descent_forward<float>(p, s.data(), nullptr, &k, out.data(), saved.data()), colt5::Error);
  p.eps = 0.1;
  p.eps_decay = 1.5;
  CHECK_THROWS_AS(cpu::coor_descent_forward<float>(p, s.data(), nullptr, &k, out.data(), saved.data()), colt5::Error);
  p.eps_decay = 1.0;
  CHECK_NOTHROW(cpu::coor_descent_forward<float>(p, s.data(), nullptr, &k, out.data(), saved.data()));
  // all scores equal, k = 2 of 4: every entry 1/2
  for (float v : out) CHECK(v == doctest::Approx(0.5).epsilon(1e-5));
}
