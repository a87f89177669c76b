// Normalisations: LayerNorm, RMSNorm and l2norm, pointer-level CPU kernels
// (no tensors, no autograd). The readable reference for kernels/cuda/norm.h.
//
// Shapes (all contiguous; rows = product of the leading dims, n = last dim):
//   layer_norm / rms_norm:  x, out, dx, dout (rows, n); weight, bias, gamma
//                           and their gradients (n); mean, rstd, norm (rows).
//   l2norm: x, out, dx, dout (outer, n, inner), normalised along n (element
//           (o, k, i) at (o * n + k) * inner + i); norm (outer, inner).
//
// Semantics, for one row x_0..x_{n-1}:
//   layer_norm: mean = sum x / n,  var = sum (x - mean)^2 / n (biased),
//               rstd = 1 / sqrt(var + eps),
//               out  = (x - mean) * rstd * weight + bias
//               (weight, bias: null means 1, 0). Saves mean and rstd.
//   rms_norm:   SPEC §3 RMSNorm, r = ||x||_2,
//               out = x / max(r, eps) * sqrt(n) * gamma   (gamma null means 1;
//               eps is the clamp of the norm, 1e-12 in the SPEC). Saves r.
//   l2norm:     F.normalize: out = x / max(r, eps) along n. Saves r.
//
// Backward (x̂ = (x - mean) * rstd; g = dout * weight; every gradient is
// written, never accumulated into; a null gradient pointer is not computed):
//   layer_norm: dx = rstd * (g - mean(g) - x̂ * mean(g * x̂)),
//               dweight = sum_rows dout * x̂,  dbias = sum_rows dout.
//   rms_norm / l2norm, with u = dout * gamma * scale (scale = sqrt(n) for
//   rms_norm, 1 for l2norm):
//               r >= eps: dx = (u - x * <u, x> / r^2) / r
//               r <  eps: dx = u / eps          (the clamp is active)
//               dgamma = sum_rows dout * x * scale / max(r, eps).
//   At r == eps the norm's gradient passes, as torch's clamp_min does.
//
// Sums of f32 are accumulated in f64. Rows are spread over the thread pool.
// Parameter gradients (sums over rows) are reduced in fixed chunks of rows
// whose partial sums are added in chunk order: the result does not depend on
// the thread count.
#pragma once
#include <cstdint>

namespace colt5::kernels::cpu {

void layer_norm_forward(float* out, float* mean, float* rstd, const float* x, const float* weight,
                        const float* bias, int64_t rows, int64_t n, double eps);
void layer_norm_forward(double* out, double* mean, double* rstd, const double* x, const double* weight,
                        const double* bias, int64_t rows, int64_t n, double eps);
void layer_norm_backward(float* dx, float* dweight, float* dbias, const float* dout, const float* x,
                         const float* weight, const float* mean, const float* rstd, int64_t rows, int64_t n);
void layer_norm_backward(double* dx, double* dweight, double* dbias, const double* dout, const double* x,
                         const double* weight, const double* mean, const double* rstd, int64_t rows, int64_t n);

void rms_norm_forward(float* out, float* norm, const float* x, const float* gamma, int64_t rows, int64_t n,
                      double eps);
void rms_norm_forward(double* out, double* norm, const double* x, const double* gamma, int64_t rows, int64_t n,
                      double eps);
void rms_norm_backward(float* dx, float* dgamma, const float* dout, const float* x, const float* gamma,
                       const float* norm, int64_t rows, int64_t n, double eps);
void rms_norm_backward(double* dx, double* dgamma, const double* dout, const double* x, const double* gamma,
                       const double* norm, int64_t rows, int64_t n, double eps);

void l2norm_forward(float* out, float* norm, const float* x, int64_t outer, int64_t n, int64_t inner, double eps);
void l2norm_forward(double* out, double* norm, const double* x, int64_t outer, int64_t n, int64_t inner,
                    double eps);
void l2norm_backward(float* dx, const float* dout, const float* x, const float* norm, int64_t outer, int64_t n,
                     int64_t inner, double eps);
void l2norm_backward(double* dx, const double* dout, const double* x, const double* norm, int64_t outer, int64_t n,
                     int64_t inner, double eps);

}  // namespace colt5::kernels::cpu
