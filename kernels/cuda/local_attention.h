// Fused local (windowed) attention on CUDA: host API (plain C++, no nvcc needed).
//
// Semantics, shapes and the parameter struct are shared with the CPU kernels:
// see kernels/cpu/local_attention.h. On the GPU:
//   * dtype f32, bf16 or f16 (q, k, v, out and all gradients share it);
//     accumulation, softmax and lse are f32 (lse is f32 for every dtype).
//   * f32 with allow_tf32 (the default): TF32 tensor cores (mma.m16n8k8),
//     operands rounded to TF32, f32 accumulation. allow_tf32 = false:
//     error-compensated 3xTF32 (f32-level accuracy, about 2x slower).
//     bf16/f16: mma.m16n8k16. Relative L2 error vs the CPU in f64 measured
//     on an H100: TF32 <= 8.3e-4 (tested bound 2e-3), 3xTF32 <= 3.5e-6
//     (2e-5), bf16 <= 3.0e-3 (1e-2), f16 <= 3.9e-4 (2e-3); see
//     tests/gpu/test_local_attention.cpp.
//   * head dims 32, 64, 128 are exact instantiations; other d <= 128 run the
//     next larger one with the extra columns zero in shared memory; d > 128 is
//     rejected (use the reference).
//   * The forward runs one block per (tile of query rows, b*h) over the key
//     tiles of the tile's band only; inside, each warp skips the 8-key MMA
//     tiles outside its own rows' band. The backward runs one block per
//     (tile of keys, b*h) over the query tiles that see it, with dq added
//     with atomics (so it is not bitwise deterministic run to run).
//   * Work is enqueued on `stream`; nothing is allocated, no sync.
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/cpu/local_attention.h"

struct CUstream_st;
typedef CUstream_st* cudaStream_t;

namespace colt5::kernels::cuda {

using colt5::kernels::LocalAttentionParams;

// Writes out and lse (f32). All pointers are device pointers.
void local_attention_forward(const LocalAttentionParams& p, cudaStream_t stream);

// Device workspace the backward needs: f32 (B, H, N) x 2, plus an f32 dq
// accumulator (B, H, N, d) for bf16/f16.
size_t local_attention_backward_workspace_bytes(const LocalAttentionParams& p);
// Writes dq, dk, dv.
void local_attention_backward(const LocalAttentionParams& p, void* workspace, size_t workspace_bytes,
                              cudaStream_t stream);

// Tuning hook for benchmarks and tests: force a kernel configuration of the
// f32 (TF32) kernels at head dim 64: forward 0 .. kLocalAttentionForwardVariants-1,
// backward 0 .. kLocalAttentionBackwardVariants-1; -1 (the default) chooses
// automatically (variant 0). Process-wide; other dtypes and head dims ignore
// it. The configurations and their timings are listed in local_attention.cu.
constexpr int kLocalAttentionForwardVariants = 9, kLocalAttentionBackwardVariants = 9;
void set_local_attention_variants(int forward_variant, int backward_variant);

}  // namespace colt5::kernels::cuda
