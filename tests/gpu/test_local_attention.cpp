// CUDA local-attention kernels vs the CPU kernel in f64 on identical inputs
// (inputs rounded to the GPU dtype first, and the CPU backward given the
// GPU's rounded output, so the comparison measures only the GPU's
// arithmetic), then the op on CUDA tensors vs the op on the CPU (forward and
// the gradients through the tape), and the fused op vs the reference on the GPU.
// Error metric: ||gpu - ref|| / ||ref|| per output (out, lse, dv), and
// ||gpu - ref|| / max(||ref||, ||dv_ref||) for dq and dk (see run_case).
// Tolerances (measured worst on an H100, all cases with N > 1, in brackets):
//   f32 with TF32 tensor cores (default)   2e-3   (8.3e-4)
//   f32 with allow_tf32 = false (3xTF32)   2e-5   (3.5e-6)
//   bf16                                    1e-2   (3.0e-3)
//   f16                                     2e-3   (3.9e-4)
// (the same bounds as the dense flash kernels, whose arithmetic this shares;
// each run prints the measured errors.) Rows with no visible key must be
// exactly 0 with lse = -inf. N = 1 (one key per query: dq = dk = 0 exactly)
// measured absolute ||dq||, ||dk|| <= 4.4e-3 with TF32 against ||dv|| ~ 20,
// i.e. ~2e-4 on the metric above.
#include <doctest/doctest.h>

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "colt5.h"
#include "engine/cuda/check.h"
#include "kernels/cpu/local_attention.h"
#include "kernels/cuda/local_attention.h"
#include "ops/local_attention.h"

using colt5::DType;
using colt5::kernels::AttnStrides;
using colt5::kernels::LocalAttentionParams;

namespace {

struct Case {
  int64_t B = 2, H = 2, N = 300, d = 64;
  int64_t w = 64;
  int lb = 1, lf = 1;
  bool causal = false, exact = true;
  int mask_mode = 0;  // 0 none, 1 random (B, N), 2 random + a fully masked prefix and batch 0 all masked
  int layout = 0;     // 0 (B,H,N,d); 1 (B,N,H,d) view; 2 (B,N,H,d+1) view (unaligned rows: scalar path)
};

double round_to(DType t, double x) {
  switch (t) {
    case DType::bf16: return colt5::bf16_to_float(colt5::float_to_bf16(float(x)));
    case DType::f16: return colt5::f16_to_float(colt5::float_to_f16(float(x)));
    default: return double(float(x));
  }
}
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
Layout layout_of(const Case& c) {
  if (c.layout == 0) return {colt5::kernels::strides_bhnd(c.H, c.N, c.d), size_t(c.B * c.H * c.N * c.d)};
  const int64_t dp = c.d + (c.layout == 2 ? 1 : 0);
  return {{c.N * c.H * dp, dp, c.H * dp}, size_t(c.B * c.N * c.H * dp)};
}
std::vector<double> scatter(const std::vector<double>& x, const Case& c, const Layout& L) {
  std::vector<double> out(L.elems, 0.0);
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t h = 0; h < c.H; ++h)
      for (int64_t n = 0; n < c.N; ++n)
        for (int64_t ch = 0; ch < c.d; ++ch)
          out[b * L.st.b + h * L.st.h + n * L.st.n + ch] = x[((b * c.H + h) * c.N + n) * c.d + ch];
  return out;
}
std::vector<double> gather(const std::vector<double>& buf, const Case& c, const Layout& L) {
  std::vector<double> out(c.B * c.H * c.N * c.d);
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t h = 0; h < c.H; ++h)
      for (int64_t n = 0; n < c.N; ++n)
        for (int64_t ch = 0; ch < c.d; ++ch)
          out[((b * c.H + h) * c.N + n) * c.d + ch] = buf[b * L.st.b + h * L.st.h + n * L.st.n + ch];
  return out;
}

double norm(const std::vector<double>& a) {
  double s = 0;
  for (double x : a) s += x * x;
  return std::sqrt(s);
}

// ||a - b|| / max(||b||, den_floor); with a zero denominator, the absolute error.
double rel_err(const std::vector<double>& a, const std::vector<double>& b, double den_floor = 0) {
  REQUIRE(a.size() == b.size());
  double num = 0, den = den_floor * den_floor;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isinf(b[i]) && a[i] == b[i]) continue;
    if (!std::isfinite(a[i]) || std::isinf(b[i])) return std::numeric_limits<double>::infinity();
    num += (a[i] - b[i]) * (a[i] - b[i]);
    if (den_floor == 0) den += b[i] * b[i];
  }
  if (den_floor > 0) den = std::max(den, norm(b) * norm(b));
  return den == 0 ? std::sqrt(num) : std::sqrt(num) / std::sqrt(den);
}

// Runs the case on the GPU in `dt` and the CPU f64 kernel on the same
// (rounded) inputs; returns the worst relative error and prints each one.
double run_case(const Case& c, DType dt, bool allow_tf32, uint32_t seed) {
  const int64_t B = c.B, H = c.H, N = c.N, d = c.d;
  std::mt19937 rng(seed);
  std::normal_distribution<double> nd(0.0, 1.0);
  auto randv = [&](size_t n, double sd) {
    std::vector<double> x(n);
    for (auto& e : x) e = round_to(dt, sd * nd(rng));
    return x;
  };
  const std::vector<double> q = randv(B * H * N * d, 1.5), k = randv(B * H * N * d, 1.0), v = randv(B * H * N * d, 1.0),
                            dout = randv(B * H * N * d, 1.0);
  std::vector<uint8_t> mask;
  if (c.mask_mode) {
    mask.resize(B * N);
    std::bernoulli_distribution keep(0.7);
    for (auto& m : mask) m = keep(rng);
    if (c.mask_mode == 2) {
      std::fill(mask.begin(), mask.begin() + N, 0);                                  // batch 0: nothing visible
      if (B > 1) std::fill(mask.begin() + N, mask.begin() + N + std::min(N, 2 * c.w), 0);  // batch 1: a masked prefix
    }
  }
  const Layout L = layout_of(c);
  LocalAttentionParams p;
  p.B = B, p.H = H, p.N = N, p.d = d;
  p.window = c.w, p.look_backward = c.lb, p.look_forward = c.lf, p.causal = c.causal, p.exact = c.exact;
  p.scale = 1.0 / std::sqrt(double(d));
  p.q_stride = p.k_stride = p.v_stride = p.out_stride = p.dout_stride = p.dq_stride = p.dk_stride = p.dv_stride = L.st;
  p.mask_stride_b = N;

  // ---- CPU f64 reference on the same values.
  std::vector<double> r_out, r_lse(B * H * N), r_dq, r_dk, r_dv;
  {
    std::vector<double> hq = scatter(q, c, L), hk = scatter(k, c, L), hv = scatter(v, c, L), hdo = scatter(dout, c, L);
    std::vector<double> o(L.elems), dq(L.elems), dk(L.elems), dv(L.elems);
    LocalAttentionParams cp = p;
    cp.dtype = DType::f64;
    cp.q = hq.data(), cp.k = hk.data(), cp.v = hv.data();
    if (!mask.empty()) cp.mask = mask.data();
    cp.out = o.data(), cp.lse = r_lse.data();
    colt5::kernels::cpu::local_attention_forward(cp);
    std::vector<double> o_r = o;  // the GPU backward reads its own rounded out
    for (auto& x : o_r) x = round_to(dt, x);
    cp.out = o_r.data();
    cp.dout = hdo.data(), cp.dq = dq.data(), cp.dk = dk.data(), cp.dv = dv.data();
    colt5::kernels::cpu::local_attention_backward(cp);
    r_out = gather(o, c, L), r_dq = gather(dq, c, L), r_dk = gather(dk, c, L), r_dv = gather(dv, c, L);
  }

  // ---- GPU
  const size_t es = colt5::dtype_size(dt);
  DeviceBuf q_(L.elems * es), k_(L.elems * es), v_(L.elems * es), o_(L.elems * es), do_(L.elems * es),
      dq_(L.elems * es), dk_(L.elems * es), dv_(L.elems * es), lse_(B * H * N * 4), mask_(mask.size());
  q_.upload(encode(dt, scatter(q, c, L)));
  k_.upload(encode(dt, scatter(k, c, L)));
  v_.upload(encode(dt, scatter(v, c, L)));
  do_.upload(encode(dt, scatter(dout, c, L)));
  mask_.upload(mask);
  for (DeviceBuf* b : {&o_, &lse_, &dq_, &dk_, &dv_}) b->poison();
  p.dtype = dt;
  p.allow_tf32 = allow_tf32;
  p.q = q_.p, p.k = k_.p, p.v = v_.p, p.out = o_.p, p.lse = lse_.p;
  if (!mask.empty()) p.mask = static_cast<const uint8_t*>(mask_.p);
  p.dout = do_.p, p.dq = dq_.p, p.dk = dk_.p, p.dv = dv_.p;
  namespace lc = colt5::kernels::cuda;
  DeviceBuf ws(lc::local_attention_backward_workspace_bytes(p));
  lc::local_attention_forward(p, nullptr);
  lc::local_attention_backward(p, ws.p, ws.n, nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());

  const std::vector<double> g_out = gather(decode(dt, o_.download()), c, L), g_lse = decode(DType::f32, lse_.download()),
                            g_dq = gather(decode(dt, dq_.download()), c, L),
                            g_dk = gather(decode(dt, dk_.download()), c, L),
                            g_dv = gather(decode(dt, dv_.download()), c, L);
  // Rows with no visible key: exactly 0 and lse = -inf, like the CPU.
  int empty_rows = 0;
  bool empty_ok = true;
  for (int64_t r = 0; r < B * H * N; ++r)
    if (std::isinf(r_lse[r])) {
      ++empty_rows;
      empty_ok &= std::isinf(g_lse[r]) && g_lse[r] < 0;
      for (int64_t ch = 0; ch < d; ++ch) empty_ok &= g_out[r * d + ch] == 0.0 && g_dq[r * d + ch] == 0.0;
    }
  CHECK(empty_ok);
  // dq and dk are measured against max(||ref||, ||dv_ref||): where a query
  // sees a single key they vanish exactly (dS = P (dP - D) = 0), and the GPU's
  // rounding noise there is on the scale of dout (that is, of dv), not of zero.
  const double gscale = norm(r_dv);
  const double e[5] = {rel_err(g_out, r_out), rel_err(g_lse, r_lse), rel_err(g_dq, r_dq, gscale),
                       rel_err(g_dk, r_dk, gscale), rel_err(g_dv, r_dv)};
  double worst = 0;
  for (double x : e) worst = std::isnan(x) ? INFINITY : std::max(worst, x);
  std::printf("  %-4s%s B=%lld H=%lld N=%lld d=%lld w=%lld look=%d/%d causal=%d exact=%d mask=%d layout=%d "
              "(empty rows %d)  out %.1e lse %.1e dq %.1e dk %.1e dv %.1e\n",
              colt5::dtype_name(dt), dt == DType::f32 ? (allow_tf32 ? "/tf32" : "/3x  ") : "     ", (long long)B,
              (long long)H, (long long)N, (long long)d, (long long)c.w, c.lb, c.lf, c.causal, c.exact, c.mask_mode,
              c.layout, empty_rows, e[0], e[1], e[2], e[3], e[4]);
  return worst;
}

std::vector<Case> gpu_cases() {
  std::vector<Case> cs;
  for (int64_t d : {32, 64, 128}) {
    cs.push_back({.N = 300, .d = d});                                                        // non-causal exact 1/1
    cs.push_back({.N = 300, .d = d, .w = 128, .lb = 1, .lf = 0, .causal = true, .exact = false});  // causal
  }
  cs.push_back({.N = 1000, .d = 64, .w = 64, .mask_mode = 2});
  cs.push_back({.N = 1000, .d = 64, .w = 128, .lb = 1, .lf = 0, .causal = true, .exact = false, .mask_mode = 2});
  cs.push_back({.N = 517, .d = 64, .w = 16, .lb = 2, .lf = 1, .exact = false, .mask_mode = 1, .layout = 1});
  cs.push_back({.N = 517, .d = 64, .w = 24, .lb = 0, .lf = 2, .exact = true, .layout = 1});
  cs.push_back({.N = 400, .d = 64, .w = 100, .lb = 2, .lf = 0, .causal = true, .exact = true, .mask_mode = 1});
  cs.push_back({.N = 260, .d = 64, .w = 5, .lb = 1, .lf = 1});                  // small windows, many per tile
  cs.push_back({.N = 200, .d = 64, .w = 1, .lb = 1, .lf = 1});                  // w = 1
  cs.push_back({.N = 200, .d = 64, .w = 500, .lb = 1, .lf = 1, .exact = false});  // N < w: dense
  for (int64_t N : {1, 7, 130}) {
    cs.push_back({.B = 2, .H = 3, .N = N, .d = 64});
    cs.push_back({.B = 2, .H = 3, .N = N, .d = 64, .w = 64, .lb = 1, .lf = 0, .causal = true, .exact = false});
  }
  cs.push_back({.B = 1, .H = 2, .N = 150, .d = 40, .w = 32, .mask_mode = 1});                          // generic d
  cs.push_back({.B = 1, .H = 2, .N = 150, .d = 33, .w = 32, .causal = true, .exact = false, .layout = 2});  // scalar path
  cs.push_back({.B = 1, .H = 2, .N = 150, .d = 100, .w = 48, .lb = 1, .lf = 1, .layout = 1});
  return cs;
}

void run_suite(DType dt, bool tf32, double tol, uint32_t seed) {
  double worst = 0;
  for (const Case& c : gpu_cases()) {
    INFO("dtype=", colt5::dtype_name(dt), " tf32=", tf32, " N=", c.N, " d=", c.d, " w=", c.w, " look=", c.lb, "/",
         c.lf, " causal=", c.causal, " exact=", c.exact, " mask=", c.mask_mode, " layout=", c.layout);
    const double e = run_case(c, dt, tf32, seed++);
    CHECK(e <= tol);
    worst = std::max(worst, e);
  }
  std::printf("SUMMARY local attention %s%s worst relative error %.2e (tolerance %.0e)\n", colt5::dtype_name(dt),
              dt == DType::f32 ? (tf32 ? "/tf32" : "/3xtf32") : "", worst, tol);
}

constexpr double kTolTf32 = 2e-3, kTol3xTf32 = 2e-5, kTolBf16 = 1e-2, kTolF16 = 2e-3;

}  // namespace

TEST_CASE("cuda local attention f32 (TF32) vs CPU f64") { run_suite(DType::f32, true, kTolTf32, 100); }
TEST_CASE("cuda local attention f32 (3xTF32) vs CPU f64") { run_suite(DType::f32, false, kTol3xTf32, 200); }
TEST_CASE("cuda local attention bf16 vs CPU f64") { run_suite(DType::bf16, true, kTolBf16, 300); }
TEST_CASE("cuda local attention f16 vs CPU f64") { run_suite(DType::f16, true, kTolF16, 400); }

// Every alternative configuration of the f32 d = 64 kernels computes the same function.
TEST_CASE("cuda local attention f32 kernel variants vs CPU f64") {
  struct Reset {
    ~Reset() { colt5::kernels::cuda::set_local_attention_variants(-1, -1); }
  } reset;
  uint32_t seed = 500;
  namespace lc = colt5::kernels::cuda;
  for (int v = 0; v < std::max(lc::kLocalAttentionForwardVariants, lc::kLocalAttentionBackwardVariants); ++v) {
    lc::set_local_attention_variants(std::min(v, lc::kLocalAttentionForwardVariants - 1),
                                     std::min(v, lc::kLocalAttentionBackwardVariants - 1));
    for (const Case& c : gpu_cases()) {
      if (c.d != 64) continue;
      INFO("variant ", v, " N=", c.N, " w=", c.w, " look=", c.lb, "/", c.lf, " causal=", c.causal,
           " exact=", c.exact, " mask=", c.mask_mode, " layout=", c.layout);
      CHECK(run_case(c, DType::f32, true, seed++) <= kTolTf32);
    }
  }
  CHECK_THROWS_AS(lc::set_local_attention_variants(lc::kLocalAttentionForwardVariants, 0), colt5::Error);
  CHECK_THROWS_AS(lc::set_local_attention_variants(0, lc::kLocalAttentionBackwardVariants), colt5::Error);
  CHECK_THROWS_AS(lc::set_local_attention_variants(-2, 0), colt5::Error);
}

// The op on CUDA tensors: forward and all gradients through the tape against
// the op on the CPU in f64 (TF32 bound), and the fused op against the
// reference on the GPU (both f32 on the device).
TEST_CASE("cuda local_attention op vs CPU, and fused vs reference on the GPU") {
  using namespace colt5;
  const Device gpu = Device::cuda(0);
  struct OpCase {
    int64_t N;
    LocalAttentionOptions o;
    bool masked;
  };
  const OpCase cases[] = {{300, {.window = 64, .look_backward = 1, .look_forward = 1, .exact = true}, true},
                          {300, {.window = 128, .look_backward = 1, .causal = true}, true},
                          {77, {.window = 32, .look_backward = 2, .look_forward = 1}, false}};
  for (const OpCase& c : cases) {
    INFO("N=", c.N, " w=", c.o.window, " causal=", c.o.causal);
    Generator g(c.N);
    Tensor q = randn({2, 3, c.N, 64}, g, {.dtype = DType::f64}), k = randn({2, 3, c.N, 64}, g, {.dtype = DType::f64}),
           v = randn({2, 3, c.N, 64}, g, {.dtype = DType::f64}), G = randn({2, 3, c.N, 64}, g, {.dtype = DType::f64});
    // Round to f32 so both sides see the same inputs.
    q = q.to(DType::f32).to(DType::f64), k = k.to(DType::f32).to(DType::f64), v = v.to(DType::f32).to(DType::f64);
    Tensor mask = c.masked ? gt(rand({2, c.N}, g), 0.2) : Tensor();
    auto run = [&](Device dev, DType dt, bool fused) {
      Tensor qq = q.to(dt).to(dev).detach().requires_grad_(), kk = k.to(dt).to(dev).detach().requires_grad_(),
             vv = v.to(dt).to(dev).detach().requires_grad_();
      LocalAttentionOptions o = c.o;
      o.fused = fused;
      Tensor out = local_attention(qq, kk, vv, mask.defined() ? mask.to(dev) : Tensor(), o);
      sum(out * G.to(dt).to(dev)).backward();
      return std::vector<Tensor>{out.detach().to(Device::cpu()).to(DType::f64),
                                 qq.grad().to(Device::cpu()).to(DType::f64), kk.grad().to(Device::cpu()).to(DType::f64),
                                 vv.grad().to(Device::cpu()).to(DType::f64)};
    };
    auto rel = [](const Tensor& a, const Tensor& b) {
      return rel_err(a.to_vector<double>(), b.to_vector<double>());
    };
    const std::vector<Tensor> cpu = run(Device::cpu(), DType::f64, true), fused = run(gpu, DType::f32, true),
                              ref = run(gpu, DType::f32, false);
    const char* names[4] = {"out", "dq", "dk", "dv"};
    for (int i = 0; i < 4; ++i) {
      INFO(names[i]);
      const double ef = rel(fused[i], cpu[i]), er = rel(ref[i], cpu[i]);
      std::printf("  op N=%lld w=%lld causal=%d %s: fused vs cpu %.1e, gpu reference vs cpu %.1e\n", (long long)c.N,
                  (long long)c.o.window, c.o.causal, names[i], ef, er);
      CHECK(ef <= kTolTf32);
      CHECK(er <= kTolTf32);  // the reference's matmuls may use TF32 too
    }
  }
}
