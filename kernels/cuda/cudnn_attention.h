// Scaled dot-product attention through cuDNN's fused SDPA (cudnn-frontend
// graph API): forward saving the softmax statistics, and backward. Host API in
// plain C++ (no cuDNN types); compiled only when CMake finds cuDNN and the
// frontend headers (COLT5_WITH_CUDNN, option COLT5_CUDNN=AUTO|ON|OFF).
//
// The operands are those of our flash kernels (FlashAttentionParams,
// kernels/cpu/flash_attention.h): q (B, H, Nq, d), k and v (B, H, Nk, d),
// out and the gradients with their own strides, lse (B, H, Nq) f32 contiguous.
// cuDNN's "Stats" output is the same quantity as our lse (natural-log
// log-sum-exp of the scaled scores; tests/gpu/test_cudnn_attention.cpp checks
// they agree to 1e-3), so both backends fill the same buffers. What cuDNN can express, and therefore all these functions accept:
//   * dtype bf16 or f16 (cuDNN's SDPA has no f32), accumulation in f32;
//   * d a multiple of 8, d <= 256 (cuDNN may still decline a head dim for
//     the backward on a given GPU: the plan functions then return false);
//   * every pointer 16-byte aligned, the b/h/n strides multiples of 8
//     elements, the d stride 1 (any order of b, h, n: BHSD, BSHD, ...);
//   * no mask pointer and no null key/value (p.mask, p.null_k must be null);
//   * causal: bottom-right aligned like ours (query i sees keys
//     j <= i + Nk - Nq) and only with Nq <= Nk, so that every row sees a key
//     (cuDNN rejects bottom-right with Nq > Nk; fully masked rows are ours);
//   * key lengths (padding mask): optional device int32 arrays q_len (B),
//     kv_len (B); key j of batch b is visible iff j < kv_len[b]; q_len must
//     be Nq for every b and kv_len >= 1. Not with causal (cuDNN aligns the
//     causal diagonal to each sequence's own length, we to Nk). With lengths,
//     dk and dv rows j >= kv_len[b] are not guaranteed to be written: the
//     caller zeroes dk and dv first.
// Anything else: cudnn_attention_check returns the reason and the caller
// runs our kernels instead.
//
// Plans (the built cuDNN graphs) are cached process-wide by everything they
// are built from: device, dtype, B, H, Nq, Nk, d, scale, causal, lengths or
// not, and every stride; a shape seen before costs a map lookup. A failed
// build is cached too (as "unsupported", with cuDNN's message). cuDNN handles
// are created once per device. All calls are thread-safe (one mutex).
// Work is enqueued on `stream` (the device must be current); no sync.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "kernels/cpu/flash_attention.h"

struct CUstream_st;
typedef CUstream_st* cudaStream_t;

namespace colt5::kernels::cuda {

struct CudnnSeqLens {
  const int32_t* q_len = nullptr;   // (B) device, every entry Nq
  const int32_t* kv_len = nullptr;  // (B) device, 1 <= kv_len[b] <= Nk
};

// "" when p's static properties (dtype, d, strides, alignment, causal with
// Nq <= Nk, no mask, no null kv) fit cuDNN, else the reason. `backward` also
// checks dout, dq, dk, dv.
std::string cudnn_attention_check(const FlashAttentionParams& p, bool backward);

// Builds (first call; later calls find it in the cache) the plan for p's
// configuration. false when cuDNN cannot run it (reason in *why when given).
// *workspace_bytes: the device workspace execution needs.
bool cudnn_attention_forward_plan(const FlashAttentionParams& p, bool with_lengths, int device,
                                  size_t* workspace_bytes, std::string* why);
bool cudnn_attention_backward_plan(const FlashAttentionParams& p, bool with_lengths, int device,
                                   size_t* workspace_bytes, std::string* why);

// Writes out and lse. lens: nullptr for no padding mask. Throws colt5::Error
// when the plan is unsupported or cuDNN fails.
void cudnn_attention_forward(const FlashAttentionParams& p, const CudnnSeqLens* lens, void* workspace,
                             size_t workspace_bytes, int device, cudaStream_t stream);
// Writes dq, dk, dv from q, k, v, out, lse and dout.
void cudnn_attention_backward(const FlashAttentionParams& p, const CudnnSeqLens* lens, void* workspace,
                              size_t workspace_bytes, int device, cudaStream_t stream);

// Number of cached plans (supported or not), for tests of the cache.
size_t cudnn_attention_cached_plans();

// The cuDNN library version at run time (e.g. 91900), for reports.
int64_t cudnn_runtime_version();

}  // namespace colt5::kernels::cuda
