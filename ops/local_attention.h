// Local (windowed) attention, SPEC §3.2: the light branch of CoLT5 attention.
//
//   out = local_attention(q, k, v, key_mask, {.window = 64, .look_backward = 1, .look_forward = 1, .exact = true});
//
// q, k, v (B, H, N, d): the last dim contiguous, any other strides. key_mask
// bool (B, N) (true = keep) or undefined. The sequence is cut into windows of
// `window` positions (the last one may be partial); query t in window
// i = t / window sees the keys j of windows i - look_backward ... i +
// look_forward with j < N (never a padding position), key_mask[j] true, with
// `causal` also j <= t, and with `exact` also t - j <= window * look_backward
// and j - t <= window * look_forward. Softmax over those keys of
// scale * <q_t, k_j> (scale 0 means d^-0.5) weighs v. A query with no visible
// key outputs zeros (no NaN, zero gradients).
//
// As used by CoLT5: non-causal exact, window = light_window_size / 2, look 1/1
// (query t sees keys |t - j| <= window); causal not exact, window =
// light_window_size, look_backward 1 (window i sees all of window i - 1 and
// the keys <= t of window i).
//
// Fused (the default): one kernel per direction, a query tile reads only the
// key tiles of its neighbourhood, nothing padded or copied; the forward saves
// the log-sum-exp and the backward recomputes the tiles. Gradients to q, k and
// v. CPU: f32, f64. CUDA: f32 (TF32 tensor cores, f32 accumulation), bf16,
// f16 (f32 accumulation); head dim d <= 128 on CUDA. f16/bf16 inputs on the
// CPU are computed in f32.
#pragma once
#include <cstdint>

#include "engine/tensor.h"

namespace colt5 {

struct LocalAttentionOptions {
  int64_t window = 128;   // w
  int look_backward = 1;  // windows looked back
  int look_forward = 0;   // windows looked forward
  bool causal = false;
  bool exact = false;     // exact window size: additionally t - j <= w*look_backward and j - t <= w*look_forward
  double scale = 0;       // 0: d^-0.5
  bool fused = true;      // false: local_attention_reference
};

// q, k, v (B,H,N,d) (last dim contiguous, any other strides); key_mask bool (B,N) or undefined (true = keep).
Tensor local_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_mask = {},
                       const LocalAttentionOptions& opt = {});

// The same with primitive ops (pad to windows, gather neighbourhood, matmul +
// masked softmax + matmul, crop): the oracle for the fused kernels, and a
// fallback. Differentiable through autograd; any device the primitives run on.
Tensor local_attention_reference(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_mask = {},
                                 const LocalAttentionOptions& opt = {});

}  // namespace colt5
