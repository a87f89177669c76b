// CUDA flash-attention kernels vs the CPU kernel in f64 on identical inputs
// (inputs are rounded to the GPU dtype first, so the comparison measures only
// the GPU's arithmetic). Error metric: ||gpu - ref|| / ||ref|| per output.
// Tolerances (outputs and every gradient):
//   f32 with TF32 tensor cores (default)   2e-3   (measured worst 6.8e-4 on an H100)
//   f32 with allow_tf32 = false (3xTF32)   2e-5   (measured worst 8.1e-6)
//   bf16                                    1e-2   (measured worst 2.9e-3; inputs/outputs, P and dS in bf16)
//   f16                                     2e-3   (measured worst 3.3e-4)
#include <doctest/doctest.h>

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <algorithm>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "engine/cuda/check.h"
#include "engine/dtype.h"
#include "kernels/cpu/flash_attention.h"
#include "kernels/cuda/flash_attention.h"

using colt5::DType;
using colt5::kernels::AttnStrides;
using colt5::kernels::FlashAttentionParams;

namespace {

struct Case {
  int64_t B = 2, H = 3, Nq = 70, Nk = 90, d = 64;
  bool causal = false;
  int mask_mode = 0;  // 0 none, 1 (B, Nk), 2 (B, H, Nk)
  bool null_kv = false;
  int layout = 0;  // 0 contiguous (B,H,N,d); 1 (B,N,H,d) view; 2 (B,N,H,d+1) view (unaligned rows: scalar path)
  bool masked_batch = false;
};

double round_to(DType t, double x) {
  switch (t) {
    case DType::bf16: return colt5::bf16_to_float(colt5::float_to_bf16(float(x)));
    case DType::f16: return colt5::f16_to_float(colt5::float_to_f16(float(x)));
    default: return double(float(x));
  }
}

// Host buffer in the GPU dtype, built from doubles.
std::vector<uint8_t> encode(DType t, const std::vector<double>& x) {
  std::vector<uint8_t> out(x.size() * colt5::dtype_size(t));
  for (size_t i = 0; i < x.size(); ++i) {
    if (t == DType::f32) {
      const float f = float(x[i]);
      std::memcpy(&out[i * 4], &f, 4);
    } else {
      const uint16_t h = t == DType::bf16 ? colt5::float_to_bf16(float(x[i])) : colt5::float_to_f16(float(x[i]));
      std::memcpy(&out[i * 2], &h, 2);
    }
  }
  return out;
}
std::vector<double> decode(DType t, const std::vector<uint8_t>& b) {
  const size_t es = colt5::dtype_size(t), n = b.size() / es;
  std::vector<double> out(n);
  for (size_t i = 0; i < n; ++i) {
    if (t == DType::f32) {
      float f;
      std::memcpy(&f, &b[i * 4], 4);
      out[i] = f;
    } else {
      uint16_t h;
      std::memcpy(&h, &b[i * 2], 2);
      out[i] = t == DType::bf16 ? colt5::bf16_to_float(h) : colt5::f16_to_float(h);
    }
  }
  return out;
}

struct DeviceBuf {
  void* p = nullptr;
  size_t n = 0;
  explicit DeviceBuf(size_t bytes) : n(bytes) {
    if (bytes) CUDA_CHECK(cudaMalloc(&p, bytes));
  }
  ~DeviceBuf() {
    if (p) cudaFree(p);
  }
  DeviceBuf(const DeviceBuf&) = delete;
  DeviceBuf& operator=(const DeviceBuf&) = delete;
  void upload(const std::vector<uint8_t>& h) {
    if (n) CUDA_CHECK(cudaMemcpy(p, h.data(), n, cudaMemcpyHostToDevice));
  }
  std::vector<uint8_t> download() const {
    std::vector<uint8_t> h(n);
    if (n) CUDA_CHECK(cudaMemcpy(h.data(), p, n, cudaMemcpyDeviceToHost));
    return h;
  }
  void poison() {
    if (n) CUDA_CHECK(cudaMemset(p, 0xff, n));  // NaN in f32, bf16 and f16
  }
};

struct Layout {
  AttnStrides st;
  size_t elems;
};
Layout layout_of(const Case& c, int64_t N) {
  if (c.layout == 0) return {colt5::kernels::strides_bhnd(c.H, N, c.d), size_t(c.B * c.H * N * c.d)};
  const int64_t dp = c.d + (c.layout == 2 ? 1 : 0);
  return {{N * c.H * dp, dp, c.H * dp}, size_t(c.B * N * c.H * dp)};
}

// Logical (B, H, N, d) contiguous values <-> buffer in a layout (padding zero).
std::vector<double> scatter(const std::vector<double>& x, const Case& c, int64_t N, const Layout& L) {
  std::vector<double> out(L.elems, 0.0);
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t h = 0; h < c.H; ++h)
      for (int64_t n = 0; n < N; ++n)
        for (int64_t ch = 0; ch < c.d; ++ch)
          out[b * L.st.b + h * L.st.h + n * L.st.n + ch] = x[((b * c.H + h) * N + n) * c.d + ch];
  return out;
}
std::vector<double> gather(const std::vector<double>& buf, const Case& c, int64_t N, const Layout& L) {
  std::vector<double> out(c.B * c.H * N * c.d);
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t h = 0; h < c.H; ++h)
      for (int64_t n = 0; n < N; ++n)
        for (int64_t ch = 0; ch < c.d; ++ch)
          out[((b * c.H + h) * N + n) * c.d + ch] = buf[b * L.st.b + h * L.st.h + n * L.st.n + ch];
  return out;
}

double rel_err(const std::vector<double>& a, const std::vector<double>& b) {
  REQUIRE(a.size() == b.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isinf(b[i]) && a[i] == b[i]) continue;
    if (!std::isfinite(a[i])) return std::numeric_limits<double>::infinity();
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  return den == 0 ? std::sqrt(num) : std::sqrt(num) / std::sqrt(den);
}

struct Outputs {
  std::vector<double> out, lse, dq, dk, dv, dnk, dnv;
};

// Runs the case on the GPU in `dt` and the CPU f64 kernel on the same
// (rounded) inputs; returns the max relative error over all outputs and
// prints each one.
double run_case(const Case& c, DType dt, bool allow_tf32, uint32_t seed, bool check_determinism = false) {
  const int64_t B = c.B, H = c.H, Nq = c.Nq, Nk = c.Nk, d = c.d;
  std::mt19937 rng(seed);
  std::normal_distribution<double> nd(0.0, 1.0);
  auto randv = [&](size_t n, double sd) {
    std::vector<double> x(n);
    for (auto& e : x) e = round_to(dt, sd * nd(rng));
    return x;
  };
  const std::vector<double> q = randv(B * H * Nq * d, 1.5), k = randv(B * H * Nk * d, 1.0),
                            v = randv(B * H * Nk * d, 1.0), dout = randv(B * H * Nq * d, 1.0);
  const std::vector<double> nk = randv(c.null_kv ? H * d : 0, 1.0), nv = randv(c.null_kv ? H * d : 0, 1.0);
  std::vector<uint8_t> mask;
  int64_t msb = 0, msh = 0;
  if (c.mask_mode) {
    const int64_t per_b = c.mask_mode == 1 ? Nk : H * Nk;
    mask.resize(B * per_b);
    std::bernoulli_distribution keep(0.7);
    for (auto& m : mask) m = keep(rng);
    if (c.masked_batch) std::fill(mask.begin(), mask.begin() + per_b, 0);
    msb = per_b;
    msh = c.mask_mode == 1 ? 0 : Nk;
  }
  const double scale = 1.0 / std::sqrt(double(d));
  const Layout Lq = layout_of(c, Nq), Lk = layout_of(c, Nk);

  // ---- CPU f64 reference on the same values.
  Outputs ref;
  {
    std::vector<double> hq = scatter(q, c, Nq, Lq), hk = scatter(k, c, Nk, Lk), hv = scatter(v, c, Nk, Lk),
                        hdo = scatter(dout, c, Nq, Lq);
    std::vector<double> o(Lq.elems), dq(Lq.elems), dk(Lk.elems), dv(Lk.elems), lse(B * H * Nq), dnk(H * d),
        dnv(H * d);
    FlashAttentionParams p;
    p.dtype = DType::f64;
    p.B = B, p.H = H, p.Nq = Nq, p.Nk = Nk, p.d = d, p.scale = scale, p.causal = c.causal;
    p.q = hq.data(), p.k = hk.data(), p.v = hv.data();
    p.q_stride = p.out_stride = p.dout_stride = p.dq_stride = Lq.st;
    p.k_stride = p.v_stride = p.dk_stride = p.dv_stride = Lk.st;
    if (!mask.empty()) p.mask = mask.data(), p.mask_stride_b = msb, p.mask_stride_h = msh;
    if (c.null_kv) p.null_k = nk.data(), p.null_v = nv.data(), p.dnull_k = dnk.data(), p.dnull_v = dnv.data();
    p.out = o.data(), p.lse = lse.data();
    colt5::kernels::cpu::flash_attention_forward(p);
    // The GPU backward reads its own (rounded) out; give the CPU the same.
    std::vector<double> o_r = o;
    for (auto& x : o_r) x = round_to(dt, x);
    p.out = o_r.data();
    p.dout = hdo.data(), p.dq = dq.data(), p.dk = dk.data(), p.dv = dv.data();
    colt5::kernels::cpu::flash_attention_backward(p);
    ref.out = gather(o, c, Nq, Lq);
    ref.dq = gather(dq, c, Nq, Lq);
    ref.dk = gather(dk, c, Nk, Lk);
    ref.dv = gather(dv, c, Nk, Lk);
    ref.lse = lse;
    ref.dnk = dnk;
    ref.dnv = dnv;
  }

  // ---- GPU
  const size_t es = colt5::dtype_size(dt);
  DeviceBuf dq_(Lq.elems * es), dk_(Lk.elems * es), dv_(Lk.elems * es), dout_(Lq.elems * es), q_(Lq.elems * es),
      k_(Lk.elems * es), v_(Lk.elems * es), o_(Lq.elems * es), lse_(B * H * Nq * 4), nk_(nk.size() * es),
      nv_(nv.size() * es), dnk_(nk.size() * es), dnv_(nv.size() * es), mask_(mask.size());
  q_.upload(encode(dt, scatter(q, c, Nq, Lq)));
  k_.upload(encode(dt, scatter(k, c, Nk, Lk)));
  v_.upload(encode(dt, scatter(v, c, Nk, Lk)));
  dout_.upload(encode(dt, scatter(dout, c, Nq, Lq)));
  nk_.upload(encode(dt, nk));
  nv_.upload(encode(dt, nv));
  mask_.upload(mask);
  for (DeviceBuf* b : {&o_, &lse_, &dq_, &dk_, &dv_, &dnk_, &dnv_}) b->poison();

  FlashAttentionParams p;
  p.dtype = dt;
  p.allow_tf32 = allow_tf32;
  p.B = B, p.H = H, p.Nq = Nq, p.Nk = Nk, p.d = d, p.scale = scale, p.causal = c.causal;
  p.q = q_.p, p.k = k_.p, p.v = v_.p;
  p.q_stride = p.out_stride = p.dout_stride = p.dq_stride = Lq.st;
  p.k_stride = p.v_stride = p.dk_stride = p.dv_stride = Lk.st;
  if (!mask.empty()) p.mask = static_cast<const uint8_t*>(mask_.p), p.mask_stride_b = msb, p.mask_stride_h = msh;
  if (c.null_kv) p.null_k = nk_.p, p.null_v = nv_.p, p.dnull_k = dnk_.p, p.dnull_v = dnv_.p;
  p.out = o_.p, p.lse = lse_.p;
  p.dout = dout_.p, p.dq = dq_.p, p.dk = dk_.p, p.dv = dv_.p;
  namespace fc = colt5::kernels::cuda;
  DeviceBuf ws(fc::flash_attention_backward_workspace_bytes(p));
  fc::flash_attention_forward(p, nullptr, 0, nullptr);
  fc::flash_attention_backward(p, ws.p, ws.n, nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());

  Outputs got;
  got.out = gather(decode(dt, o_.download()), c, Nq, Lq);
  got.dq = gather(decode(dt, dq_.download()), c, Nq, Lq);
  got.dk = gather(decode(dt, dk_.download()), c, Nk, Lk);
  got.dv = gather(decode(dt, dv_.download()), c, Nk, Lk);
  got.lse = decode(DType::f32, lse_.download());
  got.dnk = decode(dt, dnk_.download());
  got.dnv = decode(dt, dnv_.download());
  if (!c.null_kv) got.dnk = ref.dnk, got.dnv = ref.dnv;

  if (check_determinism) {  // the forward has no atomics: a second run must match bit for bit
    const std::vector<uint8_t> first = o_.download();
    o_.poison();
    fc::flash_attention_forward(p, nullptr, 0, nullptr);
    CUDA_CHECK(cudaDeviceSynchronize());
    CHECK(o_.download() == first);
  }

  const double e[7] = {rel_err(got.out, ref.out), rel_err(got.lse, ref.lse), rel_err(got.dq, ref.dq),
                       rel_err(got.dk, ref.dk),   rel_err(got.dv, ref.dv),   rel_err(got.dnk, ref.dnk),
                       rel_err(got.dnv, ref.dnv)};
  double worst = 0;
  for (double x : e) worst = std::isnan(x) ? INFINITY : std::max(worst, x);
  std::printf(
      "  %-4s%s B=%lld H=%lld Nq=%lld Nk=%lld d=%lld causal=%d mask=%d null=%d layout=%d  out %.1e lse %.1e dq %.1e "
      "dk %.1e dv %.1e dnk %.1e dnv %.1e\n",
      colt5::dtype_name(dt), dt == DType::f32 ? (allow_tf32 ? "/tf32" : "/3x  ") : "     ", (long long)B,
      (long long)H, (long long)Nq, (long long)Nk, (long long)d, c.causal, c.mask_mode, c.null_kv, c.layout, e[0], e[1],
      e[2], e[3], e[4], e[5], e[6]);
  return worst;
}

std::vector<Case> gpu_cases() {
  std::vector<Case> cs;
  for (int64_t d : {32, 64, 128}) {
    cs.push_back({.B = 2, .H = 3, .Nq = 130, .Nk = 200, .d = d});
    cs.push_back({.B = 2, .H = 2, .Nq = 77, .Nk = 261, .d = d, .causal = true, .mask_mode = 2, .null_kv = true,
                  .layout = 1});
  }
  cs.push_back({.B = 2, .H = 2, .Nq = 200, .Nk = 67, .d = 64, .causal = true});  // Nq > Nk: rows with no key
  cs.push_back({.B = 2, .H = 2, .Nq = 150, .Nk = 150, .d = 64, .causal = true, .null_kv = true});
  cs.push_back({.B = 2, .H = 3, .Nq = 65, .Nk = 129, .d = 64, .mask_mode = 1, .masked_batch = true});
  cs.push_back({.B = 2, .H = 3, .Nq = 65, .Nk = 129, .d = 64, .mask_mode = 2, .null_kv = true, .masked_batch = true});
  cs.push_back({.B = 1, .H = 2, .Nq = 33, .Nk = 1025, .d = 64, .null_kv = true, .layout = 2});  // scalar path
  cs.push_back({.B = 1, .H = 2, .Nq = 50, .Nk = 70, .d = 40, .mask_mode = 1, .null_kv = true});  // generic d
  cs.push_back({.B = 1, .H = 2, .Nq = 50, .Nk = 70, .d = 16, .causal = true});                  // generic d
  cs.push_back({.B = 1, .H = 2, .Nq = 45, .Nk = 99, .d = 80, .null_kv = true, .layout = 1});     // generic d
  cs.push_back({.B = 1, .H = 2, .Nq = 45, .Nk = 99, .d = 200, .mask_mode = 2, .null_kv = true}); // generic d
  cs.push_back({.B = 1, .H = 2, .Nq = 37, .Nk = 51, .d = 256, .causal = true});
  cs.push_back({.B = 1, .H = 2, .Nq = 37, .Nk = 51, .d = 33, .layout = 2});  // odd d: scalar path
  cs.push_back({.B = 1, .H = 1, .Nq = 9, .Nk = 0, .d = 64, .null_kv = true});  // only the null key
  return cs;
}

void run_suite(DType dt, bool tf32, double tol, uint32_t seed) {
  double worst = 0;
  for (const Case& c : gpu_cases()) {
    INFO("dtype=", colt5::dtype_name(dt), " tf32=", tf32, " B=", c.B, " H=", c.H, " Nq=", c.Nq, " Nk=", c.Nk,
         " d=", c.d, " causal=", c.causal, " mask=", c.mask_mode, " null=", c.null_kv, " layout=", c.layout);
    const bool determinism = seed % 5 == 0;
    const double e = run_case(c, dt, tf32, seed, determinism);
    CHECK(e <= tol);
    worst = std::max(worst, e);
    ++seed;
  }
  std::printf("SUMMARY %s%s worst relative error %.2e (tolerance %.0e)\n", colt5::dtype_name(dt),
              dt == DType::f32 ? (tf32 ? "/tf32" : "/3xtf32") : "", worst, tol);
}

}  // namespace

constexpr double kTolTf32 = 2e-3, kTol3xTf32 = 2e-5, kTolBf16 = 1e-2, kTolF16 = 2e-3;

TEST_CASE("cuda flash attention f32 (TF32 tensor cores) vs CPU f64") { run_suite(DType::f32, true, kTolTf32, 1000); }
TEST_CASE("cuda flash attention f32 (3xTF32) vs CPU f64") { run_suite(DType::f32, false, kTol3xTf32, 2000); }
TEST_CASE("cuda flash attention bf16 vs CPU f64") { run_suite(DType::bf16, true, kTolBf16, 3000); }
TEST_CASE("cuda flash attention f16 vs CPU f64") { run_suite(DType::f16, true, kTolF16, 4000); }

// Every alternative tile configuration (set_flash_attention_variants) of the
// half-precision kernels must compute the same function.
TEST_CASE("cuda flash attention half-precision kernel variants vs CPU f64") {
  struct Reset {
    ~Reset() { colt5::kernels::cuda::set_flash_attention_variants(-1, -1); }
  } reset;
  const int combos[5][2] = {{0, 0}, {1, 1}, {2, 2}, {0, 3}, {0, 4}};
  uint32_t seed = 5000;
  for (const auto& fb : combos) {
    colt5::kernels::cuda::set_flash_attention_variants(fb[0], fb[1]);
    std::printf("variants: forward %d, backward %d\n", fb[0], fb[1]);
    run_suite(DType::bf16, true, kTolBf16, seed += 100);
    run_suite(DType::f16, true, kTolF16, seed += 100);
  }
  CHECK_THROWS_AS(colt5::kernels::cuda::set_flash_attention_variants(3, 0), colt5::Error);
  CHECK_THROWS_AS(colt5::kernels::cuda::set_flash_attention_variants(0, 5), colt5::Error);
}

TEST_CASE("cuda flash attention: fully masked rows give exact zeros and -inf lse") {
  // Batch 0's mask is all zeros and there is no null kv.
  Case c{.B = 2, .H = 2, .Nq = 40, .Nk = 70, .d = 64, .mask_mode = 1, .masked_batch = true};
  CHECK(run_case(c, DType::bf16, true, 77) <= kTolBf16);  // rel_err treats -inf == -inf as exact, NaN as failure
}

TEST_CASE("cuda flash attention rejects bad arguments") {
  FlashAttentionParams p;
  p.dtype = DType::f64;
  p.B = p.H = p.Nq = p.Nk = 1, p.d = 64, p.scale = 0.125;
  int dummy;
  p.q = p.k = p.v = &dummy, p.out = p.lse = &dummy;
  p.q_stride = p.k_stride = p.v_stride = p.out_stride = colt5::kernels::strides_bhnd(1, 1, 64);
  CHECK_THROWS_WITH_AS(colt5::kernels::cuda::flash_attention_forward(p, nullptr, 0, nullptr),
                       doctest::Contains("f64"), colt5::Error);
  p.dtype = DType::bf16;
  p.d = 300;
  CHECK_THROWS_WITH_AS(colt5::kernels::cuda::flash_attention_forward(p, nullptr, 0, nullptr),
                       doctest::Contains("d=300"), colt5::Error);
  p.d = 64;
  p.dout = p.dq = p.dk = p.dv = &dummy;
  p.dout_stride = p.dq_stride = p.dk_stride = p.dv_stride = p.q_stride;
  CHECK_THROWS_WITH_AS(colt5::kernels::cuda::flash_attention_backward(p, nullptr, 0, nullptr),
                       doctest::Contains("workspace"), colt5::Error);
}
