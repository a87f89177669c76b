#include <cmath>
#include <limits>

#include "helpers.h"
#include "kernels/cpu/softmax.h"

using namespace colt5;
using namespace colt5::testing;

namespace {

const double kInf = std::numeric_limits<double>::infinity();

Tensor f64(const std::vector<double>& v, const Shape& s = {}, bool rg = false) {
  return from_vector(v, s, {.dtype = DType::f64, .requires_grad = rg});
}

// Runs fn on fresh leaf copies of `inputs`, backpropagates g; returns the
// output followed by the gradient of every input that requires grad.
std::vector<Tensor> fwd_bwd(const std::function<Tensor(const std::vector<Tensor>&)>& fn,
                            const std::vector<Tensor>& inputs, const Tensor& g) {
  std::vector<Tensor> xs;
  for (const Tensor& t : inputs) xs.push_back(t.detach().clone().requires_grad_(t.requires_grad()));
  Tensor y = fn(xs);
  y.backward(g);
  std::vector<Tensor> r{y.detach()};
  for (const Tensor& x : xs)
    if (x.requires_grad()) r.push_back(x.grad());
  return r;
}

// The oracles: the same ops composed from primitives.
Tensor softmax_ref(const Tensor& x, int dim) {
  Tensor m = max(x, dim, true).detach();
  Tensor e = exp(x - m);
  return e / sum(e, dim, true);
}
Tensor log_softmax_ref(const Tensor& x, int dim) { return x - logsumexp(x, dim, true); }


}  // namespace

TEST_CASE("softmax: values by hand") {
  for (DType dt : {DType::f32, DType::f64}) {
    Tensor x = from_vector({0, std::log(2.0), std::log(3.0)}, {}, {.dtype = dt});
    check_values(softmax(x, 0), {1.0 / 6, 2.0 / 6, 3.0 / 6});
    check_values(softmax(x, -1), {1.0 / 6, 2.0 / 6, 3.0 / 6});
    check_values(log_softmax(x, 0), {-std::log(6.0), std::log(2.0 / 6), std::log(3.0 / 6)});
    CHECK(softmax(x, 0).dtype() == dt);
    // Over dim 0 of a matrix (a middle-dim line: inner = 2).
    Tensor m = from_vector({0, 0, std::log(3.0), 0}, {2, 2}, {.dtype = dt});
    check_values(softmax(m, 0), {0.25, 0.5, 0.75, 0.5});
    check_values(softmax(m, 1), {0.5, 0.5, 0.75, 0.25});
    check_values(log_softmax(m, 0), {std::log(0.25), std::log(0.5), std::log(0.75), std::log(0.5)});
    // Large logits are stable.
    check_values(softmax(from_vector({1000, 1000}, {}, {.dtype = dt}), 0), {0.5, 0.5});
    check_values(log_softmax(from_vector({-1000, 0}, {}, {.dtype = dt}), 0), {-1000, 0}, 1e-6);
    // A scalar is a line of one.
    check_values(softmax(full({}, 3.0, {.dtype = dt}), 0), {1});
    CHECK(softmax(full({}, 3.0, {.dtype = dt}), -1).dim() == 0);
  }
}

TEST_CASE("softmax: f64 gradcheck over every dim, contiguous and strided views") {
  Tensor x = rleaf({3, 4, 5}, 11, -2, 2);
  for (bool log : {false, true}) {
    auto op = [log](const Tensor& t, int d) { return log ? log_softmax(t, d) : softmax(t, d); };
    for (int d : {0, 1, 2, -1}) {
      INFO("log " << log << " dim " << d);
      check_grad([&](const std::vector<Tensor>& in) { return op(in[0], d); }, {x});
      // A transposed view: dims 0 and 2 swap their strides (dim 0 then has stride 1).
      check_grad([&](const std::vector<Tensor>& in) { return op(in[0].transpose(0, 2), d); }, {x});
      // A strided slice (no layout trick applies: made contiguous).
      check_grad([&](const std::vector<Tensor>& in) { return op(in[0].slice(2, 0, 5, 2), d); }, {x});
    }
  }
  // The result feeding further ops (gradient arrives non-contiguous).
  check_grad([](const std::vector<Tensor>& in) { return softmax(in[0], 1).t() * 3.0; }, {rleaf({4, 6}, 12)});
}

TEST_CASE("softmax: agrees with the composition of primitive ops, forward and backward") {
  Generator gen(5);
  for (DType dt : {DType::f64, DType::f32}) {
    const double rtol = dt == DType::f64 ? 1e-12 : 2e-5, atol = dt == DType::f64 ? 1e-13 : 1e-6;
    Tensor x = randn({4, 7, 6}, gen, {.dtype = dt, .requires_grad = true}) * 3.0;
    x = x.detach().requires_grad_();
    Tensor g = randn({4, 7, 6}, gen, {.dtype = dt});
    for (int d = 0; d < 3; ++d) {
      INFO("dtype " << dtype_name(dt) << " dim " << d);
      auto a = fwd_bwd([&](const std::vector<Tensor>& in) { return softmax(in[0], d); }, {x}, g);
      auto b = fwd_bwd([&](const std::vector<Tensor>& in) { return softmax_ref(in[0], d); }, {x}, g);
      check_close(a[0], b[0], rtol, atol);
      check_close(a[1], b[1], rtol, atol);
      auto c = fwd_bwd([&](const std::vector<Tensor>& in) { return log_softmax(in[0], d); }, {x}, g);
      auto e = fwd_bwd([&](const std::vector<Tensor>& in) { return log_softmax_ref(in[0], d); }, {x}, g);
      check_close(c[0], e[0], rtol, atol);
      check_close(c[1], e[1], rtol, atol);
      // Transposed input, gradient arrives on the view.
      auto t1 = fwd_bwd([&](const std::vector<Tensor>& in) { return softmax(in[0].transpose(d, 2), 2); }, {x}, g.transpose(d, 2));
      auto t2 = fwd_bwd([&](const std::vector<Tensor>& in) { return softmax_ref(in[0].transpose(d, 2), 2); }, {x},
                        g.transpose(d, 2));
      check_close(t1[0], t2[0], rtol, atol);
      check_close(t1[1], t2[1], rtol, atol);
    }
  }
}

TEST_CASE("softmax: fully masked (-inf) lines give 0 / -inf and zero gradient, never NaN") {
  Tensor x = f64({-kInf, -kInf, -kInf, 0, -kInf, std::log(3.0)}, {2, 3}, true);
  Tensor y = softmax(x, 1);
  check_values(y, {0, 0, 0, 0.25, 0, 0.75});
  Tensor g = f64({1, 2, 3, 1, -2, 0.5}, {2, 3});
  y.backward(g);
  CHECK(all_finite(x.grad()));
  check_values(x.grad().select(0, 0), {0, 0, 0});
  // Row 1: y * (g - <g, y>) with <g, y> = 0.25 + 0.375 = 0.625.
  check_values(x.grad().select(0, 1), {0.25 * (1 - 0.625), 0, 0.75 * (0.5 - 0.625)});

  Tensor x2 = x.detach().requires_grad_();
  Tensor ly = log_softmax(x2, 1);
  check_close(ly, f64({-kInf, -kInf, -kInf, std::log(0.25), -kInf, std::log(0.75)}, {2, 3}));
  ly.backward(g);
  CHECK(all_finite(x2.grad()));
  check_values(x2.grad().select(0, 0), {0, 0, 0});
  // Row 1: g - softmax * sum(g) = g - [0.25, 0, 0.75] * -0.5
  check_values(x2.grad().select(0, 1), {1 + 0.125, -2, 0.5 + 0.375});

  // The same lines as columns (the middle-dim kernel path): softmax over dim 0 of x^T, contiguous.
  for (bool log : {false, true}) {
    Tensor xt = x.detach().t().contiguous().requires_grad_();
    Tensor yt = log ? log_softmax(xt, 0) : softmax(xt, 0);
    check_close(yt, log ? ly.detach().t() : y.detach().t());
    yt.backward(g.t());
    check_close(xt.grad(), log ? x2.grad().t() : x.grad().t());
  }
}

TEST_CASE("softmax: kernels on long and many lines, deterministic across thread counts") {
  const int saved = get_num_threads();
  Generator gen(21);
  Tensor x64 = randn({64, 3000}, gen, {.dtype = DType::f64}) * 4.0;
  Tensor x32 = x64.to(DType::f32);
  Tensor g32 = randn({64, 3000}, gen, {.dtype = DType::f32});
  std::vector<std::vector<float>> runs;
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    Tensor a = x32.detach().requires_grad_();
    Tensor y = softmax(a, 1);
    y.backward(g32);
    Tensor b = x32.detach().requires_grad_();
    Tensor ly = log_softmax(b, 1);
    ly.backward(g32);
    std::vector<float> all = y.to_vector<float>();
    for (const Tensor& t : {a.grad(), ly, b.grad()})
      for (float v : t.to_vector<float>()) all.push_back(v);
    runs.push_back(all);
  }
  set_num_threads(saved);
  CHECK(runs[0] == runs[1]);
  // f32 against the f64 computation.
  check_close(softmax(x32, 1), softmax(x64, 1), 1e-5, 1e-9);
  check_close(log_softmax(x32, 1), log_softmax(x64, 1), 1e-5, 1e-5);
  // Middle-dim path on a wide block against the row path on the transpose.
  Tensor z = randn({3, 50, 700}, gen, {.dtype = DType::f64});
  check_close(softmax(z, 1), softmax(z.transpose(1, 2).contiguous(), 2).transpose(1, 2), 1e-13, 1e-15);
  check_close(log_softmax(z, 1), log_softmax(z.transpose(1, 2).contiguous(), 2).transpose(1, 2), 1e-13, 1e-13);
  // Lines longer than one online block (4096): the max grows in later blocks,
  // and in row 1 the first 5000 entries are -inf.
  for (DType dt : {DType::f64, DType::f32}) {
    Tensor ramp = arange(0, 10000, 1, {.dtype = dt}) * 0.003;
    Tensor lx = randn({2, 10000}, gen, {.dtype = dt}) + ramp;
    Tensor hide = lt(arange(10000).unsqueeze(0), from_vector_i64({0, 5000}, {2, 1}));
    lx = masked_fill(lx, hide, -kInf);
    const double tol = dt == DType::f64 ? 1e-12 : 1e-5;
    check_close(log_softmax(lx, 1), log_softmax_ref(lx, 1), tol, tol);
    check_close(softmax(lx, 1), softmax_ref(lx, 1), tol, 1e-12);
    CHECK(softmax(lx, 1).to_vector<double>()[10000] == 0.0);
  }
  // The pointer-level kernel, without the tape.
  std::vector<double> in = {0, std::log(2.0), std::log(3.0)}, out(3);
  kernels::cpu::softmax_forward(out.data(), in.data(), 1, 3, 1);
  CHECK(out[2] == doctest::Approx(0.5));
}

TEST_CASE("softmax: the vectorised f32 exp is within 1.5e-7 of exp, exact at the edges; NaN propagates") {
  using kernels::cpu::vexp;
  double worst = 0;
  float at = 0;
  for (float v = -87.3f; v < 88.3f; v += 0.000731f) {
    const double want = std::exp(static_cast<double>(v));
    const double rel = std::abs(vexp(v) - want) / want;
    if (rel > worst) worst = rel, at = v;
  }
  INFO("worst relative error " << worst << " at " << at);
  CHECK(worst < 1.5e-7);
  CHECK(vexp(0.0f) == 1.0f);
  CHECK(vexp(-std::numeric_limits<float>::infinity()) == 0.0f);
  CHECK(vexp(-100.0f) == 0.0f);
  CHECK(std::isinf(vexp(100.0f)));
  CHECK(std::isnan(vexp(std::numeric_limits<float>::quiet_NaN())));
  CHECK(vexp(-1.0) == std::exp(-1.0));  // f64 is std::exp
  // A NaN anywhere in a line makes the whole line NaN (rows and columns, f32 and f64).
  for (DType dt : {DType::f32, DType::f64}) {
    // Rows: NaN among numbers; -inf and numbers; NaN among -inf.
    Tensor x = from_vector({1, NAN, 2, -kInf, 0, 1, -kInf, NAN, -kInf}, {3, 3}, {.dtype = dt});
    const std::vector<bool> nan_row = {true, false, true};
    for (bool log : {false, true}) {
      std::vector<double> r = (log ? log_softmax(x, 1) : softmax(x, 1)).to_vector<double>();
      std::vector<double> c =
          (log ? log_softmax(x.t().contiguous(), 0) : softmax(x.t().contiguous(), 0)).to_vector<double>();
      for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) {
          INFO("log " << log << " row " << i << " col " << j);
          CHECK(std::isnan(r[3 * i + j]) == nan_row[i]);
          CHECK(std::isnan(c[3 * j + i]) == nan_row[i]);
        }
    }
  }
}

TEST_CASE("softmax: bad input throws naming the op and the shape") {
  CHECK_THROWS_WITH_AS(softmax(arange(4), 0), doctest::Contains("softmax: expected an f32 or f64"), Error);
  CHECK_THROWS_WITH_AS(softmax(arange(4), 0), doctest::Contains("[4]"), Error);
  CHECK_THROWS_WITH_AS(softmax(zeros({2, 3}), 2), doctest::Contains("softmax: dim 2 out of range for a tensor of shape [2, 3]"),
                       Error);
  CHECK_THROWS_WITH_AS(log_softmax(zeros({2, 3}), -3), doctest::Contains("log_softmax"), Error);
  CHECK_THROWS_WITH_AS(softmax(Tensor(), 0), doctest::Contains("softmax"), Error);
  // Empty tensors are fine.
  CHECK(softmax(zeros({0, 3}), 1).shape() == Shape{0, 3});
  CHECK(softmax(zeros({2, 0}), 1).shape() == Shape{2, 0});
}
