// Routing ops of the CoLT5 layers (SPEC §2): gathering routed tokens and
// writing results back, fused CPU / CUDA kernels (kernels/{cpu,cuda}/routing.h),
// differentiable, deterministic forward and backward on both devices.
//
// Shapes: x / dst (B, N, D); idx i64 (B, n) or (B, R, n) with values in [0, N);
// scores the same shape as idx. Float operands: f32, f64, bf16, f16 (scores
// are converted to x's dtype). Inputs are read in place when their last dim
// is contiguous (any batch / token strides); indices and scores are made
// contiguous (they are small). Out-of-range indices throw colt5::Error naming
// the op, the value and N (on CUDA the check reads one flag back: a sync).
#pragma once
#include "engine/tensor.h"

namespace colt5 {

// x (B,N,D); idx i64 (B,n) or (B,R,n) -> (B,n,D) / (B,R,n,D). Backward: scatter-add into zeros (deterministic).
// Repeated indices (within or across routes) are summed in a fixed order on both devices; the GPU path is
// fastest when indices are distinct within each (b, r) row, which router top-k indices always are.
Tensor gather_tokens(const Tensor& x, const Tensor& idx);
// Same, times scores (same shape as idx) in one pass; gradients to x and scores.
Tensor gather_tokens_scaled(const Tensor& x, const Tensor& idx, const Tensor& scores);
// mask (B,N) bool gathered -> (B,n) / (B,R,n).
Tensor gather_mask(const Tensor& mask, const Tensor& idx);
// SPEC §2 route_back: out = dst with out[b, idx[b,j]] = routed[b,j] (overwrite).
// dst (B,N,D), routed (B,n,D), idx (B,n). Gradient to routed at those positions, to dst elsewhere.
// Indices within a row should be distinct (router indices are); a repeated index is not an error: the
// last j wins on both devices (as in a sequential loop) and the overwritten rows get zero gradient.
Tensor route_back(const Tensor& dst, const Tensor& routed, const Tensor& idx);
// route_back of routed * scores[..., None] fused (one pass), gradients to dst, routed, scores.
Tensor route_back_scaled(const Tensor& dst, const Tensor& routed, const Tensor& idx, const Tensor& scores);

}  // namespace colt5
