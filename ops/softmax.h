// Softmax and log-softmax along one dim: fused kernels (kernels/cpu/softmax.h),
// differentiable.
//
// A line that is entirely -inf (fully masked) gives softmax 0 everywhere and
// log_softmax -inf everywhere, never NaN, and passes a zero gradient. -inf
// entries in a line with some finite entry give 0 / -inf as usual.
// Any dim, any strides: contiguous inputs are used in place (a middle dim is
// handled by the kernel), a view whose softmax dim is the stride-1 one (a
// transposed tensor) too; other views are made contiguous first.
#pragma once
#include "engine/tensor.h"

namespace colt5 {

Tensor softmax(const Tensor& x, int dim);
Tensor log_softmax(const Tensor& x, int dim);

namespace detail {
// How a kernel working along one dim of a tensor sees it: a contiguous buffer
// of shape `kshape` laid out as (outer, n, inner), n along the op's dim.
// Shared by the ops that work along one dim (softmax, l2norm).
struct LineLayout {
  int dim = 0;           // the op's dim, wrapped
  bool swapped = false;  // buffers are t.transpose(dim, -1): lines are rows (inner = 1)
  int64_t outer = 1, n = 1, inner = 1;
  Shape kshape;          // shape of the kernel buffers
  // A tensor of the input's shape as a contiguous kernel buffer (no autograd; no copy when already laid out).
  Tensor pack(const Tensor& t) const;
  // A kernel buffer viewed back in the input's shape (a view, no copy).
  Tensor unpack(const Tensor& buf) const;
};
// x must have at least one dim; throws naming op when dim is out of range.
LineLayout line_layout(const Tensor& x, int dim, const char* op);
}  // namespace detail

}  // namespace colt5
