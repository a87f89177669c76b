// Softmax and log-softmax along one dim, CUDA (pointer level: no tensors, no
// autograd). Plain C++ header: includable without nvcc. Declarations only for
// now; implemented in kernels/cuda/softmax.cu.
//
// Same contract as kernels/cpu/softmax.h (the reference): (outer, n, inner)
// contiguous layout, a fully -inf line gives softmax 0 / log_softmax -inf and
// a zero gradient, dx is written (not accumulated). Pointers are on `device`;
// work goes to that device's current stream.
#pragma once
#include <cstdint>

namespace colt5::kernels::cuda {

void softmax_forward(float* out, const float* x, int64_t outer, int64_t n, int64_t inner, int device);
void softmax_forward(double* out, const double* x, int64_t outer, int64_t n, int64_t inner, int device);
void log_softmax_forward(float* out, const float* x, int64_t outer, int64_t n, int64_t inner, int device);
void log_softmax_forward(double* out, const double* x, int64_t outer, int64_t n, int64_t inner, int device);

void softmax_backward(float* dx, const float* dout, const float* out, int64_t outer, int64_t n, int64_t inner,
                      int device);
void softmax_backward(double* dx, const double* dout, const double* out, int64_t outer, int64_t n, int64_t inner,
                      int device);
void log_softmax_backward(float* dx, const float* dout, const float* out, int64_t outer, int64_t n, int64_t inner,
                          int device);
void log_softmax_backward(double* dx, const double* dout, const double* out, int64_t outer, int64_t n,
                          int64_t inner, int device);

}  // namespace colt5::kernels::cuda
