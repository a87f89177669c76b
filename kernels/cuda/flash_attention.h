// Fused flash-style attention on CUDA: host API (plain C++, no nvcc needed).
//
// Semantics, shapes and the parameter struct are shared with the CPU kernels:
// see kernels/cpu/flash_attention.h. Differences on the GPU:
//   * dtype f32, bf16 or f16 (q, k, v, out, null kv and all gradients share
//     it); accumulation, softmax and lse are f32.
//   * bf16/f16: tensor cores (mma.sync m16n8k16). f32 with allow_tf32 (the
//     default): TF32 tensor cores (m16n8k8), operands rounded to TF32 (10-bit
//     mantissa), f32 accumulation; relative L2 error vs f64 measured on an
//     H100 <= 6.8e-4 on outputs and all gradients (tested bound 2e-3, see
//     tests/gpu/test_flash_attention_kernels.cpp). f32 with allow_tf32 = false:
//     error-compensated 3xTF32 (a*b ~ ah*bh + ah*bl + al*bh), measured
//     <= 8.1e-6 (bound 2e-5), about 2x slower. bf16: <= 2.9e-3 (bound 1e-2);
//     f16: <= 3.3e-4 (bound 2e-3).
//   * head dims 32, 64, 128 are exact template instantiations; any other
//     d <= 256 runs the next larger one (32/64/128/256) with the extra columns
//     zero-padded in shared memory. d > 256 is rejected.
//   * 16-byte vector loads when pointers and strides allow; otherwise a scalar
//     path (any strides, any alignment).
//   * dq (and dnull_k, dnull_v) are accumulated in f32 in the workspace with
//     atomics, so the backward is not bitwise deterministic run to run.
//   * Nothing is allocated: pass a device workspace of at least
//     *_workspace_bytes(p) bytes. Work is enqueued on `stream`; no sync.
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/cpu/flash_attention.h"

struct CUstream_st;
typedef CUstream_st* cudaStream_t;

namespace colt5::kernels::cuda {

using colt5::kernels::AttnStrides;
using colt5::kernels::FlashAttentionParams;

// Workspace the forward needs (currently 0; query it anyway).
size_t flash_attention_forward_workspace_bytes(const FlashAttentionParams& p);
// Writes out and lse. All pointers are device pointers.
void flash_attention_forward(const FlashAttentionParams& p, void* workspace, size_t workspace_bytes,
                             cudaStream_t stream);

// Workspace the backward needs: f32 (B, H, Nq) x 2, f32 dq accumulator
// (B, H, Nq, d), and per-block null kv partial sums.
size_t flash_attention_backward_workspace_bytes(const FlashAttentionParams& p);
// Writes dq, dk, dv (and dnull_k, dnull_v).
void flash_attention_backward(const FlashAttentionParams& p, void* workspace, size_t workspace_bytes,
                              cudaStream_t stream);

// Tuning hook for benchmarks and tests: force a tile configuration of the
// bf16/f16 kernels at (padded) head dims 64 and 128. -1 (the default) chooses
// automatically; forward 0..2, backward 0..4 (3 and 4 compute dQ in a separate
// kernel without atomics; measured slower). Process-wide; other dtypes and
// head dims ignore it. Measurements are listed in flash_attention.cu.
void set_flash_attention_variants(int forward_variant, int backward_variant);

// ---- Unfused reference pieces (for benchmarks and tests; plain, not fast).
// Row softmax of scale * S: S (rows, n) f32 contiguous -> P (rows, n) in
// `dtype` (f32, bf16 or f16).
void reference_softmax_forward(DType dtype, const float* S, void* P, int64_t rows, int64_t n, float scale,
                               cudaStream_t stream);
// dS = scale * P * (dP - rowsum(P * dP)); P and dS in `dtype`, dP f32.
void reference_softmax_backward(DType dtype, const void* P, const float* dP, void* dS, int64_t rows, int64_t n,
                                float scale, cudaStream_t stream);

}  // namespace colt5::kernels::cuda
