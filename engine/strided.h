// Iteration geometry for elementwise kernels over arbitrary strides, shared by
// the CPU and CUDA backends. Operand 0 is the output; every operand's strides
// are given in the output's index space (0 where the operand is broadcast).
// Size-1 dims are dropped and adjacent dims merged where every operand allows.
#pragma once
#include <array>
#include <cstdint>

#include "engine/tensor.h"

namespace colt5 {

template <int N>
struct Geometry {
  int ndim = 0;  // after coalescing; 0 means a single element
  int64_t numel = 1;
  int64_t shape[kMaxDims] = {};
  int64_t strides[N][kMaxDims] = {};
};

// Strides of t viewed with broadcast to `shape` (t's dims right-aligned).
Shape broadcast_strides(const Tensor& t, const Shape& shape, const char* op);
// NumPy broadcast of two shapes; throws naming op and both shapes.
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);

template <int N>
Geometry<N> make_geometry(const Shape& shape, const std::array<Shape, N>& strides) {
  Geometry<N> g;
  g.numel = shape_numel(shape);
  int nd = 0;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    if (nd > 0) {
      bool merge = true;
      for (int k = 0; k < N; ++k)
        if (g.strides[k][nd - 1] != strides[k][d] * shape[d]) merge = false;
      if (merge) {
        g.shape[nd - 1] *= shape[d];
        for (int k = 0; k < N; ++k) g.strides[k][nd - 1] = strides[k][d];
        continue;
      }
    }
    g.shape[nd] = shape[d];
    for (int k = 0; k < N; ++k) g.strides[k][nd] = strides[k][d];
    ++nd;
  }
  g.ndim = nd;
  return g;
}

}  // namespace colt5
