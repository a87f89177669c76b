// LayerNorm, RMSNorm and l2norm, CUDA (pointer level: no tensors, no
// autograd). Plain C++ header: includable without nvcc. Declarations only for
// now; implemented in kernels/cuda/norm.cu.
//
// Same contract as kernels/cpu/norm.h (the reference): shapes, saved buffers
// (mean/rstd, norm), eps meaning, null pointers for absent parameters or
// gradients not wanted, gradients written (not accumulated). Parameter
// gradients must be deterministic (fixed reduction order). Pointers are on
// `device`; work goes to that device's current stream.
#pragma once
#include <cstdint>

namespace colt5::kernels::cuda {

void layer_norm_forward(float* out, float* mean, float* rstd, const float* x, const float* weight,
                        const float* bias, int64_t rows, int64_t n, double eps, int device);
void layer_norm_forward(double* out, double* mean, double* rstd, const double* x, const double* weight,
                        const double* bias, int64_t rows, int64_t n, double eps, int device);
void layer_norm_backward(float* dx, float* dweight, float* dbias, const float* dout, const float* x,
                         const float* weight, const float* mean, const float* rstd, int64_t rows, int64_t n,
                         int device);
void layer_norm_backward(double* dx, double* dweight, double* dbias, const double* dout, const double* x,
                         const double* weight, const double* mean, const double* rstd, int64_t rows, int64_t n,
                         int device);

void rms_norm_forward(float* out, float* norm, const float* x, const float* gamma, int64_t rows, int64_t n,
                      double eps, int device);
void rms_norm_forward(double* out, double* norm, const double* x, const double* gamma, int64_t rows, int64_t n,
                      double eps, int device);
void rms_norm_backward(float* dx, float* dgamma, const float* dout, const float* x, const float* gamma,
                       const float* norm, int64_t rows, int64_t n, double eps, int device);
void rms_norm_backward(double* dx, double* dgamma, const double* dout, const double* x, const double* gamma,
                       const double* norm, int64_t rows, int64_t n, double eps, int device);

void l2norm_forward(float* out, float* norm, const float* x, int64_t outer, int64_t n, int64_t inner, double eps,
                    int device);
void l2norm_forward(double* out, double* norm, const double* x, int64_t outer, int64_t n, int64_t inner,
                    double eps, int device);
void l2norm_backward(float* dx, const float* dout, const float* x, const float* norm, int64_t outer, int64_t n,
                     int64_t inner, double eps, int device);
void l2norm_backward(double* dx, const double* dout, const double* x, const double* norm, int64_t outer, int64_t n,
                     int64_t inner, double eps, int device);

}  // namespace colt5::kernels::cuda
