// The coor_descent op: the fused kernels against the reference written with
// primitive ops (forward, gradient w.r.t. s and k), f64 gradchecks, and the
// invariants of SPEC §1.
#include <cfloat>

#include "helpers.h"

using namespace colt5;
using namespace colt5::testing;

namespace {

struct Case {
  int64_t rows, n;
  int n_iters;
  bool eps_scaling;
  bool masked;
  bool per_row_k;
};

void compare_with_reference(const Case& c, DType dt, double tol) {
  Generator g(c.rows * 1000 + c.n + c.n_iters);
  Tensor s = randn({c.rows, c.n}, g, {.dtype = dt});
  Tensor mask;
  if (c.masked) {
    mask = gt(rand({c.rows, c.n}, g), 0.25);
    if (c.rows > 1) mask.select(0, 0).fill_(0.0);  // a fully masked row
    if (c.rows > 2) {                              // a row with fewer kept entries than k
      mask.select(0, 1).fill_(0.0);
      mask.select(0, 1).narrow(0, 0, std::min<int64_t>(2, c.n)).fill_(1.0);
    }
  }
  Tensor k = c.per_row_k ? uniform({c.rows}, 0.5, std::max(1.0, c.n / 3.0), g, {.dtype = dt})
                         : scalar_tensor(std::max(1.0, c.n / 4.0), {.dtype = dt});
  CoorDescentOptions o{.n_iters = c.n_iters, .eps = c.eps_scaling ? 0.03 : 0.5,
                       .eps_init = c.eps_scaling ? 4.0 : 0.0, .eps_decay = c.eps_scaling ? 0.7 : 1.0};
  Tensor s1 = s.detach().requires_grad_(), k1 = k.detach().requires_grad_();
  Tensor s2 = s.detach().requires_grad_(), k2 = k.detach().requires_grad_();
  Tensor fused = coor_descent(s1, k1, mask, o);
  Tensor ref = coor_descent_reference(s2, k2, mask, o);
  Tensor w = randn({c.rows, c.n}, g, {.dtype = dt});
  sum(fused * w).backward();
  sum(ref * w).backward();
  INFO("rows " << c.rows << " n " << c.n << " iters " << c.n_iters << " scaling " << c.eps_scaling << " masked "
               << c.masked << " per-row k " << c.per_row_k << " dtype " << dtype_name(dt));
  // Scale-aware tolerances: values in [0, 1]; gradients compared relative to their largest entry.
  double gs = std::max(1.0, max(abs(s2.grad())).item<double>());
  double gk = std::max(1.0, max(abs(k2.grad())).item<double>());
  check_close(fused, ref, tol, tol);
  check_close(s1.grad(), s2.grad(), tol, tol * gs);
  check_close(k1.grad(), k2.grad(), tol, tol * gk);
  std::vector<double> f = fused.to_vector<double>(), sg = s1.grad().to_vector<double>();
  bool finite = true;
  for (double v : f) finite &= std::isfinite(v);
  for (double v : sg) finite &= std::isfinite(v);
  CHECK(finite);
}

}  // namespace

TEST_CASE("coor_descent: fused matches the primitive-op reference (f64 to 1e-10, f32 to 1e-5)") {
  for (int iters : {1, 2, 20, 50})
    for (bool scaling : {false, true})
      for (bool masked : {false, true}) {
        compare_with_reference({3, 7, iters, scaling, masked, false}, DType::f64, 1e-10);
        compare_with_reference({4, 33, iters, scaling, masked, true}, DType::f64, 1e-10);
      }
  for (int64_t n : {1, 7, 1000, 8193}) {
    compare_with_reference({3, n, 20, true, true, true}, DType::f64, 1e-10);
    compare_with_reference({3, n, 20, true, true, false}, DType::f32, 1e-5);
    compare_with_reference({2, n, 50, false, false, true}, DType::f32, 1e-5);
  }
}

TEST_CASE("coor_descent: f64 gradcheck of the fused op w.r.t. s and k") {
  using V = std::vector<Tensor>;
  Tensor s = rleaf({3, 9}, 31, -2, 2);
  Tensor k = rleaf({3}, 32, 1.0, 3.0);
  Tensor mask = from_vector_bool({1, 1, 0, 1, 1, 1, 1, 0, 1,  //
                                  1, 1, 1, 1, 1, 1, 1, 1, 1,  //
                                  0, 0, 0, 0, 0, 0, 0, 0, 0},
                                 {3, 9});
  for (auto o : {CoorDescentOptions{.n_iters = 5, .eps = 0.3},
                 CoorDescentOptions{.n_iters = 20, .eps = 0.1, .eps_init = 2, .eps_decay = 0.7}}) {
    check_grad([&](const V& v) { return coor_descent(v[0], v[1], mask, o); }, {s, k}, {.eps = 1e-6, .atol = 1e-6});
    check_grad([&](const V& v) { return coor_descent_reference(v[0], v[1], mask, o); }, {s, k},
               {.eps = 1e-6, .atol = 1e-6});
  }
}

TEST_CASE("coor_descent: rows sum to k, fully masked rows are zero, paper setting") {
  Generator g(3);
  Tensor s = randn({4, 512}, g, {.dtype = DType::f64});
  Tensor mask = ones({4, 512}, {.dtype = DType::b8});
  mask.select(0, 3).fill_(0.0);
  mask.select(0, 2).narrow(0, 0, 32).fill_(0.0);  // 1/16 masked
  Tensor out = coor_descent(s, 16.0, mask, {.n_iters = 50, .eps = 1.0});  // the CoLT5 paper's setting
  std::vector<double> rs = sum(out, -1).to_vector<double>();
  CHECK(rs[0] == doctest::Approx(16.0).epsilon(1e-3));
  CHECK(rs[1] == doctest::Approx(16.0).epsilon(1e-3));
  CHECK(rs[2] == doctest::Approx(16.0).epsilon(1e-3));
  CHECK(rs[3] == 0.0);
  CHECK(max(out).item<double>() <= 1.0);
  CHECK(min(out).item<double>() >= 0.0);
  // Router defaults, k > number of kept entries: outputs tend to 1.
  Tensor m2 = zeros({1, 64}, {.dtype = DType::b8});
  m2.narrow(1, 0, 4).fill_(1.0);
  Tensor o2 = coor_descent(randn({1, 64}, g, {.dtype = DType::f64}), 8.0, m2,
                           {.n_iters = 20, .eps = 0.03, .eps_init = 4, .eps_decay = 0.7});
  std::vector<double> v2 = o2.to_vector<double>();
  for (int i = 0; i < 4; ++i) CHECK(v2[i] > 0.99);
  for (int i = 4; i < 64; ++i) CHECK(v2[i] == 0.0);
}

TEST_CASE("coor_descent: worked by hand with one iteration") {
  // n_iters = 1, eps = 1, no mask: z = 0 for all entries, so
  // a = log k - log n, b = -relu(s + a), out = exp(s + a + b) = exp(min(s + a, 0)).
  Tensor s = from_vector({0.5, -1.0, 2.0, 0.0}, {}, {.dtype = DType::f64});
  double a = std::log(2.0) - std::log(4.0);
  Tensor out = coor_descent(s, 2.0, {}, {.n_iters = 1, .eps = 1.0});
  check_values(out, {std::exp(std::min(0.5 + a, 0.0)), std::exp(std::min(-1.0 + a, 0.0)),
                     std::exp(std::min(2.0 + a, 0.0)), std::exp(std::min(0.0 + a, 0.0))},
               1e-12);
}

TEST_CASE("coor_descent: bad input") {
  Tensor s = ones({2, 5});
  CHECK_THROWS_WITH_AS(coor_descent(s, 2.0, {}, {.n_iters = 0}), doctest::Contains("n_iters"), Error);
  CHECK_THROWS_WITH_AS(coor_descent(s, -1.0), doctest::Contains("k must be positive"), Error);
  CHECK_THROWS_WITH_AS(coor_descent(s, ones({3})), doctest::Contains("coor_descent"), Error);
  CHECK_THROWS_WITH_AS(coor_descent(s, 2.0, ones({2, 5})), doctest::Contains("mask must be bool"), Error);
  CHECK_THROWS_WITH_AS(coor_descent(arange(4), 2.0), doctest::Contains("floating"), Error);
}

TEST_CASE("topk: hard top-k sorted with ties to the lower index, gradient to the picks") {
  Tensor x = from_vector({1, 3, 3, 0, 2, 3}, {1, 6}, {.dtype = DType::f64, .requires_grad = true});
  TopK t = hard_topk(x, 4);
  check_values(t.values, {3, 3, 3, 2});
  CHECK(t.indices.to_vector<int64_t>() == std::vector<int64_t>{1, 2, 5, 4});
  sum(t.values * from_vector({1, 2, 3, 4}, {}, {.dtype = DType::f64})).backward();
  check_values(x.grad(), {0, 1, 2, 0, 4, 3});
  CHECK_THROWS_WITH_AS(hard_topk(x, 7), doctest::Contains("hard_topk: k = 7"), Error);
}

TEST_CASE("topk: differentiable top-k (SPEC §1)") {
  Generator g(9);
  Tensor x = randn({2, 40}, g, {.dtype = DType::f64, .requires_grad = true});
  DiffTopK r = topk(x, 5);
  CHECK(r.values.shape() == Shape{2, 5});
  // gates are exactly 1 in value, so values equal the hard top-k of x.
  TopK h = hard_topk(x.detach(), 5);
  check_close(r.values, h.values, 1e-12, 1e-12);
  CHECK(r.indices.to_vector<int64_t>() == h.indices.to_vector<int64_t>());
  check_close(r.gates, ones({2, 5}, {.dtype = DType::f64}), 1e-12, 1e-12);
  // The gradient carries the coordinate-descent term: d values / dx != the plain top-k gradient.
  sum(r.values).backward();
  double extra = sum(abs(x.grad())).item<double>() - 10.0;
  CHECK(std::abs(extra) > 1e-6);
  // The straight-through gradient is by design not the derivative of the value
  // (gates are 1 in value), so check it against the same composition built
  // from the primitive-op reference: d values / dx = d/dx [x * (c + stop(1 - c))] at the picks.
  Tensor xs = randn({2, 12}, g, {.dtype = DType::f64, .requires_grad = true});
  Tensor xr = xs.detach().clone().requires_grad_();
  TopkOptions to{.n_iters = 10, .eps = 0.5};
  DiffTopK f = topk(xs, 3, to);
  Tensor w = randn({2, 3}, g, {.dtype = DType::f64});
  sum(f.values * w).backward();
  Tensor c = coor_descent_reference(xr, scalar_tensor(3 * 9.0 / 8.0, {.dtype = DType::f64}), {}, {.n_iters = 10, .eps = 0.5});
  Tensor yr = gather(xr * (c + (1.0 - c).detach()), -1, f.indices);
  sum(yr * w).backward();
  check_close(xs.grad(), xr.grad(), 1e-9, 1e-12);
  DiffTopK nd = topk(x.detach(), 5, {.non_differentiable = true});
  CHECK(!nd.gates.defined());
  CHECK(nd.indices.to_vector<int64_t>() == h.indices.to_vector<int64_t>());
}
