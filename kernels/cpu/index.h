// Gather / scatter along one dim (CPU, pointer level: no tensors, no autograd).
// The readable reference for kernels/cuda/index.h.
//
// The loop runs over the index tensor's shape. `lines` is that shape with the
// indexed dim dropped; each line is one position of every other dim, and holds
// `m` = idx.size(dim) positions along the dim. Operands: 0 = dst, 1 = idx,
// 2 = src, each with its strides in that space (any strides: views, expanded
// dims with stride 0). Along the dim, idx and the direct operand advance by
// their dim strides; the indexed operand jumps to idx * its dim stride.
//   gather : dst[line, j] = src[line, idx[line, j]]          (src indexed)
//   scatter: dst[line, idx[line, j]] = src[line, j]  or  +=  (dst indexed)
// index_select and embedding are gathers whose idx is a 1-D index expanded
// (stride 0) over the other dims.
//
// Each line is handled by one thread, j in increasing order, and lines of a
// scatter's dst never overlap (dst must not alias itself across lines, e.g. a
// fresh tensor): no races, and duplicate indices resolve deterministically
// (last write wins; sums accumulate in j order) whatever the thread count.
// Indices must be in range: check them first with indices_in_range.
#pragma once
#include "engine/strided.h"

namespace colt5::kernels::cpu {

struct IndexGeometry {
  Geometry<3> lines;           // operand 0 = dst, 1 = idx, 2 = src
  int64_t m = 0;               // positions along the dim per line
  int64_t dim_stride[3] = {};  // strides along the dim of dst, idx, src
};

// Builds the geometry for a loop over `shape` (the idx shape) with dim `dim` indexed.
IndexGeometry make_index_geometry(const Shape& shape, int dim, const Shape& dst_strides, const Shape& idx_strides,
                                  const Shape& src_strides);

// Any dtype (elements are moved, not converted).
void gather(DType dt, void* dst, const int64_t* idx, const void* src, const IndexGeometry& g);
// accumulate: f32, f64, i64 (throws colt5::Error naming `op` otherwise); else any dtype.
void scatter(DType dt, void* dst, const int64_t* idx, const void* src, const IndexGeometry& g, bool accumulate,
             const char* op);

// True when every idx value is in [0, size); otherwise false, with *bad = the
// first offending value in element order.
bool indices_in_range(const int64_t* idx, const Geometry<1>& g, int64_t size, int64_t* bad);

}  // namespace colt5::kernels::cpu
