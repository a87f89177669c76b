// Indexing along one dim (PyTorch semantics), differentiable w.r.t. the float
// inputs (never the i64 indices). Out-of-range indices throw colt5::Error
// naming the op, the index value, the dim size and the shapes.
#pragma once
#include "engine/tensor.h"

namespace colt5 {

// x.select-like rows: out has x's shape with dim resized to idx.numel(); idx i64, 0-D or 1-D.
// Backward: the gradient rows are summed into zeros at idx (duplicates add up).
Tensor index_select(const Tensor& x, int dim, const Tensor& idx);

// out[i][j][k] = x[i][idx[i][j][k]][k] (dim = 1): idx (i64) has x's number of dims and
// idx.size(d) <= x.size(d) for d != dim; out has idx's shape.
Tensor gather(const Tensor& x, int dim, const Tensor& idx);

// Out of place: a copy of x with out[i][idx[i][j][k]][k] = src[i][j][k] (dim = 1). idx, src
// and x have the same number of dims; idx.size(d) <= src.size(d) for all d and <= x.size(d)
// for d != dim. Duplicate indices: the last one (in idx order along dim) wins.
// Gradients: to x where not overwritten, to src gathered at idx (like PyTorch, every
// duplicate gets the gradient of the position it wrote).
Tensor scatter(const Tensor& x, int dim, const Tensor& idx, const Tensor& src);
// Out of place: x plus src added at idx (duplicates add up, deterministically).
Tensor scatter_add(const Tensor& x, int dim, const Tensor& idx, const Tensor& src);

// Rows of weight (V, D) at idx (i64, any shape): out has shape idx.shape + [D].
// Backward: a deterministic scatter-add of the gradient rows into a zero (V, D)
// (parallel over the D columns, each index in order: no races).
Tensor embedding(const Tensor& weight, const Tensor& idx);

}  // namespace colt5
