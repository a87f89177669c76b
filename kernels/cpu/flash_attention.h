// Fused flash-style attention: pointer-level kernels (no tensors, no autograd).
//
// This header holds the semantics shared by the CPU kernels (this directory)
// and the CUDA kernels (kernels/cuda/flash_attention.h includes it): the
// parameter struct, its validation, and the exact definition of what is
// computed. kernels/cpu/flash_attention.cpp is the readable reference.
//
// Shapes (element strides; the last dim d is always contiguous):
//   q            (B, H, Nq, d)
//   k, v         (B, H, Nk, d)
//   out          (B, H, Nq, d)
//   lse          (B, H, Nq)      contiguous; f64 when dtype is f64, else f32
//   mask         key mask, uint8 0/1, element (b, h, j) at
//                mask[b * mask_stride_b + h * mask_stride_h + j]
//                (mask_stride_h = 0 broadcasts a (B, Nk) mask over heads,
//                 mask_stride_b = 0 broadcasts over the batch)
//   null_k/null_v (H, d) contiguous, optional
//   dout, dq, dk, dv like out, q, k, v; dnull_k, dnull_v (H, d) contiguous.
//
// Semantics, for one (b, h) and query row i:
//   s_j  = scale * <q_i, k_j>                        for real keys j = 0..Nk-1
//   key j is visible iff mask(b,h,j) != 0 (or no mask) and, when causal,
//         j <= i + (Nk - Nq)          (bottom-right aligned: the last query
//                                       sees every key; with Nq == Nk this is
//                                       the usual j <= i)
//   with null kv, a null key s_null = scale * <q_i, null_k[h]> with value
//         null_v[h] is logically prepended as key 0; it is always visible
//         (never masked, never hidden by causal).
//   out_i = sum_j softmax(s)_j v_j over the visible keys (null included),
//   lse_i = log sum_j exp(s_j) over the visible keys (natural log).
//   A row with no visible key (possible only without null kv) gets out_i = 0,
//   lse_i = -inf, and contributes zero to every gradient (no NaN anywhere).
//
// Backward (FlashAttention-2 style, recomputing the scores from q, k and lse):
//   D_i = <dout_i, out_i>,  P = exp(s - lse),  dP = dout v^T,
//   dS = P * (dP - D),  dq = scale dS k,  dk = scale dS^T q,  dv = P^T dout,
//   dnull_k[h] = scale sum_{b,i} dS_null(b,i) q_i,
//   dnull_v[h] = sum_{b,i} P_null(b,i) dout_i.
//   All gradients are written (overwritten), never accumulated into.
#pragma once
#include <cmath>
#include <cstdint>

#include "engine/dtype.h"
#include "engine/error.h"

namespace colt5::kernels {

// Element strides of a (B, H, N, d) operand; the d dimension has stride 1.
struct AttnStrides {
  int64_t b = 0, h = 0, n = 0;
};

// Contiguous (B, H, N, d).
inline AttnStrides strides_bhnd(int64_t H, int64_t N, int64_t d) { return {H * N * d, N * d, d}; }
// A (B, N, H, d) buffer (e.g. a projection output) viewed as (B, H, N, d).
inline AttnStrides strides_bnhd(int64_t N, int64_t H, int64_t d) { return {N * H * d, d, H * d}; }

struct FlashAttentionParams {
  // Element type of q, k, v, out, null_k, null_v and of all gradients.
  // CPU: f32, f64. CUDA: f32, bf16, f16 (accumulation in f32).
  DType dtype = DType::f32;
  int64_t B = 0, H = 0, Nq = 0, Nk = 0, d = 0;
  double scale = 0.0;  // caller's choice, usually 1 / sqrt(d)
  bool causal = false;
  // CUDA f32 only: use TF32 tensor cores (rounded operands, f32 accumulation).
  // When false, f32 runs an error-compensated 3xTF32 path (f32-level accuracy,
  // slower). See kernels/cuda/flash_attention.h for the measured tolerances.
  bool allow_tf32 = true;

  // ---- forward inputs
  const void* q = nullptr;  // (B, H, Nq, d)
  AttnStrides q_stride;
  const void* k = nullptr;  // (B, H, Nk, d)
  AttnStrides k_stride;
  const void* v = nullptr;  // (B, H, Nk, d)
  AttnStrides v_stride;
  const uint8_t* mask = nullptr;  // optional, see above
  int64_t mask_stride_b = 0, mask_stride_h = 0;
  const void* null_k = nullptr;  // optional (H, d); null_k and null_v come together
  const void* null_v = nullptr;  // optional (H, d)

  // ---- forward outputs (backward inputs)
  void* out = nullptr;  // (B, H, Nq, d)
  AttnStrides out_stride;
  void* lse = nullptr;  // (B, H, Nq) contiguous, f64 for dtype f64 else f32

  // ---- backward
  const void* dout = nullptr;  // (B, H, Nq, d)
  AttnStrides dout_stride;
  void* dq = nullptr;  // (B, H, Nq, d)
  AttnStrides dq_stride;
  void* dk = nullptr;  // (B, H, Nk, d)
  AttnStrides dk_stride;
  void* dv = nullptr;  // (B, H, Nk, d)
  AttnStrides dv_stride;
  void* dnull_k = nullptr;  // (H, d), required when null_k is given
  void* dnull_v = nullptr;  // (H, d)

  bool has_null() const { return null_k != nullptr; }
};

// Validates sizes, pointers and strides; throws colt5::Error naming `op` and
// the offending values. `backward` also checks the backward pointers.
inline void check_flash_attention_params(const FlashAttentionParams& p, bool backward, const char* op) {
  COLT5_CHECK(p.B >= 0 && p.H >= 0 && p.Nq >= 0 && p.Nk >= 0, op,
              ": sizes must be non-negative, got B=", p.B, " H=", p.H, " Nq=", p.Nq, " Nk=", p.Nk);
  COLT5_CHECK(p.d >= 1, op, ": head dim d must be >= 1, got d=", p.d);
  COLT5_CHECK(std::isfinite(p.scale), op, ": scale must be finite, got ", p.scale);
  COLT5_CHECK((p.null_k == nullptr) == (p.null_v == nullptr), op,
              ": null_k and null_v must be given together");
  COLT5_CHECK(p.mask_stride_b >= 0 && p.mask_stride_h >= 0, op, ": mask strides must be >= 0, got b=",
              p.mask_stride_b, " h=", p.mask_stride_h);
  if (p.B * p.H * p.Nq > 0) {
    COLT5_CHECK(p.q && p.out && p.lse, op, ": q, out and lse must be non-null");
  }
  if (p.B * p.H * p.Nk > 0) {
    COLT5_CHECK(p.k && p.v, op, ": k and v must be non-null");
  }
  auto check_strides = [&](const AttnStrides& s, const char* name) {
    COLT5_CHECK(s.b >= 0 && s.h >= 0 && s.n >= 0, op, ": ", name, " strides must be >= 0, got (", s.b, ", ", s.h,
                ", ", s.n, ")");
  };
  check_strides(p.q_stride, "q");
  check_strides(p.k_stride, "k");
  check_strides(p.v_stride, "v");
  check_strides(p.out_stride, "out");
  if (p.Nq > 1) COLT5_CHECK(p.q_stride.n >= p.d && p.out_stride.n >= p.d, op, ": q/out row stride must be >= d=", p.d);
  if (p.Nk > 1) COLT5_CHECK(p.k_stride.n >= p.d && p.v_stride.n >= p.d, op, ": k/v row stride must be >= d=", p.d);
  if (backward) {
    if (p.B * p.H * p.Nq > 0) COLT5_CHECK(p.dout && p.dq, op, ": dout and dq must be non-null");
    if (p.B * p.H * p.Nk > 0) COLT5_CHECK(p.dk && p.dv, op, ": dk and dv must be non-null");
    if (p.has_null()) COLT5_CHECK(p.dnull_k && p.dnull_v, op, ": dnull_k and dnull_v must be non-null with null kv");
    check_strides(p.dout_stride, "dout");
    check_strides(p.dq_stride, "dq");
    check_strides(p.dk_stride, "dk");
    check_strides(p.dv_stride, "dv");
  }
}

}  // namespace colt5::kernels

namespace colt5::kernels::cpu {

using colt5::kernels::AttnStrides;
using colt5::kernels::FlashAttentionParams;

// Forward: writes out and lse. dtype f32 or f64. Parallel over
// (b, h, query tile) with colt5::parallel_for.
void flash_attention_forward(const FlashAttentionParams& p);

// Backward: reads q, k, v, mask, null kv, out, lse, dout; writes dq, dk, dv
// (and dnull_k, dnull_v with null kv). Deterministic (no atomics).
void flash_attention_backward(const FlashAttentionParams& p);

}  // namespace colt5::kernels::cpu
