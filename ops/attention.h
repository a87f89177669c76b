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
//   * CUDA bf16 / f16 may run on cuDNN's fused SDPA instead of our kernels
//     (AttentionBackend below; only in builds with COLT5_WITH_CUDNN). Both
//     compute the same function: inputs cuDNN cannot express exactly always
//     run ours.
// Bad shapes or dtypes throw colt5::Error naming `attention` and the shapes.
#pragma once
#include <cstdint>
#include <string>

#include "engine/tensor.h"

namespace colt5 {

// Who runs the fused CUDA op for bf16 / f16 inputs.
//
// cuDNN is eligible (kernels/cuda/cudnn_attention.h) only when all of these
// hold; otherwise our kernels run, whatever the backend says:
//   - a build with cuDNN (attention_cudnn_compiled()), a CUDA tensor, bf16 or
//     f16, fused = true, no null key/value;
//   - d a multiple of 8 and <= 256; q, k, v 16-byte aligned with b/h/n
//     strides that are multiples of 8 elements (any layout: BHND, BNHD, ...);
//   - causal only with Nq <= Nk (bottom-right aligned like ours);
//   - a key mask only when it is a per-batch prefix (keys 0..len_b-1 kept,
//     the same for every head, len_b >= 1) and, with causal, only when it
//     keeps every key; checking it copies the mask to the host (one sync);
//   - cuDNN builds a plan for the configuration (forward and, when a
//     gradient is needed, backward).
//
// Auto, the measured rule: cuDNN for eligible inputs WITHOUT a key mask and
// with B*H*Nq*Nk >= kAttentionCudnnMinPairs (2^22), ours otherwise. Measured
// with `colt5 bench attention` on an H100 80GB HBM3 (cuDNN 9.14), bf16
// unless noted, forward+backward ms of the kernels, ours -> cuDNN (ratio),
// two runs where they differ:
//   2x8x256x256x64        0.049 -> 0.028  (0.57)   below the threshold
//   2x8x512x512x64        0.075 -> 0.038  (0.50); 0.077 -> 0.071 (0.91)
//   2x8x1024x1024x64      0.133 -> 0.058  (0.44)
//   2x8x1024x1024x128     0.217 -> 0.082  (0.38)
//   2x8x2048x2048x64      0.396 -> 0.151  (0.38)
//   2x8x4096x4096x64      1.309 -> 0.532  (0.41)   causal: 1.038 -> 0.534 (0.51)
//   2x8x8192x8192x64      5.077 -> 1.983  (0.39)   f16: 5.142 -> 1.989 (0.39)
//   4x16x4096x4096x128    9.412 -> 3.529  (0.37)
// cuDNN's kernels were faster at every eligible size; the threshold is the
// smallest size of the first run (2x8x512x512 = 2^22 pairs, faster in both
// runs, by only 9% in the second). Below it the GPU time is under ~50 us and the host-side cost of a cuDNN execution (not
// in these event timings) was not measured, so our kernels stay. Masked
// calls stay ours under Auto because the eligibility check reads the mask
// back to the host (a sync) and CoLT5's routed masks are rarely prefixes;
// ask for Cudnn to have them checked.
inline constexpr int64_t kAttentionCudnnMinPairs = int64_t(1) << 22;
enum class AttentionBackend : uint8_t {
  Default,  // the process-wide choice (set_attention_backend), initially Auto
  Auto,     // cuDNN for eligible mask-free inputs of >= 2^22 pairs (measured faster, above)
  Ours,     // always our flash kernels
  Cudnn,    // cuDNN for every eligible input
};

struct AttentionOptions {
  bool causal = false;       // bottom-right aligned: query i sees key j <= i + (Nk - Nq)
  double scale = 0;          // 0: d^-0.5
  Tensor null_k, null_v;     // optional (H, d): one always-visible null key/value per head, logically key 0
  bool allow_tf32 = true;    // CUDA f32 only
  bool fused = true;         // false: attention_reference
  AttentionBackend backend = AttentionBackend::Default;  // CUDA bf16 / f16 only, see above
};

// The process-wide backend that AttentionBackend::Default means (initially
// Auto). Passing Default throws.
void set_attention_backend(AttentionBackend backend);
AttentionBackend attention_backend();
const char* attention_backend_name(AttentionBackend backend);
// True when this build has the cuDNN backend (COLT5_WITH_CUDNN).
bool attention_cudnn_compiled();
// What attention(q, k, v, key_mask, opt) would run right now with these
// inputs (Ours or Cudnn; CPU and unfused calls answer Ours), with the reason
// in *why when cuDNN was not chosen. Same selector as the op itself.
AttentionBackend attention_backend_for(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_mask = {},
                                       const AttentionOptions& opt = {}, std::string* why = nullptr);
// q (B,H,Nq,d), k/v (B,H,Nk,d) (any strides with the last dim contiguous; else made contiguous),
// key_mask bool (B,Nk) or (B,H,Nk) or undefined (true = keep). Rows with no visible key output 0.
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_mask = {}, const AttentionOptions& opt = {});
// The same math with matmul + softmax + matmul (masked with -MAX, null kv concatenated, fully masked rows -> 0): the oracle.
Tensor attention_reference(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_mask = {}, const AttentionOptions& opt = {});

}  // namespace colt5
