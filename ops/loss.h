// Losses: fused kernels (kernels/cpu/loss.h), differentiable w.r.t. the logits.
#pragma once
#include <cstdint>

#include "engine/tensor.h"

namespace colt5 {

enum class Reduction { none, mean, sum };

// Cross-entropy with the class dim last: logits (N, C) or (B, ..., C), f32/f64;
// target i64 of the logits' shape without the last dim ((N) or (B, ...)).
// Per position: -log softmax(logits)[target], with the log-softmax fused in.
// Positions whose target is ignore_index contribute 0 and get no gradient.
//   none: the per-position losses, shaped like target (ignored ones are 0);
//   sum:  their sum;
//   mean: their sum over the number of non-ignored targets, 0 when every
//         target is ignored (PyTorch gives NaN there; we never do).
// A target outside [0, C) (other than ignore_index) throws colt5::Error
// naming cross_entropy, the value and C. A target logit of -inf gives loss
// +inf (no NaN).
Tensor cross_entropy(const Tensor& logits, const Tensor& target, int64_t ignore_index = -100,
                     Reduction reduction = Reduction::mean);

}  // namespace colt5
