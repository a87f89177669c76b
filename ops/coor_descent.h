// Coordinate descent routing (SPEC §1): a soft top-k over the last dim.
//
//   out = coor_descent(s, k, mask, {.n_iters = 20, .eps = 0.03, .eps_init = 4, .eps_decay = 0.7});
//
// s (..., n) scores; k a scalar or one value per row (shape s.shape[:-1], or
// with a trailing 1), real and > 0; mask bool broadcastable to s (true = keep)
// or undefined. Entries of out are in [0, 1], each row sums to about k,
// masked entries are 0, fully masked rows are all 0 (zero gradients too).
// Differentiable w.r.t. s and (when it requires grad) k. f32/f64 on CPU, f32
// on GPU; f16/bf16 inputs are computed in f32.
#pragma once
#include "engine/tensor.h"

namespace colt5 {

struct CoorDescentOptions {
  int n_iters = 20;
  double eps = 0.03;
  double eps_init = 0;  // <= 0: no eps-scaling start (e starts at eps)
  double eps_decay = 1.0;
  // Accepted for compatibility with the PyTorch package; the fused backward
  // keeps O(rows * n_iters) scalars and needs no checkpoints.
  int checkpoint_segments = 1;
  // Use the composition of primitive ops (coor_descent_reference) instead of
  // the fused kernels.
  bool reference = false;
};

Tensor coor_descent(const Tensor& s, const Tensor& k, const Tensor& mask = {}, const CoorDescentOptions& opt = {});
Tensor coor_descent(const Tensor& s, double k, const Tensor& mask = {}, const CoorDescentOptions& opt = {});

// The same loop written with primitive ops so that autograd differentiates
// it: the oracle for the fused kernels in tests, and a fallback.
Tensor coor_descent_reference(const Tensor& s, const Tensor& k, const Tensor& mask = {},
                              const CoorDescentOptions& opt = {});

}  // namespace colt5
