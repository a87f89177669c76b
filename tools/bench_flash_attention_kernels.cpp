// `colt5 bench attention`: every attention shape of issue 5 item 6 in one
// table, each with forward and forward+backward milliseconds and TFLOP/s for
//   ours     the fused kernels (kernels/cuda/flash_attention.cu, and the local
//            attention kernels for the local rows),
//   unfused  the reference on the same GPU: S = Q K^T (cuBLAS), P =
//            softmax(scale S) (kernel from flash_attention.cu), O = P V
//            (cuBLAS); backward dP = dO V^T, dV = P^T dO, dS = scale P (dP -
//            rowsum(P dP)), dQ = dS K, dK = dS^T Q. Local rows: the unfused
//            local_attention_reference op (tensors + autograd),
//   cuDNN    cuDNN's fused SDPA (kernels/cuda/cudnn_attention.h) on the same
//            buffers, where it can run the shape (bf16/f16, no null key),
// beside the target and PyTorch SDPA's figure on the H100.
// FLOPs: forward 4 B H Nq Nk' d (Nk' counts the null key; local rows count
// the attended pairs), forward+backward 3.5x that (five matmuls for two).
// Times are medians over --iters runs after warm-up, measured with CUDA
// events; the small "heavy" shapes rotate among 8 input sets so that repeated
// runs do not just hit L2. Rows marked "probe" are extra bf16 sizes that set
// the Auto rule of ops/attention.h (AttentionBackend).
#include "tools/bench_flash_attention_kernels.h"

#include <cstdio>
#include <cstring>
#include <string>

#ifdef COLT5_WITH_CUDA
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <tuple>
#include <vector>

#include "engine/cuda/check.h"
#include "engine/dtype.h"
#include "engine/tensor.h"
#include "kernels/cuda/flash_attention.h"
#include "ops/attention.h"
#include "tools/bench_local_attention.h"
#ifdef COLT5_WITH_CUDNN
#include "kernels/cuda/cudnn_attention.h"
#endif

namespace {

using colt5::DType;
using colt5::kernels::FlashAttentionParams;
namespace fc = colt5::kernels::cuda;

#ifndef CUBLAS_CHECK  // engine/cuda/check.h provides it
#define CUBLAS_CHECK(call)                                                                       \
  do {                                                                                           \
    cublasStatus_t st_ = (call);                                                                 \
    if (st_ != CUBLAS_STATUS_SUCCESS)                                                            \
      ::colt5::detail::fail(__FILE__, __LINE__, std::string("cuBLAS error in ") + #call + ": " + \
                                                    std::to_string(int(st_)));                   \
  } while (0)
#endif

struct Shape {
  const char* name;
  int64_t B, H, Nq, Nk, d;
  bool null_kv;
  DType dt;
  bool tf32;
  double target_ms;  // fwd+bwd target, 0 = none
  double sdpa_ms;    // PyTorch SDPA fwd+bwd on an H100 (from the issue), 0 = unknown
  bool causal = false;
  bool probe = false;  // extra size for the Auto rule
};

struct Dev {
  void* p = nullptr;
  explicit Dev(size_t bytes) {
    if (bytes) CUDA_CHECK(cudaMalloc(&p, bytes));
  }
  ~Dev() {
    if (p) cudaFree(p);
  }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
  template <class T = void> T* as() const { return static_cast<T*>(p); }
};

void fill_random(void* dptr, size_t n, DType dt, uint64_t seed, float sd) {
  std::vector<uint16_t> h16;
  std::vector<float> h32;
  uint64_t s = seed * 6364136223846793005ull + 1442695040888963407ull;
  auto next = [&]() {  // cheap normal-ish: sum of 4 uniforms, centred and scaled
    float acc = 0;
    for (int i = 0; i < 4; ++i) {
      s = s * 6364136223846793005ull + 1442695040888963407ull;
      acc += float((s >> 40) & 0xffffff) / float(1 << 24);
    }
    return (acc - 2.f) * 1.7320508f * sd;
  };
  if (dt == DType::f32) {
    h32.resize(n);
    for (auto& x : h32) x = next();
    CUDA_CHECK(cudaMemcpy(dptr, h32.data(), n * 4, cudaMemcpyHostToDevice));
  } else {
    h16.resize(n);
    for (auto& x : h16) x = dt == DType::bf16 ? colt5::float_to_bf16(next()) : colt5::float_to_f16(next());
    CUDA_CHECK(cudaMemcpy(dptr, h16.data(), n * 2, cudaMemcpyHostToDevice));
  }
}

std::vector<double> to_host(const void* dptr, size_t n, DType dt) {
  std::vector<double> out(n);
  if (dt == DType::f32) {
    std::vector<float> h(n);
    CUDA_CHECK(cudaMemcpy(h.data(), dptr, n * 4, cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < n; ++i) out[i] = h[i];
  } else {
    std::vector<uint16_t> h(n);
    CUDA_CHECK(cudaMemcpy(h.data(), dptr, n * 2, cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < n; ++i) out[i] = dt == DType::bf16 ? colt5::bf16_to_float(h[i]) : colt5::f16_to_float(h[i]);
  }
  return out;
}

double rel_err(const std::vector<double>& a, const std::vector<double>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

// Median of per-iteration event timings of fn(i).
template <class F>
double time_ms(int warmup, int iters, F&& fn) {
  for (int i = 0; i < warmup; ++i) fn(i);
  std::vector<cudaEvent_t> ev(2 * iters);
  for (auto& e : ev) CUDA_CHECK(cudaEventCreate(&e));
  for (int i = 0; i < iters; ++i) {
    CUDA_CHECK(cudaEventRecord(ev[2 * i]));
    fn(i);
    CUDA_CHECK(cudaEventRecord(ev[2 * i + 1]));
  }
  CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<float> ms(iters);
  for (int i = 0; i < iters; ++i) CUDA_CHECK(cudaEventElapsedTime(&ms[i], ev[2 * i], ev[2 * i + 1]));
  for (auto& e : ev) CUDA_CHECK(cudaEventDestroy(e));
  std::sort(ms.begin(), ms.end());
  return ms[iters / 2];
}

cudaDataType_t cuda_type(DType dt) {
  return dt == DType::f32 ? CUDA_R_32F : dt == DType::bf16 ? CUDA_R_16BF : CUDA_R_16F;
}

// Row-major batched C (m x n) = op(A) op(B) expressed for column-major cuBLAS.
// All matrices contiguous per batch. See the derivations at the call sites.
void gemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const void* A,
          DType at, int lda, long long sa, const void* B, int ldb, long long sb, void* C, DType ct, int ldc,
          long long sc, int batch) {
  const float one = 1.f, zero = 0.f;
  CUBLAS_CHECK(cublasGemmStridedBatchedEx(h, ta, tb, m, n, k, &one, A, cuda_type(at), lda, sa, B, cuda_type(at), ldb,
                                          sb, &zero, C, cuda_type(ct), ldc, sc, batch, CUBLAS_COMPUTE_32F,
                                          CUBLAS_GEMM_DEFAULT));
}

struct Row {
  std::string name;
  double fwd = 0, bwd = 0, fb = 0, ufwd = 0, ufb = 0, flops_fwd = 0, target = 0, sdpa = 0;
  double err_out = -1, err_dq = -1, err_dk = -1, err_dv = -1;
  double cfwd = 0, cfb = 0;  // cuDNN, 0 = not run
  std::string cudnn_note;    // why cuDNN did not run
  double cerr[4] = {-1, -1, -1, -1};  // cuDNN vs ours: out, dq, dk, dv
  double pairs = 0;          // local rows: attended pairs (for ps/pair); dense: B H Nq Nk'
  bool local = false;
  std::string dispatch;      // what attention() picks for this shape under Auto (no mask)
};

// What the op (ops/attention.h) runs for inputs of this shape with
// AttentionBackend::Auto, no key mask, gradients needed.
std::string auto_dispatch(const Shape& s) {
  using namespace colt5;
  const Device gpu = Device::cuda(0);
  const Options o{.dtype = s.dt, .device = gpu};
  Tensor q = empty({s.B, s.H, s.Nq, s.d}, o).requires_grad_(), k = empty({s.B, s.H, s.Nk, s.d}, o);
  AttentionOptions opt;
  opt.causal = s.causal;
  opt.allow_tf32 = s.tf32;
  opt.backend = AttentionBackend::Auto;
  if (s.null_kv) opt.null_k = opt.null_v = empty({s.H, s.d}, o);
  return attention_backend_name(attention_backend_for(q, k, k, {}, opt));
}

Row run_shape(const Shape& s, int iters, bool unfused, bool variants, cublasHandle_t handle) {
  const int64_t B = s.B, H = s.H, Nq = s.Nq, Nk = s.Nk, d = s.d, BH = B * H;
  const size_t es = colt5::dtype_size(s.dt);
  const int64_t Nk_eff = Nk + (s.null_kv ? 1 : 0);
  const bool small = double(BH * Nq * Nk_eff * d) < 5e9;
  const int nsets = small ? 8 : 1;
  const int it = small ? std::max(iters, 50) : iters;
  Row row;
  row.name = s.name;
  // Causal: the visible pairs (bottom-right aligned), not the full rectangle.
  double pairs = double(Nq) * double(Nk_eff);
  if (s.causal) {
    pairs = 0;
    for (int64_t i = 0; i < Nq; ++i) pairs += double(std::clamp<int64_t>(i + (Nk - Nq) + 1, 0, Nk));
  }
  row.pairs = double(BH) * pairs;
  row.flops_fwd = 4.0 * row.pairs * double(d);
  row.target = s.target_ms;
  row.sdpa = s.sdpa_ms;

  const size_t nq = size_t(BH * Nq * d), nk = size_t(BH * Nk * d);
  std::vector<std::unique_ptr<Dev>> q, k, v, o, dout, dq, dk, dv, lse;
  for (int i = 0; i < nsets; ++i) {
    q.emplace_back(new Dev(nq * es));
    k.emplace_back(new Dev(nk * es));
    v.emplace_back(new Dev(nk * es));
    o.emplace_back(new Dev(nq * es));
    dout.emplace_back(new Dev(nq * es));
    dq.emplace_back(new Dev(nq * es));
    dk.emplace_back(new Dev(nk * es));
    dv.emplace_back(new Dev(nk * es));
    lse.emplace_back(new Dev(size_t(BH * Nq) * 4));
    fill_random(q[i]->p, nq, s.dt, 10 * i + 1, 1.0f);
    fill_random(k[i]->p, nk, s.dt, 10 * i + 2, 1.0f);
    fill_random(v[i]->p, nk, s.dt, 10 * i + 3, 1.0f);
    fill_random(dout[i]->p, nq, s.dt, 10 * i + 4, 1.0f);
  }
  Dev nkv(s.null_kv ? size_t(H * d) * es : 0), nvv(s.null_kv ? size_t(H * d) * es : 0);
  Dev dnk(s.null_kv ? size_t(H * d) * es : 0), dnv(s.null_kv ? size_t(H * d) * es : 0);
  if (s.null_kv) {
    fill_random(nkv.p, H * d, s.dt, 101, 1.0f);
    fill_random(nvv.p, H * d, s.dt, 102, 1.0f);
  }

  auto params = [&](int i) {
    FlashAttentionParams p;
    p.dtype = s.dt;
    p.allow_tf32 = s.tf32;
    p.B = B, p.H = H, p.Nq = Nq, p.Nk = Nk, p.d = d;
    p.scale = 1.0 / std::sqrt(double(d));
    p.causal = s.causal;
    p.q = q[i]->p, p.k = k[i]->p, p.v = v[i]->p;
    p.q_stride = p.out_stride = p.dout_stride = p.dq_stride = colt5::kernels::strides_bhnd(H, Nq, d);
    p.k_stride = p.v_stride = p.dk_stride = p.dv_stride = colt5::kernels::strides_bhnd(H, Nk, d);
    if (s.null_kv) p.null_k = nkv.p, p.null_v = nvv.p, p.dnull_k = dnk.p, p.dnull_v = dnv.p;
    p.out = o[i]->p, p.lse = lse[i]->p;
    p.dout = dout[i]->p, p.dq = dq[i]->p, p.dk = dk[i]->p, p.dv = dv[i]->p;
    return p;
  };
  Dev ws(fc::flash_attention_backward_workspace_bytes(params(0)));
  const size_t ws_bytes = fc::flash_attention_backward_workspace_bytes(params(0));

  row.fwd = time_ms(3, it, [&](int i) { fc::flash_attention_forward(params(i % nsets), nullptr, 0, nullptr); });
  row.fb = time_ms(3, it, [&](int i) {
    const FlashAttentionParams p = params(i % nsets);
    fc::flash_attention_forward(p, nullptr, 0, nullptr);
    fc::flash_attention_backward(p, ws.p, ws_bytes, nullptr);
  });
  for (int i = 0; i < nsets; ++i) fc::flash_attention_forward(params(i), nullptr, 0, nullptr);
  row.bwd = time_ms(3, it, [&](int i) { fc::flash_attention_backward(params(i % nsets), ws.p, ws_bytes, nullptr); });
  CUDA_CHECK(cudaDeviceSynchronize());
  std::printf("  %-28s fused   fwd %8.3f ms  bwd %8.3f ms  fwd+bwd %8.3f ms\n", s.name, row.fwd, row.bwd, row.fb);
  std::fflush(stdout);

  // Every forced kernel configuration (half precision only): time each, and
  // compare its results with the automatic choice's on input set 0.
  if (variants && s.dt != DType::f32) {
    const FlashAttentionParams p0 = params(0);
    fc::set_flash_attention_variants(-1, -1);
    fc::flash_attention_forward(p0, nullptr, 0, nullptr);
    fc::flash_attention_backward(p0, ws.p, ws_bytes, nullptr);
    CUDA_CHECK(cudaDeviceSynchronize());
    const std::vector<double> ro = to_host(o[0]->p, nq, s.dt), rq = to_host(dq[0]->p, nq, s.dt),
                              rk = to_host(dk[0]->p, nk, s.dt), rv = to_host(dv[0]->p, nk, s.dt);
    for (int fv = 0; fv < 3; ++fv) {
      fc::set_flash_attention_variants(fv, -1);
      const double t = time_ms(3, it, [&](int i) { fc::flash_attention_forward(params(i % nsets), nullptr, 0, nullptr); });
      fc::flash_attention_forward(p0, nullptr, 0, nullptr);
      CUDA_CHECK(cudaDeviceSynchronize());
      std::printf("  %-28s   fwd variant %d: %8.3f ms (%.0f TFLOP/s)  out vs default %.1e\n", s.name, fv, t,
                  row.flops_fwd / (t * 1e-3) / 1e12, rel_err(to_host(o[0]->p, nq, s.dt), ro));
      std::fflush(stdout);
    }
    fc::set_flash_attention_variants(-1, -1);
    for (int i = 0; i < nsets; ++i) fc::flash_attention_forward(params(i), nullptr, 0, nullptr);
    for (int bv = 0; bv < 5; ++bv) {
      fc::set_flash_attention_variants(-1, bv);
      const double t =
          time_ms(3, it, [&](int i) { fc::flash_attention_backward(params(i % nsets), ws.p, ws_bytes, nullptr); });
      fc::flash_attention_backward(p0, ws.p, ws_bytes, nullptr);
      CUDA_CHECK(cudaDeviceSynchronize());
      std::printf("  %-28s   bwd variant %d: %8.3f ms (%.0f TFLOP/s)  dq %.1e dk %.1e dv %.1e vs default\n", s.name, bv,
                  t, 2.5 * row.flops_fwd / (t * 1e-3) / 1e12, rel_err(to_host(dq[0]->p, nq, s.dt), rq),
                  rel_err(to_host(dk[0]->p, nk, s.dt), rk), rel_err(to_host(dv[0]->p, nk, s.dt), rv));
      std::fflush(stdout);
    }
    fc::set_flash_attention_variants(-1, -1);
  }

  // cuDNN's fused SDPA on the same inputs (own outputs), checked against ours on set 0.
#ifdef COLT5_WITH_CUDNN
  if (s.dt == DType::f32) row.cudnn_note = "f32 n/a";
  else if (s.null_kv) row.cudnn_note = "null kv n/a";
  else {
    std::vector<std::unique_ptr<Dev>> co, clse, cdq, cdk, cdv;
    for (int i = 0; i < nsets; ++i) {
      co.emplace_back(new Dev(nq * es));
      clse.emplace_back(new Dev(size_t(BH * Nq) * 4));
      cdq.emplace_back(new Dev(nq * es));
      cdk.emplace_back(new Dev(nk * es));
      cdv.emplace_back(new Dev(nk * es));
    }
    auto cparams = [&](int i) {
      FlashAttentionParams p = params(i);
      p.out = co[i]->p, p.lse = clse[i]->p, p.dq = cdq[i]->p, p.dk = cdk[i]->p, p.dv = cdv[i]->p;
      return p;
    };
    size_t fws = 0, bws = 0;
    std::string why;
    const bool ok = fc::cudnn_attention_forward_plan(cparams(0), false, 0, &fws, &why) &&
                    fc::cudnn_attention_backward_plan(cparams(0), false, 0, &bws, &why);
    if (!ok) {
      row.cudnn_note = "declined";
      std::printf("  %-28s cuDNN declined: %s\n", s.name, why.c_str());
    } else {
      Dev cws(std::max(fws, bws));
      auto cf = [&](int i) { fc::cudnn_attention_forward(cparams(i % nsets), nullptr, cws.p, fws, 0, nullptr); };
      auto cb = [&](int i) { fc::cudnn_attention_backward(cparams(i % nsets), nullptr, cws.p, bws, 0, nullptr); };
      row.cfwd = time_ms(3, it, cf);
      row.cfb = time_ms(3, it, [&](int i) {
        cf(i);
        cb(i);
      });
      // Both backends on set 0, then compare.
      const FlashAttentionParams p0 = params(0);
      fc::flash_attention_forward(p0, nullptr, 0, nullptr);
      fc::flash_attention_backward(p0, ws.p, ws_bytes, nullptr);
      cf(0);
      cb(0);
      CUDA_CHECK(cudaDeviceSynchronize());
      row.cerr[0] = rel_err(to_host(co[0]->p, nq, s.dt), to_host(o[0]->p, nq, s.dt));
      row.cerr[1] = rel_err(to_host(cdq[0]->p, nq, s.dt), to_host(dq[0]->p, nq, s.dt));
      row.cerr[2] = rel_err(to_host(cdk[0]->p, nk, s.dt), to_host(dk[0]->p, nk, s.dt));
      row.cerr[3] = rel_err(to_host(cdv[0]->p, nk, s.dt), to_host(dv[0]->p, nk, s.dt));
      std::printf("  %-28s cuDNN   fwd %8.3f ms  fwd+bwd %8.3f ms  (cuDNN vs ours rel err: out %.1e dq %.1e dk %.1e "
                  "dv %.1e)\n",
                  s.name, row.cfwd, row.cfb, row.cerr[0], row.cerr[1], row.cerr[2], row.cerr[3]);
      std::fflush(stdout);
    }
  }
#else
  row.cudnn_note = "no cuDNN build";
#endif

  if (unfused && !s.probe) {
    // Keys with the null key copied in front (the unfused form needs the copy).
    const int64_t Nke = Nk_eff;
    const int m = int(Nke);
    std::unique_ptr<Dev> kc, vc;
    const void* K = k[0]->p;
    const void* V = v[0]->p;
    if (s.null_kv) {
      kc.reset(new Dev(size_t(BH * Nke * d) * es));
      vc.reset(new Dev(size_t(BH * Nke * d) * es));
      for (auto [dst, src, nul] : {std::tuple{kc.get(), k[0].get(), &nkv}, std::tuple{vc.get(), v[0].get(), &nvv}}) {
        CUDA_CHECK(cudaMemcpy2D(dst->as<char>() + d * es, Nke * d * es, src->p, Nk * d * es, Nk * d * es, BH,
                                cudaMemcpyDeviceToDevice));
        for (int64_t b = 0; b < B; ++b)  // null rows: (H, d) into row 0 of each (b, h)
          CUDA_CHECK(cudaMemcpy2D(dst->as<char>() + b * H * Nke * d * es, Nke * d * es, nul->p, d * es, d * es, H,
                                  cudaMemcpyDeviceToDevice));
      }
      K = kc->p;
      V = vc->p;
    }
    const DType pt = s.dt;  // P and dS in the input dtype, S and dP in f32
    Dev S(size_t(BH * Nq * Nke) * 4), P(size_t(BH * Nq * Nke) * es), dP(size_t(BH * Nq * Nke) * 4),
        dS(size_t(BH * Nq * Nke) * es), uo(nq * es), udq(nq * es), udk(size_t(BH * Nke * d) * es),
        udv(size_t(BH * Nke * d) * es);
    const long long sq = Nq * d, sk = Nke * d, ss = Nq * Nke;
    const float scale = float(1.0 / std::sqrt(double(d)));
    CUBLAS_CHECK(cublasSetMathMode(handle, s.dt == DType::f32 && s.tf32 ? CUBLAS_TF32_TENSOR_OP_MATH
                                                                       : CUBLAS_DEFAULT_MATH));
    const int Di = int(d), Nqi = int(Nq), bt = int(BH);
    auto fwd = [&]() {
      // S (Nq x Nk) = Q K^T  <=>  col-major S^T (Nk x Nq) = K^T(op T of col-major d x Nk) * Q (col-major d x Nq)
      gemm(handle, CUBLAS_OP_T, CUBLAS_OP_N, m, Nqi, Di, K, s.dt, Di, sk, q[0]->p, Di, sq, S.p, DType::f32, m, ss, bt);
      fc::reference_softmax_forward(pt, S.as<float>(), P.p, BH * Nq, Nke, scale, nullptr);
      // O (Nq x d) = P V  <=>  col-major O^T (d x Nq) = V^T (d x Nk) * P^T (Nk x Nq)
      gemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, Di, Nqi, m, V, s.dt, Di, sk, P.p, m, ss, uo.p, s.dt, Di, sq, bt);
    };
    auto bwd = [&]() {
      // dP = dO V^T (like S)
      gemm(handle, CUBLAS_OP_T, CUBLAS_OP_N, m, Nqi, Di, V, s.dt, Di, sk, dout[0]->p, Di, sq, dP.p, DType::f32, m,
           ss, bt);
      // dV (Nk x d) = P^T dO  <=>  col-major dV^T (d x Nk) = dO^T (d x Nq) * P (op T of col-major Nk x Nq)
      gemm(handle, CUBLAS_OP_N, CUBLAS_OP_T, Di, m, Nqi, dout[0]->p, s.dt, Di, sq, P.p, m, ss, udv.p, s.dt, Di, sk,
           bt);
      fc::reference_softmax_backward(pt, P.p, dP.as<float>(), dS.p, BH * Nq, Nke, scale, nullptr);
      // dQ = dS K (like O = P V); dK = dS^T Q (like dV)
      gemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, Di, Nqi, m, K, s.dt, Di, sk, dS.p, m, ss, udq.p, s.dt, Di, sq, bt);
      gemm(handle, CUBLAS_OP_N, CUBLAS_OP_T, Di, m, Nqi, q[0]->p, s.dt, Di, sq, dS.p, m, ss, udk.p, s.dt, Di, sk,
           bt);
    };
    const int uit = small ? it : std::max(3, iters / 2);
    row.ufwd = time_ms(2, uit, [&](int) { fwd(); });
    row.ufb = time_ms(2, uit, [&](int) {
      fwd();
      bwd();
    });
    CUDA_CHECK(cudaDeviceSynchronize());
    // Cross-check fused vs unfused on input set 0 (null key rows excluded from dk/dv).
    {
      const FlashAttentionParams p = params(0);
      fc::flash_attention_forward(p, nullptr, 0, nullptr);
      fc::flash_attention_backward(p, ws.p, ws_bytes, nullptr);
      CUDA_CHECK(cudaDeviceSynchronize());
      row.err_out = rel_err(to_host(o[0]->p, nq, s.dt), to_host(uo.p, nq, s.dt));
      row.err_dq = rel_err(to_host(dq[0]->p, nq, s.dt), to_host(udq.p, nq, s.dt));
      auto strip = [&](const void* buf) {  // drop the null rows of the unfused dk/dv
        std::vector<double> all = to_host(buf, size_t(BH * Nke * d), s.dt), r;
        r.reserve(nk);
        for (int64_t bh = 0; bh < BH; ++bh)
          r.insert(r.end(), all.begin() + (bh * Nke + (Nke - Nk)) * d, all.begin() + (bh + 1) * Nke * d);
        return r;
      };
      row.err_dk = rel_err(to_host(dk[0]->p, nk, s.dt), strip(udk.p));
      row.err_dv = rel_err(to_host(dv[0]->p, nk, s.dt), strip(udv.p));
    }
    std::printf("  %-28s unfused fwd %8.3f ms  fwd+bwd %8.3f ms  (fused vs unfused rel err: out %.1e dq %.1e dk %.1e "
                "dv %.1e)\n",
                s.name, row.ufwd, row.ufb, row.err_out, row.err_dq, row.err_dk, row.err_dv);
    std::fflush(stdout);
  }
  return row;
}

// "12.345" or "-" for 0.
std::string ms_cell(double ms) {
  char b[32] = "-";
  if (ms > 0) std::snprintf(b, sizeof b, "%.3f", ms);
  return b;
}
std::string tf_cell(double flops, double ms) {
  char b[32] = "-";
  if (ms > 0) std::snprintf(b, sizeof b, "%.0f", flops / (ms * 1e-3) / 1e12);
  return b;
}

}  // namespace

int bench_flash_attention_kernels(int argc, char** argv) {
  int iters = 10;
  bool unfused = true, variants = false, local = true, probes = true;
  std::string only;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--iters" && i + 1 < argc) iters = std::max(3, std::atoi(argv[++i]));
    else if (a == "--only" && i + 1 < argc) only = argv[++i];
    else if (a == "--no-unfused") unfused = false;
    else if (a == "--variants") variants = true;
    else if (a == "--no-local") local = false;
    else if (a == "--no-probes") probes = false;
    else {
      std::fprintf(stderr,
                   "usage: bench attention [--iters N] [--only TEXT] [--no-unfused] [--no-local] [--no-probes] "
                   "[--variants]\n");
      return 2;
    }
  }
  int dev = 0;
  cudaDeviceProp prop{};
  if (cudaGetDevice(&dev) != cudaSuccess || cudaGetDeviceProperties(&prop, dev) != cudaSuccess) {
    std::printf("bench attention: no CUDA device\n");
    return 0;
  }
  std::printf("attention benchmark on %s (%d SMs)", prop.name, prop.multiProcessorCount);
#ifdef COLT5_WITH_CUDNN
  std::printf(", cuDNN %lld\n", (long long)fc::cudnn_runtime_version());
#else
  std::printf(", built without cuDNN (COLT5_CUDNN)\n");
#endif
  const Shape shapes[] = {
      {"heavy 2x8x1024x(1024+1)x64", 2, 8, 1024, 1024, 64, true, DType::f32, true, 0.5, 0.82},
      {"heavy 2x8x1024x(1024+1)x64", 2, 8, 1024, 1024, 64, true, DType::f32, false, 0, 0},
      {"heavy 2x8x1024x(1024+1)x64", 2, 8, 1024, 1024, 64, true, DType::bf16, true, 0, 0},
      {"2x8x8192x8192x64", 2, 8, 8192, 8192, 64, false, DType::f32, true, 22, 27.7},
      {"2x8x8192x8192x64", 2, 8, 8192, 8192, 64, false, DType::bf16, true, 3.5, 2.19},
      {"4x16x4096x4096x128", 4, 16, 4096, 4096, 128, false, DType::bf16, true, 5.5, 3.59},
      {"probe 2x8x256x256x64", 2, 8, 256, 256, 64, false, DType::bf16, true, 0, 0, false, true},
      {"probe 2x8x512x512x64", 2, 8, 512, 512, 64, false, DType::bf16, true, 0, 0, false, true},
      {"probe 2x8x1024x1024x64", 2, 8, 1024, 1024, 64, false, DType::bf16, true, 0, 0, false, true},
      {"probe 2x8x2048x2048x64", 2, 8, 2048, 2048, 64, false, DType::bf16, true, 0, 0, false, true},
      {"probe 2x8x4096x4096x64", 2, 8, 4096, 4096, 64, false, DType::bf16, true, 0, 0, false, true},
      {"probe 2x8x1024x1024x128", 2, 8, 1024, 1024, 128, false, DType::bf16, true, 0, 0, false, true},
      {"probe causal 2x8x4096x4096x64", 2, 8, 4096, 4096, 64, false, DType::bf16, true, 0, 0, true, true},
      {"probe 2x8x8192x8192x64", 2, 8, 8192, 8192, 64, false, DType::f16, true, 0, 0, false, true},
  };
  cublasHandle_t handle;
  CUBLAS_CHECK(cublasCreate(&handle));
  std::vector<Row> rows;
  for (const Shape& s : shapes) {
    if (s.probe && !probes) continue;
    std::string tag = std::string(s.name) + " " + colt5::dtype_name(s.dt) +
                      (s.dt == DType::f32 ? (s.tf32 ? "/tf32" : "/3xtf32") : "");
    if (!only.empty() && tag.find(only) == std::string::npos) continue;
    Row r = run_shape(s, iters, unfused, variants, handle);
    r.name = tag;
    r.dispatch = auto_dispatch(s);
    rows.push_back(r);
  }
  cublasDestroy(handle);

  // Local windowed attention (tools/bench_local_attention.cpp), same table.
  if (local) {
    const LocalAttentionBenchSpec specs[] = {
        {"local non-causal w=64 look 1/1 2x8x32768x64", 2, 8, 32768, 64, 64, 1, 1, false, true, DType::f32, 3.0},
        {"local causal w=128 look 1/0 2x8x8192x64", 2, 8, 8192, 64, 128, 1, 0, true, false, DType::f32, 0},
        // the same kernels with every key in the band, at the heavy shape's size (per-pair yardstick)
        {"local all keys in band w=N=1024 2x8x1024x64", 2, 8, 1024, 64, 1024, 0, 0, false, false, DType::f32, 0},
    };
    for (const LocalAttentionBenchSpec& sp : specs) {
      const std::string tag = std::string(sp.name) + " " + colt5::dtype_name(sp.dtype) + "/tf32";
      if (!only.empty() && tag.find(only) == std::string::npos) continue;
      const LocalAttentionBenchResult lr = bench_local_attention_shape(sp, std::max(iters, 20), unfused);
      Row r;
      r.name = tag;
      r.local = true;
      r.pairs = lr.pairs;
      r.flops_fwd = 4.0 * double(lr.d) * lr.pairs;
      r.fwd = lr.fwd, r.bwd = lr.bwd, r.fb = lr.fb;
      r.ufwd = lr.ref_fwd, r.ufb = lr.ref_fb;
      r.target = lr.target;
      r.cudnn_note = "local n/a";
      rows.push_back(r);
    }
  }

  // Per attended pair, local vs the dense f32 (TF32) 8192 row and vs the same
  // local kernels with every key in the band: target within 1.5x.
  double dense_ps = 0, band_ps = 0;
  for (const Row& r : rows) {
    if (r.name == "2x8x8192x8192x64 f32/tf32") dense_ps = r.fb * 1e9 / r.pairs;
    if (r.name.rfind("local all keys in band", 0) == 0) band_ps = r.fb * 1e9 / r.pairs;
  }

  std::printf("\nms = median milliseconds; TF = TFLOP/s; f+b = forward+backward; unfused = matmul + softmax + matmul "
              "on the same GPU;\nAuto = what attention() runs for the shape by default (AttentionBackend::Auto, no "
              "mask)\n");
  std::printf("%-50s | %8s %5s %8s %5s | %8s %5s %8s %5s | %9s %5s %8s %5s | %6s %6s | %-5s | %s\n",
              "shape dtype", "ours fwd", "TF", "f+b", "TF", "unf fwd", "TF", "f+b", "TF", "cuDNN fwd", "TF", "f+b", "TF",
              "target", "SDPA", "Auto", "status");
  for (const Row& r : rows) {
    const double ffb = 3.5 * r.flops_fwd;
    std::string cf = ms_cell(r.cfwd), cfb = ms_cell(r.cfb);
    if (r.cfwd <= 0) cf = r.cudnn_note.empty() ? "-" : r.cudnn_note, cfb = "-";
    char tgt[16] = "-", sdpa[16] = "-";
    if (r.target > 0) std::snprintf(tgt, sizeof tgt, "%.2f", r.target);
    if (r.sdpa > 0) std::snprintf(sdpa, sizeof sdpa, "%.2f", r.sdpa);
    std::string status;
    if (r.target > 0) {
      status = r.fb <= r.target ? "ours met" : "ours MISSED";
      if (r.cfb > 0) status += r.cfb <= r.target ? ", cuDNN met" : ", cuDNN MISSED";
    }
    if (r.local && r.target > 0 && dense_ps > 0) {
      const double x = (r.fb * 1e9 / r.pairs) / dense_ps;
      char b[80];
      std::snprintf(b, sizeof b, "; per pair %.2fx the 8192 kernel (<= 1.5x %s)", x, x <= 1.5 ? "met" : "MISSED");
      status += b;
    }
    if (r.local && r.target > 0 && band_ps > 0) {
      const double x = (r.fb * 1e9 / r.pairs) / band_ps;
      char b[80];
      std::snprintf(b, sizeof b, ", %.2fx itself all-in-band (<= 1.5x %s)", x, x <= 1.5 ? "met" : "MISSED");
      status += b;
    }
    if (r.cfb > 0 && r.fb > 0) {
      char b[48];
      std::snprintf(b, sizeof b, "%scuDNN/ours f+b %.2f", status.empty() ? "" : "; ", r.cfb / r.fb);
      status += b;
    }
    std::printf("%-50s | %8s %5s %8s %5s | %8s %5s %8s %5s | %9s %5s %8s %5s | %6s %6s | %-5s | %s\n",
                r.name.c_str(),
                ms_cell(r.fwd).c_str(), tf_cell(r.flops_fwd, r.fwd).c_str(), ms_cell(r.fb).c_str(),
                tf_cell(ffb, r.fb).c_str(), ms_cell(r.ufwd).c_str(), tf_cell(r.flops_fwd, r.ufwd).c_str(),
                ms_cell(r.ufb).c_str(), tf_cell(ffb, r.ufb).c_str(), cf.c_str(), tf_cell(r.flops_fwd, r.cfwd).c_str(),
                cfb.c_str(), tf_cell(ffb, r.cfb).c_str(), tgt, sdpa, r.local ? "ours" : r.dispatch.c_str(),
                status.c_str());
  }
  return 0;
}

#else  // !COLT5_WITH_CUDA

int bench_flash_attention_kernels(int, char**) {
  std::printf("bench_flash_attention_kernels: colt5 was built without CUDA; nothing to measure\n");
  return 0;
}

#endif
