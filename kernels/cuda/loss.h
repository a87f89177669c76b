// Cross-entropy with fused log-softmax, CUDA (pointer level: no tensors, no
// autograd). Plain C++ header: includable without nvcc. Declarations only for
// now; implemented in kernels/cuda/loss.cu.
//
// Same contract as kernels/cpu/loss.h (the reference): losses and lse per row,
// 0 loss and 0 gradient on ignored rows, +inf loss for a -inf target logit,
// dlogits written (not accumulated). An out-of-range target must raise
// colt5::Error naming cross_entropy, the value and C (e.g. a device flag read
// back after the launch). Pointers are on `device`; work goes to that
// device's current stream.
#pragma once
#include <cstdint>

namespace colt5::kernels::cuda {

void cross_entropy_forward(float* losses, float* lse, const float* logits, const int64_t* target, int64_t rows,
                           int64_t C, int64_t ignore_index, int device);
void cross_entropy_forward(double* losses, double* lse, const double* logits, const int64_t* target, int64_t rows,
                           int64_t C, int64_t ignore_index, int device);
void cross_entropy_backward(float* dlogits, const float* dlosses, const float* logits, const float* lse,
                            const int64_t* target, int64_t rows, int64_t C, int64_t ignore_index, int device);
void cross_entropy_backward(double* dlogits, const double* dlosses, const double* logits, const double* lse,
                            const int64_t* target, int64_t rows, int64_t C, int64_t ignore_index, int device);

}  // namespace colt5::kernels::cuda
