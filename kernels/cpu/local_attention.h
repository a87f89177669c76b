// Fused local (windowed) attention: pointer-level kernels (no tensors, no
// autograd). SPEC §3.2.
//
// This header holds what the CPU kernels (this directory) and the CUDA kernels
// (kernels/cuda/local_attention.h includes it) share: the parameter struct,
// its validation, and the exact definition of which keys a query sees (the
// band functions below are also compiled into the CUDA kernels).
// kernels/cpu/local_attention.cpp is the readable reference.
//
// Shapes (element strides; the last dim d is always contiguous):
//   q, k, v      (B, H, N, d)
//   out          (B, H, N, d)
//   lse          (B, H, N)       contiguous; f64 when dtype is f64, else f32
//   mask         key mask, uint8 0/1, element (b, j) at mask[b * mask_stride_b + j]
//                (mask_stride_b = 0 broadcasts one row over the batch)
//   dout, dq, dk, dv like out, q, k, v.
//
// Semantics, for one (b, h). The sequence is cut into windows of w positions
// (the last one may be partial); query t lies in window i = t / w. Key j is
// visible from query t iff
//   (i - look_backward) * w <= j < (i + look_forward + 1) * w   (neighbour windows)
//   0 <= j < N                                                (never padding)
//   mask(b, j) != 0                                           (when a mask is given)
//   causal:  j <= t
//   exact:   t - j <= w * look_backward  and  j - t <= w * look_forward
// Without the mask, the visible keys of t form the interval
// [local_band_lo(t), local_band_hi(t)); both ends are non-decreasing in t,
// which is what lets a tile of queries read only the key tiles of its
// neighbourhood (and a tile of keys only the queries that see it).
//   s_j   = scale * <q_t, k_j>,  out_t = sum_j softmax(s)_j v_j  (visible keys)
//   lse_t = log sum_j exp(s_j)  (natural log).
//   A query with no visible key gets out_t = 0, lse_t = -inf, and contributes
//   zero to every gradient (no NaN anywhere).
//
// Backward (recomputing the scores from q, k and lse):
//   D_t = <dout_t, out_t>,  P = exp(s - lse),  dP = dout v^T,
//   dS = P * (dP - D),  dq = scale dS k,  dk = scale dS^T q,  dv = P^T dout.
//   All gradients are written (overwritten), never accumulated into.
#pragma once
#include <cmath>
#include <cstdint>

#include "engine/dtype.h"
#include "engine/error.h"
#include "kernels/cpu/flash_attention.h"  // AttnStrides, strides_bhnd, strides_bnhd

#if defined(__CUDACC__)
#define COLT5_LA_HD __host__ __device__ __forceinline__
#else
#define COLT5_LA_HD inline
#endif

namespace colt5::kernels {

// The band of one problem: everything the visibility of (t, j) depends on
// besides the key mask. I is int64_t on the host, int in the CUDA kernels.
template <class I>
struct LocalBand {
  I N = 0, w = 1;
  I lb = 1, lf = 0;  // look_backward, look_forward (clamped to the window count)
  bool causal = false, exact = false;
};

// First visible key of query t (ignoring the key mask).
template <class I>
COLT5_LA_HD I local_band_lo(const LocalBand<I>& b, I t) {
  const I i = t / b.w;
  I lo = (i - b.lb) * b.w;
  if (b.exact && t - b.w * b.lb > lo) lo = t - b.w * b.lb;
  return lo < 0 ? I(0) : lo;
}

// One past the last visible key of query t (ignoring the key mask).
template <class I>
COLT5_LA_HD I local_band_hi(const LocalBand<I>& b, I t) {
  const I i = t / b.w;
  I hi = (i + b.lf + 1) * b.w;
  if (b.N < hi) hi = b.N;
  if (b.causal && t + 1 < hi) hi = t + 1;
  if (b.exact && t + b.w * b.lf + 1 < hi) hi = t + b.w * b.lf + 1;
  return hi;
}

struct LocalAttentionParams {
  // Element type of q, k, v, out and all gradients.
  // CPU: f32, f64. CUDA: f32, bf16, f16 (accumulation in f32).
  DType dtype = DType::f32;
  int64_t B = 0, H = 0, N = 0, d = 0;
  int64_t window = 128;
  int look_backward = 1, look_forward = 0;
  bool causal = false, exact = false;
  double scale = 0.0;  // caller's choice, usually 1 / sqrt(d)
  // CUDA f32 only: TF32 tensor cores (true, the default) or error-compensated
  // 3xTF32 (f32-level accuracy, slower). See kernels/cuda/local_attention.h.
  bool allow_tf32 = true;

  // ---- forward inputs
  const void* q = nullptr;
  AttnStrides q_stride;
  const void* k = nullptr;
  AttnStrides k_stride;
  const void* v = nullptr;
  AttnStrides v_stride;
  const uint8_t* mask = nullptr;  // optional (B, N), see above
  int64_t mask_stride_b = 0;

  // ---- forward outputs (backward inputs)
  void* out = nullptr;
  AttnStrides out_stride;
  void* lse = nullptr;  // (B, H, N) contiguous, f64 for dtype f64 else f32

  // ---- backward
  const void* dout = nullptr;
  AttnStrides dout_stride;
  void* dq = nullptr;
  AttnStrides dq_stride;
  void* dk = nullptr;
  AttnStrides dk_stride;
  void* dv = nullptr;
  AttnStrides dv_stride;

  int64_t num_windows() const { return window > 0 ? (N + window - 1) / window : 0; }
  // look_backward / look_forward beyond the window count change nothing; the
  // band clamps them so that window arithmetic cannot overflow.
  template <class I>
  LocalBand<I> band() const {
    const int64_t nw = num_windows();
    LocalBand<I> b;
    b.N = I(N);
    b.w = I(window);
    b.lb = I(look_backward < nw ? look_backward : nw);
    b.lf = I(look_forward < nw ? look_forward : nw);
    b.causal = causal;
    b.exact = exact;
    return b;
  }
};

// Validates sizes, pointers and strides; throws colt5::Error naming `op` and
// the offending values. `backward` also checks the backward pointers.
inline void check_local_attention_params(const LocalAttentionParams& p, bool backward, const char* op) {
  COLT5_CHECK(p.B >= 0 && p.H >= 0 && p.N >= 0, op, ": sizes must be non-negative, got B=", p.B, " H=", p.H,
              " N=", p.N);
  COLT5_CHECK(p.d >= 1, op, ": head dim d must be >= 1, got d=", p.d);
  COLT5_CHECK(p.window >= 1, op, ": window must be >= 1, got ", p.window);
  COLT5_CHECK(p.look_backward >= 0 && p.look_forward >= 0, op,
              ": look_backward and look_forward must be >= 0, got ", p.look_backward, ", ", p.look_forward);
  COLT5_CHECK(std::isfinite(p.scale), op, ": scale must be finite, got ", p.scale);
  COLT5_CHECK(p.mask_stride_b >= 0, op, ": mask stride must be >= 0, got ", p.mask_stride_b);
  const bool any = p.B * p.H * p.N > 0;
  if (any) COLT5_CHECK(p.q && p.k && p.v && p.out && p.lse, op, ": q, k, v, out and lse must be non-null");
  auto check_strides = [&](const AttnStrides& s, const char* name) {
    COLT5_CHECK(s.b >= 0 && s.h >= 0 && s.n >= 0, op, ": ", name, " strides must be >= 0, got (", s.b, ", ", s.h,
                ", ", s.n, ")");
    if (p.N > 1) COLT5_CHECK(s.n >= p.d, op, ": ", name, " row stride must be >= d=", p.d, ", got ", s.n);
  };
  check_strides(p.q_stride, "q");
  check_strides(p.k_stride, "k");
  check_strides(p.v_stride, "v");
  check_strides(p.out_stride, "out");
  if (backward) {
    if (any) COLT5_CHECK(p.dout && p.dq && p.dk && p.dv, op, ": dout, dq, dk and dv must be non-null");
    check_strides(p.dout_stride, "dout");
    check_strides(p.dq_stride, "dq");
    check_strides(p.dk_stride, "dk");
    check_strides(p.dv_stride, "dv");
  }
}

// Number of (query, key) pairs inside the band (key mask ignored), summed over
// one (b, h): the work a fused kernel cannot avoid. For FLOP counts.
inline int64_t local_attention_band_pairs(const LocalAttentionParams& p) {
  const LocalBand<int64_t> b = p.band<int64_t>();
  int64_t n = 0;
  for (int64_t t = 0; t < p.N; ++t) {
    const int64_t lo = local_band_lo(b, t), hi = local_band_hi(b, t);
    if (hi > lo) n += hi - lo;
  }
  return n;
}

}  // namespace colt5::kernels

namespace colt5::kernels::cpu {

using colt5::kernels::LocalAttentionParams;

// Forward: writes out and lse. dtype f32 or f64. Parallel over
// (b, h, window) with colt5::parallel_for.
void local_attention_forward(const LocalAttentionParams& p);

// Backward: reads q, k, v, mask, out, lse, dout; writes dq, dk, dv.
// Deterministic (no atomics): dq over (b, h, query window), dk and dv over
// (b, h, key window).
void local_attention_backward(const LocalAttentionParams& p);

}  // namespace colt5::kernels::cpu
