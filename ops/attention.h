// Scaled dot-product attention (SPEC §3 Attend, §3.1 null key/value) as one
// fused op over the flash kernels (kernels/cpu/flash_attention.h for the exact
// semantics, kernels/cuda/flash_attention.h for the GPU tolerances), and the
// same math composed from primitive ops as its oracle.
//
//   Tensor o = attention(q, k, v, mask, {.causal = true, .null_k = nk, .null_v = nv});
//
// Shapes: q (B, H, Nq, d), k and v (B, H, Nk, d), Nq != Nk allowed; output
// (B, H, Nq, d) with q's dtype and device.
//
// Fused op:
//   * dtypes: CPU f32, f64 (bf16 / f16 are computed in f32 and converted
//     back); CUDA f32 (TF32 tensor cores unless allow_tf32 = false), bf16,
//     f16 (f32 accumulation). f64 on CUDA throws (use fused = false).
//   * operands are read in place whenever their last dim is contiguous (e.g.
//     q from a (B, N, H, d) projection permuted to (B, H, N, d)); other layouts
//     are copied once. The output and the gradients of q, k, v are allocated
//     with the memory layout of q, k, v respectively (a q permuted from
//     (B, N, H, d) gives an output that is (B, N, H, d) in memory, so merging
//     the heads afterwards is a view, not a copy).
//   * the forward keeps the row log-sum-exp; the backward recomputes the
//     scores tile by tile (never an Nq x Nk matrix) and returns gradients to
//     q, k, v, null_k and null_v (whichever require grad).
//   * CUDA: B * H <= 65535, d <= 256 (kernel limits; violations throw).
//     The CUDA backward accumulates dq with atomics: not bitwise reproducible
//     run to run (CPU is).
// Bad shapes or dtypes throw colt5::Error naming `attention` and the shapes.
#pragma once
#include "engine/tensor.h"

namespace colt5 {

struct AttentionOptions {
  bool causal = false;       // bottom-right aligned: query i sees key j <= i + (Nk - Nq)
  double scale = 0;          // 0: d^-0.5
  Tensor null_k, null_v;     // optional (H, d): one always-visible null key/value per head, logically key 0
  bool allow_tf32 = true;    // CUDA f32 only
  bool fused = true;         // false: attention_reference
};
// q (B,H,Nq,d), k/v (B,H,Nk,d) (any strides with the last dim contiguous; else made contiguous),
// key_mask bool (B,Nk) or (B,H,Nk) or undefined (true = keep). Rows with no visible key output 0.
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_mask = {}, const AttentionOptions& opt = {});
// The same math with matmul + softmax + matmul (masked with -MAX, null kv concatenated, fully masked rows -> 0): the oracle.
Tensor attention_reference(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_mask = {}, const AttentionOptions& opt = {});

}  // namespace colt5
