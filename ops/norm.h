// Normalisations (SPEC §3): fused kernels (kernels/cpu/norm.h), differentiable
// w.r.t. x and the parameters. Parameters are optional (an undefined tensor
// means none); when given they have shape [n] (n = x's last dim) and x's dtype.
#pragma once
#include "engine/tensor.h"

namespace colt5 {

// LayerNorm over the last dim: (x - mean) / sqrt(var + eps) * weight + bias,
// biased variance (PyTorch's F.layer_norm with normalized_shape = [n]).
Tensor layer_norm(const Tensor& x, const Tensor& weight = {}, const Tensor& bias = {}, double eps = 1e-5);

// RMSNorm exactly as SPEC §3 (the colt5-attention package):
//   x / max(||x||_2, eps) * sqrt(n) * gamma      over the last dim.
// eps is the clamp of the L2 norm (1e-12 in the package), not an epsilon added
// to a mean square; it must be > 0.
Tensor rms_norm(const Tensor& x, const Tensor& gamma = {}, double eps = 1e-12);

// F.normalize(x, dim = dim): x / max(||x||_2, eps) along dim (any dim, any strides).
Tensor l2norm(const Tensor& x, int dim = -1, double eps = 1e-12);

}  // namespace colt5
