// Matrix products (differentiable, f32/f64, CPU through engine/blas.h, CUDA
// through kernels/cuda/gemm.h).
#pragma once
#include "engine/tensor.h"

namespace colt5 {

// NumPy / PyTorch matmul:
//   1-D . 1-D -> scalar (dot); 2-D . 2-D -> (M, N); a 1-D first operand is a
//   row (1, K) and a 1-D second operand a column (K, 1), the added dim removed
//   from the result; >= 3-D: batch dims (all but the last two) broadcast.
// Operands whose last two dims are row-major or column-major (e.g. a transposed
// view) are read in place (gemm transpose flag + leading dim); other layouts
// are copied to contiguous first. A batched first operand times a 2-D second
// one is folded into a single (batch * M, K) . (K, N) product when its batch
// and row dims merge without a copy.
// Backward: dA = dC B^T, dB = A^T dC (the same matmul, transposes as views);
// the tape sums them over broadcast batch dims.
Tensor matmul(const Tensor& a, const Tensor& b);

// y = x W^T + bias: x (..., in), W (out, in), bias (out) or undefined; y (..., out).
// x is flattened to (rows, in) without a copy when its leading dims merge, W is
// read transposed in place, the bias initialises the output (gemm beta = 1).
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = {});

}  // namespace colt5
