#include <cmath>
#include <limits>
#include <random>

#include "helpers.h"
#include "kernels/cpu/loss.h"

using namespace colt5;
using namespace colt5::testing;

namespace {

const double kInf = std::numeric_limits<double>::infinity();

Tensor f64(const std::vector<double>& v, const Shape& s = {}, bool rg = false) {
  return from_vector(v, s, {.dtype = DType::f64, .requires_grad = rg});
}
Tensor i64(const std::vector<int64_t>& v, const Shape& s = {}) { return from_vector_i64(v, s); }

// Random targets in [0, C), with every `ignore_every`-th one set to ignore.
Tensor random_targets(const Shape& s, int64_t C, uint64_t seed, int ignore_every = 0, int64_t ignore = -100) {
  std::mt19937_64 rng(seed);
  std::vector<int64_t> v(shape_numel(s));
  for (size_t i = 0; i < v.size(); ++i)
    v[i] = (ignore_every && i % ignore_every == 1) ? ignore : static_cast<int64_t>(rng() % C);
  return from_vector_i64(v, s);
}

// The oracle: log-softmax from primitives, the target picked by a one-hot mask.
Tensor cross_entropy_ref(const Tensor& x, const Tensor& t, int64_t ignore, Reduction red) {
  Tensor lsm = x - logsumexp(x, -1, true);
  Tensor onehot = eq(t.unsqueeze(-1), arange(x.size(-1)));
  Tensor valid = ne(t, static_cast<double>(ignore));
  Tensor nll = where(valid, -sum(where(onehot, lsm, 0.0), -1), 0.0);
  if (red == Reduction::none) return nll;
  if (red == Reduction::sum) return sum(nll);
  double count = std::max(1.0, sum(valid).item<double>());
  return sum(nll) / count;
}

// Runs fn on a fresh leaf copy of x, backpropagates g; returns output and x's gradient.
std::pair<Tensor, Tensor> fwd_bwd(const std::function<Tensor(const Tensor&)>& fn, const Tensor& x, const Tensor& g) {
  Tensor xs = x.detach().clone().requires_grad_();
  Tensor y = fn(xs);
  y.backward(g);
  return {y.detach(), xs.grad()};
}


}  // namespace

TEST_CASE("cross_entropy: two classes by hand, loss and gradient") {
  // Logits [0, ln 3]: softmax [1/4, 3/4]. Target 1: -ln(3/4); target 0: -ln(1/4).
  for (DType dt : {DType::f32, DType::f64}) {
    Tensor x = from_vector({0, std::log(3.0), 0, std::log(3.0)}, {2, 2}, {.dtype = dt, .requires_grad = true});
    Tensor t = i64({1, 0});
    check_values(cross_entropy(x, t, -100, Reduction::none), {std::log(4.0 / 3), std::log(4.0)});
    check_values(cross_entropy(x, t, -100, Reduction::sum), {std::log(4.0 / 3) + std::log(4.0)});
    Tensor loss = cross_entropy(x, t);
    CHECK(loss.dim() == 0);
    CHECK(loss.dtype() == dt);
    check_values(loss, {(std::log(4.0 / 3) + std::log(4.0)) / 2});
    loss.backward();
    // (softmax - onehot) / 2 per row.
    check_values(x.grad(), {0.125, -0.125, -0.375, 0.375});
  }
  // An ignored row: the mean is over the other row only, and it gets no gradient.
  Tensor x = f64({0, std::log(3.0), 5, -5}, {2, 2}, true);
  Tensor loss = cross_entropy(x, i64({1, -100}));
  check_values(loss, {std::log(4.0 / 3)});
  loss.backward();
  check_values(x.grad(), {0.25, -0.25, 0, 0});
  // A custom ignore_index that is also a valid class.
  check_values(cross_entropy(f64({0, std::log(3.0), 5, -5}, {2, 2}), i64({1, 0}), 0), {std::log(4.0 / 3)});
  // The kernel writes per-row losses and the saved log-sum-exp.
  std::vector<double> logits = {0, std::log(3.0)}, losses(1), lse(1);
  std::vector<int64_t> target = {0};
  kernels::cpu::cross_entropy_forward(losses.data(), lse.data(), logits.data(), target.data(), 1, 2, -100);
  CHECK(lse[0] == doctest::Approx(std::log(4.0)));
  CHECK(losses[0] == doctest::Approx(std::log(4.0)));
}

TEST_CASE("cross_entropy: f64 gradcheck for every reduction, (N, C), (B, T, C) and strided logits") {
  using V = std::vector<Tensor>;
  Tensor x = rleaf({6, 5}, 71, -3, 3);
  Tensor t = random_targets({6}, 5, 72, 4);  // row 1 and 5 ignored
  for (Reduction red : {Reduction::mean, Reduction::sum, Reduction::none}) {
    INFO("reduction " << static_cast<int>(red));
    check_grad([&](const V& in) { return cross_entropy(in[0], t, -100, red); }, {x});
    // Transposed logits: (5, 6) viewed as (6, 5).
    check_grad([&](const V& in) { return cross_entropy(in[0].t(), t, -100, red); }, {rleaf({5, 6}, 73, -3, 3)});
    Tensor t3 = random_targets({2, 3}, 4, 74, 3);
    check_grad([&](const V& in) { return cross_entropy(in[0], t3, -100, red); }, {rleaf({2, 3, 4}, 75, -3, 3)});
    // Strided targets too: every other column of a (6, 2) target.
    Tensor t2 = random_targets({6, 2}, 5, 76).select(1, 1);
    check_grad([&](const V& in) { return cross_entropy(in[0], t2, -100, red); }, {x});
  }
}

TEST_CASE("cross_entropy: agrees with the composition of primitive ops, forward and backward") {
  Generator gen(81);
  for (DType dt : {DType::f64, DType::f32}) {
    const double rtol = dt == DType::f64 ? 1e-12 : 1e-5, atol = dt == DType::f64 ? 1e-13 : 1e-6;
    Tensor x = randn({3, 8, 11}, gen, {.dtype = dt}) * 3.0;
    Tensor t = random_targets({3, 8}, 11, 82, 5);
    for (Reduction red : {Reduction::mean, Reduction::sum, Reduction::none}) {
      INFO("dtype " << dtype_name(dt) << " reduction " << static_cast<int>(red));
      Tensor g = red == Reduction::none ? randn({3, 8}, gen, {.dtype = dt}) : full({}, 1.5, {.dtype = dt});
      auto a = fwd_bwd([&](const Tensor& in) { return cross_entropy(in, t, -100, red); }, x, g);
      auto b = fwd_bwd([&](const Tensor& in) { return cross_entropy_ref(in, t, -100, red); }, x, g);
      check_close(a.first, b.first, rtol, atol);
      check_close(a.second, b.second, rtol, atol);
    }
  }
}

TEST_CASE("cross_entropy: all targets ignored gives 0 and zero gradient, never NaN") {
  Tensor x = f64({1, 2, 3, 4, 5, 6}, {2, 3}, true);
  Tensor t = i64({-100, -100});
  Tensor loss = cross_entropy(x, t);
  check_values(loss, {0});
  loss.backward();
  check_values(x.grad(), {0, 0, 0, 0, 0, 0});
  check_values(cross_entropy(x, t, -100, Reduction::sum), {0});
  check_values(cross_entropy(x, t, -100, Reduction::none), {0, 0});
  // -inf logits: a masked row that is ignored, and a -inf logit that is not the target.
  Tensor m = f64({-kInf, -kInf, -kInf, 0, -kInf, std::log(3.0)}, {2, 3}, true);
  Tensor l2 = cross_entropy(m, i64({-100, 2}), -100, Reduction::sum);
  check_values(l2, {std::log(4.0 / 3)});
  l2.backward();
  CHECK(all_finite(m.grad()));
  check_values(m.grad(), {0, 0, 0, 0.25, 0, -0.25});
  // A target logit of -inf: infinite loss, not NaN.
  Tensor inf_loss = cross_entropy(m.detach(), i64({-100, 1}), -100, Reduction::none);
  CHECK(inf_loss.to_vector<double>()[1] == kInf);
  // Empty batches.
  CHECK(cross_entropy(zeros({0, 3}), from_vector_i64({}, {0}), -100, Reduction::none).shape() == Shape{0});
  check_values(cross_entropy(zeros({0, 3}), from_vector_i64({}, {0})), {0});
}

TEST_CASE("cross_entropy: many rows, deterministic across thread counts, f32 against f64") {
  const int saved = get_num_threads();
  Generator gen(91);
  Tensor x = randn({2000, 300}, gen, {.dtype = DType::f32}) * 3.0;
  Tensor t = random_targets({2000}, 300, 92, 7);
  std::vector<std::vector<float>> runs;
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    auto r = fwd_bwd([&](const Tensor& in) { return cross_entropy(in, t); }, x, full({}, 1.0));
    std::vector<float> all = r.first.to_vector<float>();
    for (float v : r.second.to_vector<float>()) all.push_back(v);
    runs.push_back(all);
  }
  set_num_threads(saved);
  CHECK(runs[0] == runs[1]);
  auto a = fwd_bwd([&](const Tensor& in) { return cross_entropy(in, t, -100, Reduction::none); }, x, ones({2000}));
  auto b = fwd_bwd([&](const Tensor& in) { return cross_entropy(in, t, -100, Reduction::none); }, x.to(DType::f64),
                   ones({2000}, {.dtype = DType::f64}));
  check_close(a.first, b.first, 1e-5, 1e-5);
  check_close(a.second, b.second, 1e-5, 1e-7);
  // Rows longer than one online block of the kernel (4096 classes), the max in a late block.
  Tensor wide = (randn({3, 9000}, gen, {.dtype = DType::f64}) + arange(0, 9000, 1, {.dtype = DType::f64}) * 0.002);
  Tensor tw = from_vector_i64({5, 8999, 4500});
  auto c = fwd_bwd([&](const Tensor& in) { return cross_entropy(in, tw); }, wide, full({}, 1.0, {.dtype = DType::f64}));
  auto d = fwd_bwd([&](const Tensor& in) { return cross_entropy_ref(in, tw, -100, Reduction::mean); }, wide,
                   full({}, 1.0, {.dtype = DType::f64}));
  check_close(c.first, d.first, 1e-12, 1e-12);
  check_close(c.second, d.second, 1e-10, 1e-14);
}

TEST_CASE("cross_entropy: bad input throws naming the op, the value and the shapes") {
  Tensor x = zeros({3, 5});
  CHECK_THROWS_WITH_AS(cross_entropy(x, i64({0, 7, 1})), doctest::Contains("cross_entropy: target value 7"), Error);
  CHECK_THROWS_WITH_AS(cross_entropy(x, i64({0, 7, 1})), doctest::Contains("C = 5"), Error);
  CHECK_THROWS_WITH_AS(cross_entropy(x, i64({0, -3, 1})), doctest::Contains("cross_entropy: target value -3"), Error);
  CHECK_NOTHROW(cross_entropy(x, i64({0, 5, 1}), 5));  // equal to ignore_index: ignored, not out of range
  CHECK_THROWS_WITH_AS(cross_entropy(x, i64({0, 1})), doctest::Contains("cross_entropy: target of shape [2]"), Error);
  CHECK_THROWS_WITH_AS(cross_entropy(x, i64({0, 1})), doctest::Contains("logits of shape [3, 5]"), Error);
  CHECK_THROWS_WITH_AS(cross_entropy(x, zeros({3})), doctest::Contains("cross_entropy: expected an i64 target"), Error);
  CHECK_THROWS_WITH_AS(cross_entropy(arange(6).reshape({3, 2}), i64({0, 1, 0})),
                       doctest::Contains("cross_entropy: expected f32 or f64 logits, got i64"), Error);
  CHECK_THROWS_WITH_AS(cross_entropy(zeros({3, 0}), i64({0, 1, 0})), doctest::Contains("have no classes"), Error);
}
