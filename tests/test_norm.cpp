#include <cmath>
#include <limits>

#include "helpers.h"
#include "kernels/cpu/norm.h"

using namespace colt5;
using namespace colt5::testing;

namespace {

Tensor f64(const std::vector<double>& v, const Shape& s = {}, bool rg = false) {
  return from_vector(v, s, {.dtype = DType::f64, .requires_grad = rg});
}

// Runs fn on fresh leaf copies of `inputs`, backpropagates g; returns the
// output followed by the gradient of every input that requires grad.
std::vector<Tensor> fwd_bwd(const std::function<Tensor(const std::vector<Tensor>&)>& fn,
                            const std::vector<Tensor>& inputs, const Tensor& g) {
  std::vector<Tensor> xs;
  for (const Tensor& t : inputs)
    xs.push_back(t.defined() ? t.detach().clone().requires_grad_(t.requires_grad()) : Tensor());
  Tensor y = fn(xs);
  y.backward(g);
  std::vector<Tensor> r{y.detach()};
  for (const Tensor& x : xs)
    if (x.defined() && x.requires_grad()) r.push_back(x.grad());
  return r;
}

// The oracles: the same ops composed from primitives (SPEC §3).
Tensor layer_norm_ref(const Tensor& x, const Tensor& w, const Tensor& b, double eps) {
  Tensor xc = x - mean(x, -1, true);
  Tensor y = xc * rsqrt(mean(xc * xc, -1, true) + eps);
  if (w.defined()) y = y * w;
  if (b.defined()) y = y + b;
  return y;
}
Tensor l2norm_ref(const Tensor& x, int dim, double eps = 1e-12) {
  return x / clamp_min(sqrt(sum(x * x, dim, true)), eps);
}
Tensor rms_norm_ref(const Tensor& x, const Tensor& gamma, double eps = 1e-12) {
  Tensor y = l2norm_ref(x, -1, eps) * std::sqrt(static_cast<double>(x.size(-1)));
  return gamma.defined() ? y * gamma : y;
}


}  // namespace

TEST_CASE("layer_norm: values by hand") {
  for (DType dt : {DType::f32, DType::f64}) {
    // [1, 2, 3]: mean 2, biased variance 2/3.
    const double r = 1 / std::sqrt(2.0 / 3 + 1e-5);
    Tensor x = from_vector({1, 2, 3, 10, 10, 10}, {2, 3}, {.dtype = dt});
    check_values(layer_norm(x), {-r, 0, r, 0, 0, 0});
    Tensor w = from_vector({1, 2, 3}, {}, {.dtype = dt}), b = from_vector({0.5, 0, -0.5}, {}, {.dtype = dt});
    check_values(layer_norm(x, w, b), {-r + 0.5, 0, 3 * r - 0.5, 0.5, 0, -0.5});
    check_values(layer_norm(x, w), {-r, 0, 3 * r, 0, 0, 0});
    check_values(layer_norm(x, {}, b), {-r + 0.5, 0, r - 0.5, 0.5, 0, -0.5});
    const double r1 = 1 / std::sqrt(2.0 / 3 + 0.1);
    check_values(layer_norm(x, {}, {}, 0.1), {-r1, 0, r1, 0, 0, 0});
    CHECK(layer_norm(x).dtype() == dt);
  }
  // The kernel saves mean and rstd for the backward.
  std::vector<double> x = {1, 2, 3}, y(3), mean(1), rstd(1);
  kernels::cpu::layer_norm_forward(y.data(), mean.data(), rstd.data(), x.data(), nullptr, nullptr, 1, 3, 1e-5);
  CHECK(mean[0] == doctest::Approx(2.0));
  CHECK(rstd[0] == doctest::Approx(1 / std::sqrt(2.0 / 3 + 1e-5)));
}

TEST_CASE("rms_norm and l2norm: values by hand (SPEC §3)") {
  for (DType dt : {DType::f32, DType::f64}) {
    Tensor x = from_vector({3, 4, 0, 0}, {2, 2}, {.dtype = dt});
    const double s2 = std::sqrt(2.0);
    // x / max(||x||, 1e-12) * sqrt(2) * gamma; a zero row stays zero.
    check_values(rms_norm(x, from_vector({1, 2}, {}, {.dtype = dt})), {0.6 * s2, 1.6 * s2, 0, 0});
    check_values(rms_norm(x), {0.6 * s2, 0.8 * s2, 0, 0});
    check_values(l2norm(x), {0.6, 0.8, 0, 0});
    check_values(l2norm(x, 1), {0.6, 0.8, 0, 0});
    // Along dim 0: columns [3, 0] and [4, 0].
    check_values(l2norm(x, 0), {1, 1, 0, 0});
    check_values(l2norm(from_vector({3, 1, 4, 0}, {2, 2}, {.dtype = dt}), 0), {0.6, 1, 0.8, 0});
    // The clamp: a norm below eps divides by eps.
    check_values(l2norm(from_vector({0.3, 0.4}, {}, {.dtype = dt}), -1, 2.0), {0.15, 0.2});
    check_values(rms_norm(from_vector({0.3, 0.4}, {}, {.dtype = dt}), {}, 2.0), {0.15 * s2, 0.2 * s2});
  }
  // The kernel saves the norm.
  std::vector<double> x = {3, 4}, y(2), norm(1);
  kernels::cpu::rms_norm_forward(y.data(), norm.data(), x.data(), nullptr, 1, 2, 1e-12);
  CHECK(norm[0] == doctest::Approx(5.0));
}

TEST_CASE("layer_norm: f64 gradcheck w.r.t. x, weight and bias, contiguous and strided") {
  Tensor x = rleaf({4, 6}, 31, -2, 2), w = rleaf({6}, 32, 0.5, 1.5), b = rleaf({6}, 33);
  using V = std::vector<Tensor>;
  check_grad([](const V& in) { return layer_norm(in[0], in[1], in[2]); }, {x, w, b});
  check_grad([](const V& in) { return layer_norm(in[0]); }, {x});
  check_grad([](const V& in) { return layer_norm(in[0], in[1]); }, {x, w});
  check_grad([](const V& in) { return layer_norm(in[0], {}, in[1]); }, {x, b});
  check_grad([](const V& in) { return layer_norm(in[0], in[1], in[2], 0.3); }, {x, w, b});
  // Transposed input (6, 4) -> (4, 6), and a slice; a 3-D input.
  check_grad([](const V& in) { return layer_norm(in[0].t(), in[1], in[2]); }, {rleaf({6, 4}, 34), w, b});
  check_grad([](const V& in) { return layer_norm(in[0].slice(1, 0, 12, 2), in[1], in[2]); }, {rleaf({3, 12}, 35), w, b});
  check_grad([](const V& in) { return layer_norm(in[0], in[1], in[2]); }, {rleaf({2, 3, 6}, 36), w, b});
  // Only the parameters require grad.
  check_grad([](const V& in) { return layer_norm(in[0], in[1], in[2]); }, {x.detach(), w, b});
}

TEST_CASE("rms_norm and l2norm: f64 gradcheck w.r.t. x and gamma, contiguous and strided") {
  using V = std::vector<Tensor>;
  Tensor x = rleaf({4, 6}, 41, -2, 2), gamma = rleaf({6}, 42, 0.5, 1.5);
  check_grad([](const V& in) { return rms_norm(in[0], in[1]); }, {x, gamma});
  check_grad([](const V& in) { return rms_norm(in[0]); }, {x});
  check_grad([](const V& in) { return rms_norm(in[0].t(), in[1]); }, {rleaf({6, 4}, 43), gamma});
  check_grad([](const V& in) { return rms_norm(in[0], in[1]); }, {rleaf({2, 3, 6}, 44), gamma});
  check_grad([](const V& in) { return rms_norm(in[0], in[1]); }, {x.detach(), gamma});
  // With the clamp active on some rows: eps = 1 and rows of norm below and above it.
  Tensor mixed = f64({0.1, -0.2, 0.3, 0.05, 0.2, -0.1, 1.5, -0.7, 0.9, 1.1, -1.3, 0.4}, {2, 6}, true);
  check_grad([](const V& in) { return rms_norm(in[0], in[1], 1.0); }, {mixed, gamma});
  check_grad([](const V& in) { return l2norm(in[0], -1, 1.0); }, {mixed});
  check_grad([](const V& in) { return l2norm(in[0], 0, 1.0); }, {mixed});
  Tensor x3 = rleaf({3, 4, 5}, 45, -2, 2);
  for (int d : {0, 1, 2, -1}) {
    INFO("dim " << d);
    check_grad([d](const V& in) { return l2norm(in[0], d); }, {x3});
    check_grad([d](const V& in) { return l2norm(in[0].transpose(0, 2), d); }, {x3});
    check_grad([d](const V& in) { return l2norm(in[0].slice(2, 0, 5, 2), d); }, {x3});
  }
}

TEST_CASE("norms: agree with the composition of primitive ops, forward and backward") {
  Generator gen(51);
  for (DType dt : {DType::f64, DType::f32}) {
    INFO("dtype " << dtype_name(dt));
    const double rtol = dt == DType::f64 ? 1e-11 : 1e-4, atol = dt == DType::f64 ? 1e-12 : 1e-5;
    Tensor x = (randn({5, 3, 40}, gen, {.dtype = dt}) * 2.0 + 0.5).detach().requires_grad_();
    Tensor w = (randn({40}, gen, {.dtype = dt}) * 0.3 + 1.0).detach().requires_grad_();
    Tensor b = randn({40}, gen, {.dtype = dt}).requires_grad_();
    Tensor g = randn({5, 3, 40}, gen, {.dtype = dt});
    auto a = fwd_bwd([](const std::vector<Tensor>& in) { return layer_norm(in[0], in[1], in[2]); }, {x, w, b}, g);
    auto r = fwd_bwd([](const std::vector<Tensor>& in) { return layer_norm_ref(in[0], in[1], in[2], 1e-5); }, {x, w, b},
                     g);
    for (size_t i = 0; i < a.size(); ++i) check_close(a[i], r[i], rtol, atol);
    a = fwd_bwd([](const std::vector<Tensor>& in) { return rms_norm(in[0], in[1]); }, {x, w}, g);
    r = fwd_bwd([](const std::vector<Tensor>& in) { return rms_norm_ref(in[0], in[1]); }, {x, w}, g);
    for (size_t i = 0; i < a.size(); ++i) check_close(a[i], r[i], rtol, atol);
    for (int d : {0, 1, 2}) {
      INFO("l2norm dim " << d);
      a = fwd_bwd([d](const std::vector<Tensor>& in) { return l2norm(in[0], d); }, {x}, g);
      r = fwd_bwd([d](const std::vector<Tensor>& in) { return l2norm_ref(in[0], d); }, {x}, g);
      for (size_t i = 0; i < a.size(); ++i) check_close(a[i], r[i], rtol, atol);
    }
  }
}

TEST_CASE("norms: many rows, parameter gradients deterministic across thread counts") {
  const int saved = get_num_threads();
  Generator gen(61);
  Tensor x = randn({3000, 48}, gen, {.dtype = DType::f32}) * 2.0;
  Tensor w = randn({48}, gen, {.dtype = DType::f32}) + 1.0;
  Tensor b = randn({48}, gen, {.dtype = DType::f32});
  Tensor g = randn({3000, 48}, gen, {.dtype = DType::f32});
  std::vector<std::vector<float>> runs;
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    auto ln = fwd_bwd([](const std::vector<Tensor>& in) { return layer_norm(in[0], in[1], in[2]); },
                      {x.detach().requires_grad_(), w.detach().requires_grad_(), b.detach().requires_grad_()}, g);
    auto rn = fwd_bwd([](const std::vector<Tensor>& in) { return rms_norm(in[0], in[1]); },
                      {x.detach().requires_grad_(), w.detach().requires_grad_()}, g);
    auto l2 = fwd_bwd([](const std::vector<Tensor>& in) { return l2norm(in[0], 0); }, {x.detach().requires_grad_()}, g);
    std::vector<float> all;
    for (const auto* set : {&ln, &rn, &l2})
      for (const Tensor& t : *set)
        for (float v : t.to_vector<float>()) all.push_back(v);
    runs.push_back(all);
    if (threads == 2) {  // f32 fused against the f64 oracle
      auto ref = fwd_bwd([](const std::vector<Tensor>& in) { return layer_norm_ref(in[0], in[1], in[2], 1e-5); },
                         {x.to(DType::f64).requires_grad_(), w.to(DType::f64).requires_grad_(),
                          b.to(DType::f64).requires_grad_()},
                         g.to(DType::f64));
      for (size_t i = 0; i < ln.size(); ++i) check_close(ln[i], ref[i], 1e-4, 1e-4);
      auto rref = fwd_bwd([](const std::vector<Tensor>& in) { return rms_norm_ref(in[0], in[1]); },
                          {x.to(DType::f64).requires_grad_(), w.to(DType::f64).requires_grad_()}, g.to(DType::f64));
      for (size_t i = 0; i < rn.size(); ++i) check_close(rn[i], rref[i], 1e-4, 1e-4);
    }
  }
  set_num_threads(saved);
  CHECK(runs[0] == runs[1]);
}

TEST_CASE("norms: zero rows give zeros, never NaN") {
  Tensor x = zeros({2, 4}, {.dtype = DType::f64, .requires_grad = true});
  Tensor gamma = ones({4}, {.dtype = DType::f64, .requires_grad = true});
  Tensor y = rms_norm(x, gamma);
  check_values(y, std::vector<double>(8, 0.0));
  sum(y * 2.0).backward();
  CHECK(all_finite(x.grad()));
  CHECK(all_finite(gamma.grad()));
  check_values(gamma.grad(), {0, 0, 0, 0});
  Tensor x2 = zeros({2, 4}, {.dtype = DType::f64, .requires_grad = true});
  Tensor z = l2norm(x2, 0);
  check_values(z, std::vector<double>(8, 0.0));
  sum(z).backward();
  CHECK(all_finite(x2.grad()));
  // A constant row in layer_norm: variance 0, output = bias.
  Tensor c = full({1, 3}, 7.0, {.dtype = DType::f64, .requires_grad = true});
  Tensor yl = layer_norm(c, {}, f64({1, 2, 3}));
  check_values(yl, {1, 2, 3});
  sum(yl).backward();
  CHECK(all_finite(c.grad()));
}

TEST_CASE("norms: bad input throws naming the op and the shapes") {
  Tensor x = zeros({2, 3});
  CHECK_THROWS_WITH_AS(layer_norm(x, ones({4})), doctest::Contains("layer_norm: weight of shape [4]"), Error);
  CHECK_THROWS_WITH_AS(layer_norm(x, ones({4})), doctest::Contains("[2, 3]"), Error);
  CHECK_THROWS_WITH_AS(layer_norm(x, {}, ones({3, 1})), doctest::Contains("layer_norm: bias of shape [3, 1]"), Error);
  CHECK_THROWS_WITH_AS(layer_norm(x, ones({3}, {.dtype = DType::f64})), doctest::Contains("layer_norm: weight is f64"),
                       Error);
  CHECK_THROWS_WITH_AS(layer_norm(arange(3)), doctest::Contains("layer_norm: expected an f32 or f64 input, got i64"),
                       Error);
  CHECK_THROWS_WITH_AS(layer_norm(full({}, 1.0)), doctest::Contains("layer_norm: expected an input with at least one dim"),
                       Error);
  CHECK_THROWS_WITH_AS(rms_norm(x, ones({2})), doctest::Contains("rms_norm: gamma of shape [2]"), Error);
  CHECK_THROWS_WITH_AS(rms_norm(x, {}, 0.0), doctest::Contains("rms_norm: eps"), Error);
  CHECK_THROWS_WITH_AS(l2norm(x, 2), doctest::Contains("l2norm: dim 2 out of range"), Error);
  CHECK_THROWS_WITH_AS(l2norm(from_vector_bool({true})), doctest::Contains("l2norm"), Error);
}
