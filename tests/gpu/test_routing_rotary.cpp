// Routing ops and rotary on the GPU against the CPU kernels on identical inputs,
// forward and backward (one random output gradient through the tape, every
// input gradient compared). Runs only with a GPU.
//
// Tolerances, elementwise |gpu - cpu| <= atol + rtol |cpu|:
//   routing  f64 1e-14 / 1e-14, f32 1e-6 / 1e-6 (the same products and sums in
//            the same order; only FMA contraction may differ), bf16 1e-2 / 1e-2
//            and f16 2e-3 / 2e-3 (f32 results rounded once: one ulp apart at most);
//            score gradients are dot products over D summed in another order
//            (CPU sequential, GPU warp tree): f64 atol 1e-15 D, f32 atol 1e-7 D
//            (measured on an H100 at D = 520: 1.1e-5 in f32, 1.2e-14 in f64)
//   rotary   f64 1e-12 / 1e-12, f32 2e-5 / 2e-6 (sincosf vs glibc, a few ulp),
//            bf16 1e-2 / 1e-2, f16 2e-3 / 2e-3
// Moves (gathers without scores, gather_mask, route_back) are exact.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <numeric>
#include <string>
#include <vector>

#include "colt5.h"
#include "engine/cuda/memory.h"

namespace {

using namespace colt5;
const Device kGpu = Device::cuda(0);

struct Tol {
  double rtol, atol;
};
Tol routing_tol(DType dt) {
  switch (dt) {
    case DType::f64: return {1e-14, 1e-14};
    case DType::f32: return {1e-6, 1e-6};
    case DType::bf16: return {1e-2, 1e-2};
    default: return {2e-3, 2e-3};
  }
}
Tol rotary_tol(DType dt) {
  switch (dt) {
    case DType::f64: return {1e-12, 1e-12};
    case DType::f32: return {2e-5, 2e-6};
    case DType::bf16: return {1e-2, 1e-2};
    default: return {2e-3, 2e-3};
  }
}

void expect_close(const Tensor& got, const Tensor& want, Tol tol, const std::string& what) {
  INFO(what);
  REQUIRE(got.shape() == want.shape());
  CHECK(got.dtype() == want.dtype());
  const std::vector<double> a = got.to_vector<double>(), b = want.to_vector<double>();
  double worst = 0;
  size_t wi = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    double r = std::abs(a[i] - b[i]) / (tol.atol + tol.rtol * std::abs(b[i]));
    if (!std::isfinite(a[i]) || !std::isfinite(b[i])) r = (a[i] == b[i]) ? 0 : INFINITY;
    if (r > worst) worst = r, wi = i;
  }
  INFO("worst element " << wi << " of " << a.size() << ": gpu " << (a.empty() ? 0 : a[wi]) << ", cpu "
                        << (b.empty() ? 0 : b[wi]) << " (error / tolerance " << worst << ")");
  CHECK(worst <= 1.0);
}

// fn on fresh leaves (copies of `inputs` on `dev`; float inputs require grad,
// others are moved only), backward with g; returns output then every float
// input's gradient, all on the CPU.
std::vector<Tensor> fwd_bwd(const std::function<Tensor(const std::vector<Tensor>&)>& fn,
                            const std::vector<Tensor>& inputs, const Tensor& g, Device dev) {
  std::vector<Tensor> xs;
  for (const Tensor& t : inputs) {
    Tensor x = t.to(dev).clone().detach();
    if (t.requires_grad()) x.requires_grad_();
    xs.push_back(x);
  }
  Tensor y = fn(xs);
  CHECK(y.device() == dev);
  y.backward(g.to(dev));
  std::vector<Tensor> r{y.detach().to(Device::cpu())};
  for (const Tensor& x : xs)
    if (x.requires_grad()) r.push_back(x.grad().to(Device::cpu()));
  return r;
}

// Result `dot_index` (a score gradient: a dot product over D) is compared with dot_tol.
void compare(const std::function<Tensor(const std::vector<Tensor>&)>& fn, const std::vector<Tensor>& inputs,
             const Tensor& g, Tol tol, const std::string& what, int dot_index = -1, Tol dot_tol = {}) {
  std::vector<Tensor> c = fwd_bwd(fn, inputs, g, Device::cpu()), d = fwd_bwd(fn, inputs, g, kGpu);
  REQUIRE(c.size() == d.size());
  for (size_t i = 0; i < c.size(); ++i)
    expect_close(d[i], c[i], int(i) == dot_index ? dot_tol : tol, what + (i ? " grad " + std::to_string(i) : " out"));
}

Tol dot_tol(DType dt, int64_t D) {
  if (dt == DType::f64) return {1e-14, 1e-15 * D};
  if (dt == DType::f32) return {1e-6, 1e-7 * D};
  return routing_tol(dt);
}

Tensor distinct_indices(const Shape& shape, int64_t N, uint64_t seed) {
  Generator g(seed);
  const int64_t n = shape.back(), rows = shape_numel(shape) / std::max<int64_t>(n, 1);
  std::vector<int64_t> out;
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<int64_t> perm(N);
    std::iota(perm.begin(), perm.end(), 0);
    for (int64_t i = N - 1; i > 0; --i) std::swap(perm[i], perm[g.next_u64() % (i + 1)]);
    out.insert(out.end(), perm.begin(), perm.begin() + n);
  }
  return from_vector_i64(out, shape);
}

Tensor leaf(const Tensor& t) { return t.detach().requires_grad_(); }

}  // namespace

TEST_CASE("gpu routing: gathers and route_back match the CPU, forward and backward") {
  const int64_t B = 3, N = 50, R = 3, n = 17;
  for (DType dt : {DType::f32, DType::f64, DType::bf16, DType::f16}) {
    for (int64_t D : {64, 6, 520}) {
      const std::string tag = std::string(dtype_name(dt)) + " D=" + std::to_string(D);
      INFO(tag);
      Generator g(1000 + D);
      Tensor x = leaf(randn({B, N, D}, g).to(dt));
      Tensor i2 = distinct_indices({B, n}, N, 1), i3 = distinct_indices({B, R, n}, N, 2);
      Tensor s2 = leaf(rand({B, n}, g).to(dt)), s3 = leaf(rand({B, R, n}, g).to(dt));
      Tensor g2 = randn({B, n, D}, g).to(dt), g3 = randn({B, R, n, D}, g).to(dt);
      const Tol tol = routing_tol(dt);
      compare([&](auto v) { return gather_tokens(v[0], v[1]); }, {x, i2}, g2, tol, tag + " gather (B, n)");
      compare([&](auto v) { return gather_tokens(v[0], v[1]); }, {x, i3}, g3, tol, tag + " gather (B, R, n)");
      const Tol dt_tol = dot_tol(dt, D);
      compare([&](auto v) { return gather_tokens_scaled(v[0], v[1], v[2]); }, {x, i2, s2}, g2, tol,
              tag + " gather_scaled (B, n)", 2, dt_tol);
      compare([&](auto v) { return gather_tokens_scaled(v[0], v[1], v[2]); }, {x, i3, s3}, g3, tol,
              tag + " gather_scaled (B, R, n)", 2, dt_tol);
      Tensor dst = leaf(randn({B, N, D}, g).to(dt)), routed = leaf(randn({B, n, D}, g).to(dt));
      Tensor gd = randn({B, N, D}, g).to(dt);
      compare([&](auto v) { return route_back(v[0], v[1], v[2]); }, {dst, routed, i2}, gd, tol, tag + " route_back");
      compare([&](auto v) { return route_back_scaled(v[0], v[1], v[2], v[3]); }, {dst, routed, i2, s2}, gd, tol,
              tag + " route_back_scaled", 3, dt_tol);
      // Strided x: a (N, B, D + 4) buffer viewed as (B, N, D) (read in place, scalar path).
      Tensor xs = leaf(randn({N, B, D + 4}, g).to(dt));
      compare([&](auto v) { return gather_tokens_scaled(v[0].narrow(2, 2, D).transpose(0, 1), v[1], v[2]); },
              {xs, i3, s3}, g3, tol, tag + " gather_scaled strided", 2, dt_tol);
    }
  }
}

TEST_CASE("gpu routing: repeated indices (ordered fallback of the gather backward, last-wins route_back)") {
  const int64_t B = 2, N = 9, R = 2, n = 12, D = 33;
  for (DType dt : {DType::f32, DType::f64}) {
    INFO(std::string(dtype_name(dt)));
    Generator g(7);
    Tensor x = leaf(randn({B, N, D}, g, {.dtype = dt}));
    Tensor idx = randint(0, N, {B, R, n}, g);  // n > N: repeats within every (b, r)
    Tensor s = leaf(rand({B, R, n}, g, {.dtype = dt}));
    Tensor go = randn({B, R, n, D}, g, {.dtype = dt});
    compare([&](auto v) { return gather_tokens_scaled(v[0], v[1], v[2]); }, {x, idx, s}, go, routing_tol(dt),
            "gather_scaled with repeats", 2, dot_tol(dt, D));
    compare([&](auto v) { return gather_tokens(v[0], v[1]); }, {x, idx}, go, routing_tol(dt), "gather with repeats");
    Tensor idx2 = randint(0, N, {B, n}, g);
    Tensor routed = leaf(randn({B, n, D}, g, {.dtype = dt})), s2 = leaf(rand({B, n}, g, {.dtype = dt}));
    compare([&](auto v) { return route_back_scaled(v[0], v[1], v[2], v[3]); }, {x, routed, idx2, s2},
            randn({B, N, D}, g, {.dtype = dt}), routing_tol(dt), "route_back_scaled with repeats", 3, dot_tol(dt, D));
  }
}

TEST_CASE("gpu routing: gather_mask and index errors") {
  Generator g(8);
  std::vector<bool> mv(4 * 40);
  for (size_t i = 0; i < mv.size(); ++i) mv[i] = g.uniform() < 0.5;
  Tensor m = from_vector_bool(mv, {4, 40});
  for (const Tensor& idx : {distinct_indices({4, 13}, 40, 3), distinct_indices({4, 3, 13}, 40, 4)}) {
    Tensor a = gather_mask(m, idx), b = gather_mask(m.to(kGpu), idx.to(kGpu));
    CHECK(b.device() == kGpu);
    CHECK(a.to_vector<double>() == b.to_vector<double>());
  }
  Tensor x = zeros({2, 5, 8}, {.device = kGpu});
  Tensor bad = from_vector_i64({0, 1, 5, 2}, {2, 2}).to(kGpu);
  CHECK_THROWS_WITH_AS(gather_tokens(x, bad), doctest::Contains("gather_tokens: index 5 is out of range for N=5"),
                       Error);
  CHECK_THROWS_WITH_AS(route_back(x, zeros({2, 2, 8}, {.device = kGpu}), bad), doctest::Contains("route_back: index 5"),
                       Error);
  CHECK_THROWS_WITH_AS(gather_tokens(x, from_vector_i64({0, 1, 2, 3}, {2, 2})), doctest::Contains("gather_tokens"),
                       Error);
}

TEST_CASE("gpu rotary matches the CPU, forward and backward") {
  struct Cfg {
    Shape x, pos;
    bool float_pos;
    int64_t rot_dim;
  };
  const std::vector<Cfg> cfgs = {
      {{2, 8, 300, 64}, {300}, false, 64},        // (B, H, n, d), positions (n)
      {{2, 4, 77, 64}, {2, 1, 77}, false, 32},    // (B, 1, n) positions, half the channels rotated
      {{2, 3, 50, 128}, {2, 3, 50}, true, 128},   // routed positions (B, R, n), float
      {{3, 9000, 16}, {9000}, false, 16},         // long sequence: large angles
  };
  for (DType dt : {DType::f32, DType::f64, DType::bf16, DType::f16}) {
    for (const Cfg& c : cfgs) {
      const std::string tag = std::string(dtype_name(dt)) + " x " + shape_str(c.x);
      INFO(tag);
      Generator g(31);
      Tensor x = leaf(randn(c.x, g).to(dt));
      Tensor pos = c.float_pos ? uniform(c.pos, 0, 4000, g) : randint(0, 9000, c.pos, g);
      Tensor invf = rotary_inv_freq(c.rot_dim);
      compare([&](auto v) { return apply_rotary(v[0], v[1], v[2]); }, {x, pos, invf}, randn(c.x, g).to(dt),
              rotary_tol(dt), tag);
    }
    // Strided: q of a (B, N, H, d) projection viewed as (B, H, N, d).
    Generator g(32);
    Tensor xb = leaf(randn({2, 40, 4, 64}, g).to(dt));
    compare([&](auto v) { return apply_rotary(v[0].permute({0, 2, 1, 3}), v[1], v[2]); },
            {xb, arange(40), rotary_inv_freq(64)}, randn({2, 4, 40, 64}, g).to(dt), rotary_tol(dt),
            std::string(dtype_name(dt)) + " strided");
  }
}

// Informational: achieved bandwidth at CoLT5-like sizes (no assertion on speed).
TEST_CASE("gpu routing_rotary: throughput (informational)") {
  auto time_ms = [](const std::function<void()>& f) {
    f();
    colt5::cuda::synchronize(0);
    const int iters = 20;
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < iters; ++i) f();
    colt5::cuda::synchronize(0);
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / iters;
  };
  NoGradGuard ng;
  const int64_t B = 2, N = 8192, D = 512, n = 2048;
  Generator g(5);
  Tensor x = randn({B, N, D}, g).to(kGpu), routed = randn({B, n, D}, g).to(kGpu);
  Tensor idx = distinct_indices({B, n}, N, 9).to(kGpu), s = rand({B, n}, g).to(kGpu);
  const double gather_bytes = 2.0 * B * n * D * 4, route_bytes = (2.0 * B * N * D + B * n * D) * 4;
  const double tg = time_ms([&] { gather_tokens_scaled(x, idx, s); });
  const double tr = time_ms([&] { route_back_scaled(x, routed, idx, s); });
  Tensor q = randn({2, 8, 8192, 64}, g).to(kGpu);
  Tensor pos = arange(8192).to(kGpu), invf = rotary_inv_freq(64, {.device = kGpu});
  const double tq = time_ms([&] { apply_rotary(q, pos, invf); });
  MESSAGE("gather_tokens_scaled f32 (2, 8192, 512) -> n=2048: " << tg << " ms, " << gather_bytes / tg / 1e6
                                                                << " GB/s (incl. index check sync)");
  MESSAGE("route_back_scaled f32 (2, 8192, 512), n=2048: " << tr << " ms, " << route_bytes / tr / 1e6 << " GB/s");
  MESSAGE("apply_rotary f32 (2, 8, 8192, 64): " << tq << " ms, " << 2.0 * q.numel() * 4 / tq / 1e6 << " GB/s");
}
