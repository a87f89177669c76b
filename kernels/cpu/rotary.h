// Rotary position embedding (SPEC §3), pointer level: no tensors, no
// autograd. The readable CPU reference for kernels/cuda/rotary.h (same params).
//
// x and out are (..., d) with the last dim contiguous; `rows` iterates over
// x.shape[:-1] (operand 0 = out, 1 = x, 2 = positions; element strides, the
// positions' strides 0 where they broadcast). With h = half (= len(inv_freq))
// and t = positions[row], for i < h:
//   f_i = t * inv_freq[i]                (in the compute type)
//   out[i]     = x[i]     cos f_i - x[i + h] sin f_i
//   out[i + h] = x[i + h] cos f_i + x[i]     sin f_i
// and out[c] = x[c] for 2h <= c < d (passed through). That is
// x cos(f) + rotate_half(x) sin(f) with f = [t inv_freq, t inv_freq] on the
// first 2h channels. inverse = true rotates by -f: the backward (the rotation
// is orthogonal, so its transpose is its inverse).
//
// Compute type C: f64 for f64 data, f32 for f32 / bf16 / f16 (the angle is an
// f32 product, as in the PyTorch package). positions and inv_freq are C.
#pragma once
#include <cstdint>

#include "engine/dtype.h"
#include "engine/strided.h"

namespace colt5::kernels {

struct RotaryParams {
  DType dtype = DType::f32;  // x / out: f32, f64, bf16, f16
  int64_t d = 0;             // features per row
  int64_t half = 0;          // len(inv_freq); 2 * half <= d
  bool inverse = false;      // rotate by -f (backward)
  Geometry<3> rows;          // over x.shape[:-1]: out, x, positions
  const void* positions = nullptr;  // compute type
  const void* inv_freq = nullptr;   // (half), compute type, contiguous
};

inline DType rotary_compute_dtype(DType t) { return t == DType::f64 ? DType::f64 : DType::f32; }

}  // namespace colt5::kernels

namespace colt5::kernels::cpu {

using colt5::kernels::RotaryParams;

// Writes out (must not overlap x).
void apply_rotary(const RotaryParams& p, void* out, const void* x);

}  // namespace colt5::kernels::cpu
