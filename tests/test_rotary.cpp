// Rotary embedding: values by hand (two channels are a 2-D rotation), the
// inv_freq buffer, an f64 gradcheck, and agreement with the composition
// x cos(f) + rotate_half(x) sin(f) written with primitive ops.
#include <cmath>
#include <vector>

#include "helpers.h"

using namespace colt5;
using namespace colt5::testing;

namespace {

// SPEC §3 with primitive ops (differentiable through the tape).
Tensor rotary_ref(const Tensor& x, const Tensor& positions, const Tensor& inv_freq) {
  const int64_t half = inv_freq.size(0), rot = 2 * half, d = x.size(-1);
  const DType ct = x.dtype() == DType::f64 ? DType::f64 : DType::f32;
  Tensor f = positions.to(ct).unsqueeze(-1) * inv_freq.to(ct);  // (..., n, half)
  Tensor freqs = cat({f, f}, -1);
  Tensor xr = x.narrow(-1, 0, rot);
  Tensor rh = cat({neg(xr.narrow(-1, half, half)), xr.narrow(-1, 0, half)}, -1);
  Tensor out = xr * cos(freqs) + rh * sin(freqs);
  if (rot == d) return out;
  return cat({out, x.narrow(-1, rot, d - rot)}, -1);
}

}  // namespace

TEST_CASE("rotary: two channels are a 2-D rotation by t * inv_freq") {
  for (DType dt : {DType::f64, DType::f32}) {
    INFO(std::string(dtype_name(dt)));
    Tensor x = from_vector({1, 0, 0, 1, 2, 3}, {3, 2}, {.dtype = dt});
    Tensor pos = from_vector_i64({0, 1, 4});
    Tensor invf = from_vector({0.5}, {1});
    const double c1 = std::cos(0.5), s1 = std::sin(0.5), c2 = std::cos(2.0), s2 = std::sin(2.0);
    check_values(apply_rotary(x, pos, invf), {1, 0, -s1, c1, 2 * c2 - 3 * s2, 3 * c2 + 2 * s2}, 1e-6);
  }
}

TEST_CASE("rotary: channels pair (i, i + half); channels past 2 * half pass through") {
  // d = 5, inv_freq = [1, 0.25]: pairs (0, 2) at angle t and (1, 3) at t / 4; channel 4 unchanged.
  Tensor x = from_vector({1, 2, 3, 4, 5}, {1, 5}, {.dtype = DType::f64});
  Tensor invf = from_vector({1.0, 0.25}, {2}, {.dtype = DType::f64});
  const double t = 0.7, a = t, b = t / 4;
  check_values(apply_rotary(x, from_vector({t}, {1}, {.dtype = DType::f64}), invf),
               {1 * std::cos(a) - 3 * std::sin(a), 2 * std::cos(b) - 4 * std::sin(b), 3 * std::cos(a) + 1 * std::sin(a),
                4 * std::cos(b) + 2 * std::sin(b), 5},
               1e-12);
}

TEST_CASE("rotary: inv_freq buffer") {
  Tensor f = rotary_inv_freq(8);
  CHECK(f.dtype() == DType::f32);
  CHECK(f.shape() == Shape{4});
  check_values(f, {1.0, std::pow(10000.0, -0.25), 0.01, std::pow(10000.0, -0.75)}, 1e-6);
  check_values(rotary_inv_freq(8, {.dtype = DType::f64}), {1.0, std::pow(10000.0, -0.25), 0.01, std::pow(10000.0, -0.75)},
               1e-14);
  CHECK(rotary_inv_freq(64).size(0) == 32);
  CHECK(rotary_inv_freq(0).size(0) == 0);
}

TEST_CASE("rotary: f64 gradcheck w.r.t. x (positions broadcast, pass-through channels)") {
  Tensor invf = from_vector({1.0, 0.3}, {2}, {.dtype = DType::f64});
  Tensor pos = from_vector_i64({3, 0, 7, 1, 2, 9}, {2, 1, 3});  // (B, 1, n) for x (B, H, n, d)
  check_grad([&](const std::vector<Tensor>& v) { return apply_rotary(v[0], pos, invf); }, {rleaf({2, 2, 3, 5}, 1)});
  Tensor fpos = from_vector({0.5, 1.5, 2.5}, {3}, {.dtype = DType::f64});
  check_grad([&](const std::vector<Tensor>& v) { return apply_rotary(v[0], fpos, invf); }, {rleaf({2, 3, 4}, 2)});
}

TEST_CASE("rotary: agrees with the primitive-op composition, forward and backward") {
  Generator g(21);
  struct Cfg {
    Shape x, pos;
    bool float_pos;
  };
  std::vector<Cfg> cfgs = {
      {{2, 3, 7, 16}, {7}, false},        // (B, H, n, d), positions (n)
      {{2, 3, 7, 16}, {2, 1, 7}, false},  // per-batch positions (B, 1, n)
      {{2, 2, 5, 8}, {2, 2, 5}, true},    // routed positions (B, R, n), float
      {{3, 9, 12}, {3, 9}, false},        // (B, n, d), d > rot
  };
  for (DType dt : {DType::f64, DType::f32}) {
    for (const Cfg& c : cfgs) {
      INFO(std::string(dtype_name(dt)) << " x " << shape_str(c.x) << " pos " << shape_str(c.pos));
      const double tol = dt == DType::f64 ? 1e-12 : 2e-5;
      Tensor x = randn(c.x, g, {.dtype = dt});
      Tensor pos = c.float_pos ? uniform(c.pos, 0, 100, g) : randint(0, 1000, c.pos, g);
      const int64_t d = c.x.back();
      Tensor invf = rotary_inv_freq(d == 12 ? 8 : d);
      Tensor w = randn(c.x, g, {.dtype = dt});
      Tensor xa = x.detach().clone().requires_grad_(), xb = x.detach().clone().requires_grad_();
      Tensor a = apply_rotary(xa, pos, invf), b = rotary_ref(xb, pos, invf);
      check_close(a, b, tol, tol);
      sum(a * w).backward();
      sum(b * w).backward();
      check_close(xa.grad(), xb.grad(), tol, tol);
    }
  }
}

TEST_CASE("rotary: strided views, the inverse rotation, half types") {
  Generator g(22);
  const int64_t B = 2, N = 6, H = 3, d = 8;
  Tensor xb = randn({B, N, H, d}, g, {.dtype = DType::f64});
  Tensor x = xb.permute({0, 2, 1, 3});  // (B, H, N, d) view of a (B, N, H, d) buffer
  Tensor pos = arange(N);
  Tensor invf = rotary_inv_freq(d);
  Tensor y = apply_rotary(x, pos, invf);
  CHECK(y.permute({0, 2, 1, 3}).is_contiguous());  // keeps x's memory layout
  check_close(y, rotary_ref(x.contiguous(), pos, invf), 1e-12, 1e-12);
  // Rotating back by -t recovers x.
  check_close(apply_rotary(y, neg(pos.to(DType::f64)), invf), x, 1e-12, 1e-12);
  Tensor xt = randn({B, d, N}, g, {.dtype = DType::f64}).transpose(1, 2);  // last dim strided: copied
  check_close(apply_rotary(xt, pos, invf), rotary_ref(xt.contiguous(), pos, invf), 1e-12, 1e-12);
  for (DType h : {DType::bf16, DType::f16}) {
    Tensor xh = x.to(h);
    Tensor yh = apply_rotary(xh, pos, invf);
    CHECK(yh.dtype() == h);
    check_close(yh.to(DType::f64), rotary_ref(xh.to(DType::f32), pos, invf).to(DType::f64), 1e-2, 1e-2);
  }
}

TEST_CASE("rotary: errors") {
  Tensor x = zeros({2, 4, 6});
  CHECK_THROWS_WITH_AS(apply_rotary(x, arange(4), rotary_inv_freq(8)), doctest::Contains("apply_rotary"), Error);
  CHECK_THROWS_WITH_AS(apply_rotary(x, arange(4), rotary_inv_freq(8)), doctest::Contains("d=6"), Error);
  CHECK_THROWS_WITH_AS(apply_rotary(x, arange(5), rotary_inv_freq(6)), doctest::Contains("apply_rotary"), Error);
  CHECK_THROWS_WITH_AS(apply_rotary(x, from_vector_bool({true, true, true, true}), rotary_inv_freq(6)),
                       doctest::Contains("positions must be"), Error);
  CHECK_THROWS_WITH_AS(apply_rotary(x.to(DType::i64), arange(4), rotary_inv_freq(6)), doctest::Contains("x must be"),
                       Error);
}
