// Joining and splitting along a dim (differentiable).
#pragma once
#include <vector>

#include "engine/tensor.h"

namespace colt5 {

// Concatenates along dim: same dtype, device and number of dims, equal sizes off dim.
// One copy into slices of the output; backward: narrow slices of the gradient.
Tensor cat(const std::vector<Tensor>& tensors, int dim);
// Joins equal-shaped tensors along a new dim (dim in [-(n+1), n] for n-dim inputs).
Tensor stack(const std::vector<Tensor>& tensors, int dim);

// Views (no copies): chunks of `size` along dim, the last one smaller when size does
// not divide the dim; a dim of size 0 gives one empty chunk.
std::vector<Tensor> split(const Tensor& x, int64_t size, int dim = 0);
// Views with the given sizes along dim (they must sum to the dim's size).
std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int dim = 0);
// PyTorch chunk: split into pieces of ceil(size / n) along dim (so possibly fewer than n).
std::vector<Tensor> chunk(const Tensor& x, int64_t n, int dim = 0);

}  // namespace colt5
