// Top-k over the last dim.
//
// hard_topk: values and indices (i64), sorted descending, ties to the lower
// index, identical on CPU and GPU; differentiable w.r.t. the values (the
// gradient lands at the selected positions).
//
// topk (SPEC §1, differentiable top-k): c = coor_descent(x, min(k * ratio, n));
// gates = c + stop_grad(1 - c) (value 1, gradient of c); y = x * gates;
// values, indices = hard_topk(y, k); c and gates are returned gathered at the
// indices. With non_differentiable it is a plain hard top-k.
#pragma once
#include "engine/tensor.h"

namespace colt5 {

struct TopK {
  Tensor values;   // (..., k)
  Tensor indices;  // (..., k) i64
};

TopK hard_topk(const Tensor& x, int64_t k);

struct TopkOptions {
  double coor_descent_k_ratio = 9.0 / 8.0;
  int n_iters = 20;
  double eps = 0.1;
  double eps_init = 0;  // <= 0: none
  double eps_decay = 1.0;
  Tensor mask;  // bool, broadcastable to x, or undefined
  bool non_differentiable = false;
};

struct DiffTopK {
  Tensor values;               // (..., k) x * gates at the indices
  Tensor indices;              // (..., k) i64
  Tensor coor_descent_values;  // (..., k) c at the indices (undefined when non_differentiable)
  Tensor gates;                // (..., k) gates at the indices (undefined when non_differentiable)
};

DiffTopK topk(const Tensor& x, int64_t k, const TopkOptions& opt = {});

}  // namespace colt5
