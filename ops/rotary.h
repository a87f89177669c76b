// Rotary position embedding (SPEC §3) at arbitrary positions: one fused kernel
// forward and backward (kernels/{cpu,cuda}/rotary.h), differentiable w.r.t. x.
#pragma once
#include "engine/tensor.h"

namespace colt5 {

// inv_freq[i] = 1 / 10000^(2i/dim), i < dim/2 (f32 tensor on device). Computed in
// f32 like the PyTorch package's buffer (f64 math when opt.dtype is f64).
Tensor rotary_inv_freq(int64_t dim, Options opt = {});
// x (..., n, d) with d >= 2*inv_freq.size (the first rot = 2*len(inv_freq) channels rotated, the rest passed through);
// positions: i64 or float, shape (n) or broadcastable to x.shape[:-1] (e.g. (B,1,n) for (B,H,n,d) or (B,R,n) routed positions);
// freqs(t) = [t*inv_freq, t*inv_freq]; rot(x) = x*cos(f) + rotate_half(x)*sin(f), rotate_half([x1,x2]) = [-x2, x1].
// x: f32, f64, bf16, f16 (angles in f64 for f64, else f32: f32(t) * f32(inv_freq) as in the package).
// Read in place when the last dim is contiguous; the output has x's memory layout.
// Backward (w.r.t. x only): the same kernel rotating by -f. positions and inv_freq get no gradient.
Tensor apply_rotary(const Tensor& x, const Tensor& positions, const Tensor& inv_freq);

}  // namespace colt5
