// Activation checkpointing (engine/checkpoint.h):
// - values and gradients equal the un-checkpointed computation bit for bit
// - f64 gradcheck through a checkpointed piece
// - parameters read inside the function get their gradients; inputs that do
//   not require grad get none; no graph recorded when nothing needs grad
// - the checkpointed piece's intermediates are not kept between forward and backward
// - a function that computes something else the second time is reported
#include "engine/checkpoint.h"
#include "helpers.h"

using namespace colt5;
using namespace colt5::testing;

namespace {
Tensor piece(const Tensor& a, const Tensor& b, const Tensor& w) { return tanh(matmul(a * b, w)) * a; }
}  // namespace

TEST_CASE("checkpoint: same values and gradients as without it") {
  Generator g(1);
  Tensor a = randn({3, 4}, g, {.requires_grad = true}), b = randn({3, 4}, g, {.requires_grad = true});
  Tensor w = randn({4, 4}, g, {.requires_grad = true});  // a parameter, read by the function directly
  Tensor u = randn({3, 4}, g);
  Tensor y0 = piece(a * 2.0, b, w);
  sum(y0 * u).backward();
  std::vector<Tensor> g0 = {a.grad().clone(), b.grad().clone(), w.grad().clone()};
  a.zero_grad();
  b.zero_grad();
  w.zero_grad();
  Tensor y1 = checkpoint([&](const std::vector<Tensor>& in) { return piece(in[0], in[1], w); }, {a * 2.0, b});
  CHECK(y1.requires_grad());
  check_close(y1, y0, 0, 0);
  sum(y1 * u).backward();
  check_close(a.grad(), g0[0], 0, 0);
  check_close(b.grad(), g0[1], 0, 0);
  check_close(w.grad(), g0[2], 0, 0);
}

TEST_CASE("checkpoint: f64 gradcheck, and inputs without grad get none") {
  Tensor a = rleaf({2, 3}, 2), b = rleaf({2, 3}, 3), w = rleaf({3, 3}, 4);
  Generator g(5);
  Tensor c = randn({2, 3}, g, {.dtype = DType::f64});  // no grad
  auto f = [&](const std::vector<Tensor>& in) {
    return checkpoint([](const std::vector<Tensor>& t) { return piece(t[0], t[1], t[2]) + t[3]; },
                      {in[0], in[1], in[2], c});
  };
  GradcheckResult r = gradcheck(f, {a, b, w});
  INFO(r.message);
  CHECK(r.ok);
  CHECK(r.max_abs_err < 1e-7);
  Tensor y = checkpoint([](const std::vector<Tensor>& t) { return t[0] * t[1]; }, {a, c});
  sum(y).backward();
  check_close(a.grad(), c, 0, 0);
  CHECK(!c.grad().defined());
}

TEST_CASE("checkpoint: nothing recorded when no input needs grad") {
  Generator g(6);
  Tensor a = randn({2, 2}, g);
  Tensor y = checkpoint([](const std::vector<Tensor>& t) { return t[0] * 3.0; }, {a});
  CHECK(!y.requires_grad());
  check_close(y, a * 3.0, 0, 0);
  Tensor p = randn({2, 2}, g, {.requires_grad = true});
  {
    NoGradGuard ng;
    CHECK(!checkpoint([](const std::vector<Tensor>& t) { return t[0] * 3.0; }, {p}).requires_grad());
  }
}

TEST_CASE("checkpoint: the piece's intermediates are not kept for the backward") {
  // piece: 4 large temporaries of n floats each; un-checkpointed, tanh and the
  // products keep them alive until backward; checkpointed, only the input is.
  const int64_t n = 1 << 20;
  Generator g(7);
  Tensor x = randn({n}, g, {.requires_grad = true});
  auto f = [](const Tensor& t) { return exp(sin(t) * cos(t) + 1.0) * t; };
  auto held = [&](bool ckpt) {
    const int64_t before = memory_stats(Device::cpu()).current_bytes;
    Tensor y = ckpt ? checkpoint([&](const std::vector<Tensor>& in) { return f(in[0]); }, {x}) : f(x);
    const int64_t after = memory_stats(Device::cpu()).current_bytes - before;
    sum(y).backward();
    return after;
  };
  const int64_t plain = held(false);
  Tensor g_plain = x.grad().clone();
  x.zero_grad();
  const int64_t ck = held(true);
  MESSAGE("bytes held between forward and backward: plain " << plain << ", checkpointed " << ck);
  CHECK(ck <= n * 4 + 4096);  // the output only
  CHECK(plain >= 3 * n * 4);  // several saved temporaries
  check_close(x.grad(), g_plain, 0, 0);
}

TEST_CASE("checkpoint: errors") {
  Generator g(8);
  Tensor a = randn({2}, g, {.requires_grad = true});
  CHECK_THROWS_WITH_AS(checkpoint(CheckpointFn(), {a}), doctest::Contains("checkpoint: no function"), Error);
  int calls = 0;
  Tensor y = checkpoint(
      [&](const std::vector<Tensor>& t) { return ++calls == 1 ? t[0] * 2.0 : cat({t[0], t[0]}, 0); }, {a});
  CHECK_THROWS_WITH_AS(sum(y).backward(), doctest::Contains("compute the same thing twice"), Error);
}
