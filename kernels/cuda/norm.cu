// CUDA LayerNorm, RMSNorm and l2norm, forward and backward (contract in
// kernels/cpu/norm.h, the reference).
//
// Row kernels: a group of G threads per row (a warp for rows up to 2048, a
// block of 256 beyond), strided over the row (coalesced), group reductions
// with warp shuffles; the row's re-reads come from L1/L2. Sums of f32 in f64.
// Parameter gradients (sums over rows) are deterministic: rows are cut into
// fixed chunks (a function of the shape only), each (chunk, column) partial
// is summed by one thread in row order, and a second kernel adds the chunks
// in order. l2norm along a middle dim (inner > 1): one thread per column.
#include "kernels/cuda/norm.h"

#include <cmath>

#include "engine/cuda/kernel_utils.cuh"

namespace colt5::kernels::cuda {
namespace {

using colt5::cuda::group_reduce;
using colt5::cuda::SumF;

template <class T> using Acc = std::conditional_t<std::is_same_v<T, float>, double, T>;

constexpr int block_threads(int G) { return G >= 256 ? G : 256; }

// Row kernels run with G threads per row and R rows per block.
template <class F>
void row_launch(int64_t rows, int64_t n, F&& launch) {
  if (n <= 2048) launch(std::integral_constant<int, 32>{});
  else launch(std::integral_constant<int, 256>{});
}
template <int G>
unsigned row_blocks(int64_t rows) {
  constexpr int R = block_threads(G) / G;
  return static_cast<unsigned>((rows + R - 1) / R);
}

#define COLT5_ROW_SETUP(G)                                                    \
  constexpr int kThreads = block_threads(G), kR = kThreads / G;              \
  __shared__ A smem[kThreads / 32];                                          \
  const int lane = threadIdx.x % G;                                          \
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kR + threadIdx.x / G; \
  const bool valid = row < rows;                                             \
  const int64_t base = (valid ? row : 0) * n;                                \
  (void)lane

// ---------------------------------------------------------------- LayerNorm

template <class T, int G>
__global__ void __launch_bounds__(block_threads(G))
    ln_forward_kernel(T* __restrict__ y, T* __restrict__ mean, T* __restrict__ rstd, const T* __restrict__ x,
                      const T* __restrict__ w, const T* __restrict__ b, int64_t rows, int64_t n, double eps) {
  using A = Acc<T>;
  COLT5_ROW_SETUP(G);
  const T* xr = x + base;
  A s = 0;
  if (valid)
    for (int64_t i = lane; i < n; i += G) s += static_cast<A>(xr[i]);
  const A mu = group_reduce<G>(s, SumF<A>{}, smem) / static_cast<A>(n);
  A ss = 0;
  if (valid)
    for (int64_t i = lane; i < n; i += G) {
      const A d = static_cast<A>(xr[i]) - mu;
      ss += d * d;
    }
  ss = group_reduce<G>(ss, SumF<A>{}, smem);
  const A rs = A(1) / std::sqrt(ss / static_cast<A>(n) + static_cast<A>(eps));
  if (!valid) return;
  const T m = static_cast<T>(mu), r = static_cast<T>(rs);
  if (lane == 0) {
    mean[row] = m;
    rstd[row] = r;
  }
  T* yr = y + base;
  for (int64_t i = lane; i < n; i += G) {
    T v = (xr[i] - m) * r;
    if (w) v = v * w[i];
    if (b) v = v + b[i];
    yr[i] = v;
  }
}

template <class T, int G>
__global__ void __launch_bounds__(block_threads(G))
    ln_dx_kernel(T* __restrict__ dx, const T* __restrict__ dy, const T* __restrict__ x, const T* __restrict__ w,
                 const T* __restrict__ mean, const T* __restrict__ rstd, int64_t rows, int64_t n) {
  using A = Acc<T>;
  COLT5_ROW_SETUP(G);
  const T m = valid ? mean[row] : T(0), r = valid ? rstd[row] : T(0);
  A sg = 0, sgx = 0;
  if (valid)
    for (int64_t i = lane; i < n; i += G) {
      const T xh = (x[base + i] - m) * r;
      const T g = w ? dy[base + i] * w[i] : dy[base + i];
      sg += static_cast<A>(g);
      sgx += static_cast<A>(g) * static_cast<A>(xh);
    }
  sg = group_reduce<G>(sg, SumF<A>{}, smem);
  sgx = group_reduce<G>(sgx, SumF<A>{}, smem);
  if (!valid) return;
  const T a = static_cast<T>(sg / static_cast<A>(n)), c = static_cast<T>(sgx / static_cast<A>(n));
  for (int64_t i = lane; i < n; i += G) {
    const T xh = (x[base + i] - m) * r;
    const T g = w ? dy[base + i] * w[i] : dy[base + i];
    dx[base + i] = r * (g - a - xh * c);
  }
}

// ---------------------------------------------------------------- RMSNorm / l2norm rows

// y = x * scale / max(r, eps) * gamma; saves r.
template <class T, int G>
__global__ void __launch_bounds__(block_threads(G))
    l2_forward_kernel(T* __restrict__ y, T* __restrict__ norm, const T* __restrict__ x, const T* __restrict__ gamma,
                      double scale, int64_t rows, int64_t n, double eps) {
  using A = Acc<T>;
  COLT5_ROW_SETUP(G);
  const T* xr = x + base;
  A ss = 0;
  if (valid)
    for (int64_t i = lane; i < n; i += G) ss += static_cast<A>(xr[i]) * static_cast<A>(xr[i]);
  ss = group_reduce<G>(ss, SumF<A>{}, smem);
  if (!valid) return;
  const A r = std::sqrt(ss);
  if (lane == 0) norm[row] = static_cast<T>(r);
  const A rc = r > static_cast<A>(eps) ? r : static_cast<A>(eps);
  const T k = static_cast<T>(static_cast<A>(scale) / rc);
  T* yr = y + base;
  for (int64_t i = lane; i < n; i += G) yr[i] = gamma ? xr[i] * k * gamma[i] : xr[i] * k;
}

// dx = (u - x * c) * a, u = dy * gamma * scale (see kernels/cpu/norm.h).
template <class T, int G>
__global__ void __launch_bounds__(block_threads(G))
    l2_dx_kernel(T* __restrict__ dx, const T* __restrict__ dy, const T* __restrict__ x, const T* __restrict__ gamma,
                 double scale, const T* __restrict__ norm, int64_t rows, int64_t n, double eps) {
  using A = Acc<T>;
  COLT5_ROW_SETUP(G);
  const T sc = static_cast<T>(scale);
  const A r = valid ? static_cast<A>(norm[row]) : A(0);
  const bool open = r >= static_cast<A>(eps) && r > A(0);  // uniform over the group
  A dot = 0;
  if (valid && open)
    for (int64_t i = lane; i < n; i += G) {
      const T u = gamma ? dy[base + i] * gamma[i] * sc : dy[base + i] * sc;
      dot += static_cast<A>(u) * static_cast<A>(x[base + i]);
    }
  dot = group_reduce<G>(dot, SumF<A>{}, smem);
  if (!valid) return;
  T a, c;
  if (open) {
    a = static_cast<T>(A(1) / r);
    c = static_cast<T>(dot / (r * r));
  } else {
    a = static_cast<T>(1.0 / eps);
    c = 0;
  }
  for (int64_t i = lane; i < n; i += G) {
    const T u = gamma ? dy[base + i] * gamma[i] * sc : dy[base + i] * sc;
    dx[base + i] = (u - x[base + i] * c) * a;
  }
}

// ---------------------------------------------------------------- parameter gradients

// Column j of chunk c: sums over rows [c * per, (c + 1) * per) into
// part[(c * np + p) * n + j], p = 0 (dweight / dgamma) and 1 (dbias).
template <class T>
__global__ void ln_param_partial_kernel(Acc<T>* __restrict__ part, const T* __restrict__ dy, const T* __restrict__ x,
                                        const T* __restrict__ mean, const T* __restrict__ rstd, int64_t rows,
                                        int64_t n, int64_t per, bool want_dw, bool want_db) {
  using A = Acc<T>;
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= n) return;
  const int64_t c = blockIdx.y, r0 = c * per, r1 = (r0 + per < rows ? r0 + per : rows);
  A sw = 0, sb = 0;
  for (int64_t r = r0; r < r1; ++r) {
    const T d = dy[r * n + j];
    if (want_dw) sw += static_cast<A>(d) * static_cast<A>((x[r * n + j] - mean[r]) * rstd[r]);
    if (want_db) sb += static_cast<A>(d);
  }
  part[(c * 2 + 0) * n + j] = sw;
  part[(c * 2 + 1) * n + j] = sb;
}

template <class T>
__global__ void rms_param_partial_kernel(Acc<T>* __restrict__ part, const T* __restrict__ dy,
                                         const T* __restrict__ x, const T* __restrict__ norm, double scale,
                                         double eps, int64_t rows, int64_t n, int64_t per) {
  using A = Acc<T>;
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= n) return;
  const int64_t c = blockIdx.y, r0 = c * per, r1 = (r0 + per < rows ? r0 + per : rows);
  A s = 0;
  for (int64_t r = r0; r < r1; ++r) {
    const double nr = static_cast<double>(norm[r]);
    const T k = static_cast<T>(scale / (nr > eps ? nr : eps));
    s += static_cast<A>(dy[r * n + j] * x[r * n + j] * k);
  }
  part[c * n + j] = s;
}

template <class T>
__global__ void merge_chunks_kernel(T* __restrict__ dst, const Acc<T>* __restrict__ part, int64_t nchunks, int np,
                                    int which, int64_t n) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= n) return;
  Acc<T> s = 0;
  for (int64_t c = 0; c < nchunks; ++c) s += part[(c * np + which) * n + j];
  dst[j] = static_cast<T>(s);
}

// Rows per chunk: about 2048 blocks of partial sums in all, at least 8 rows each.
struct Chunks {
  int64_t per, nchunks;
};
Chunks chunks_for(int64_t rows, int64_t n) {
  const int64_t col_blocks = (n + 255) / 256;
  int64_t nchunks = std::max<int64_t>(1, 2048 / col_blocks);
  nchunks = std::min(nchunks, std::max<int64_t>(1, rows / 8));
  const int64_t per = (rows + nchunks - 1) / nchunks;
  return {per, (rows + per - 1) / per};
}

// ---------------------------------------------------------------- l2norm, middle dim

template <class T>
__global__ void l2_cols_forward_kernel(T* __restrict__ y, T* __restrict__ norm, const T* __restrict__ x,
                                       int64_t outer, int64_t n, int64_t inner, double eps) {
  using A = Acc<T>;
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= outer * inner) return;
  const int64_t base = (c / inner) * n * inner + c % inner;
  A ss = 0;
  for (int64_t k = 0; k < n; ++k) ss += static_cast<A>(x[base + k * inner]) * static_cast<A>(x[base + k * inner]);
  const A r = std::sqrt(ss);
  norm[c] = static_cast<T>(r);
  const T inv = static_cast<T>(A(1) / (r > static_cast<A>(eps) ? r : static_cast<A>(eps)));
  for (int64_t k = 0; k < n; ++k) y[base + k * inner] = x[base + k * inner] * inv;
}

template <class T>
__global__ void l2_cols_backward_kernel(T* __restrict__ dx, const T* __restrict__ dy, const T* __restrict__ x,
                                        const T* __restrict__ norm, int64_t outer, int64_t n, int64_t inner,
                                        double eps) {
  using A = Acc<T>;
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= outer * inner) return;
  const int64_t base = (c / inner) * n * inner + c % inner;
  A dot = 0;
  for (int64_t k = 0; k < n; ++k) dot += static_cast<A>(dy[base + k * inner]) * static_cast<A>(x[base + k * inner]);
  const A r = static_cast<A>(norm[c]);
  const bool open = r >= static_cast<A>(eps) && r > A(0);
  const T a = static_cast<T>(open ? A(1) / r : A(1) / static_cast<A>(eps));
  const T cc = static_cast<T>(open ? dot / (r * r) : A(0));
  for (int64_t k = 0; k < n; ++k) dx[base + k * inner] = (dy[base + k * inner] - x[base + k * inner] * cc) * a;
}

// ---------------------------------------------------------------- host side

template <class T>
void ln_forward(T* y, T* mean, T* rstd, const T* x, const T* w, const T* b, int64_t rows, int64_t n, double eps,
                int device) {
  if (rows == 0) return;
  colt5::cuda::DeviceGuard guard(device);
  cudaStream_t s = colt5::cuda::current_stream(device);
  row_launch(rows, n, [&](auto g) {
    constexpr int G = decltype(g)::value;
    ln_forward_kernel<T, G><<<row_blocks<G>(rows), block_threads(G), 0, s>>>(y, mean, rstd, x, w, b, rows, n, eps);
  });
  CUDA_CHECK_LAUNCH();
}

template <class T>
void ln_backward(T* dx, T* dw, T* db, const T* dy, const T* x, const T* w, const T* mean, const T* rstd, int64_t rows,
                 int64_t n, int device) {
  colt5::cuda::DeviceGuard guard(device);
  cudaStream_t s = colt5::cuda::current_stream(device);
  if (dx && rows > 0) {
    row_launch(rows, n, [&](auto g) {
      constexpr int G = decltype(g)::value;
      ln_dx_kernel<T, G><<<row_blocks<G>(rows), block_threads(G), 0, s>>>(dx, dy, x, w, mean, rstd, rows, n);
    });
    CUDA_CHECK_LAUNCH();
  }
  if (!dw && !db) return;
  const unsigned col_blocks = static_cast<unsigned>((n + 255) / 256);
  if (rows == 0) {  // sums over no rows
    if (dw) CUDA_CHECK(cudaMemsetAsync(dw, 0, n * sizeof(T), s));
    if (db) CUDA_CHECK(cudaMemsetAsync(db, 0, n * sizeof(T), s));
    return;
  }
  const Chunks ch = chunks_for(rows, n);
  colt5::cuda::Workspace ws(sizeof(Acc<T>) * 2 * ch.nchunks * n, device);
  ln_param_partial_kernel<T><<<dim3(col_blocks, static_cast<unsigned>(ch.nchunks)), 256, 0, s>>>(
      ws.as<Acc<T>>(), dy, x, mean, rstd, rows, n, ch.per, dw != nullptr, db != nullptr);
  CUDA_CHECK_LAUNCH();
  if (dw) merge_chunks_kernel<T><<<col_blocks, 256, 0, s>>>(dw, ws.as<Acc<T>>(), ch.nchunks, 2, 0, n);
  if (db) merge_chunks_kernel<T><<<col_blocks, 256, 0, s>>>(db, ws.as<Acc<T>>(), ch.nchunks, 2, 1, n);
  CUDA_CHECK_LAUNCH();
}

template <class T>
void l2_rows_forward(T* y, T* norm, const T* x, const T* gamma, double scale, int64_t rows, int64_t n, double eps,
                     int device) {
  if (rows == 0) return;
  colt5::cuda::DeviceGuard guard(device);
  cudaStream_t s = colt5::cuda::current_stream(device);
  row_launch(rows, n, [&](auto g) {
    constexpr int G = decltype(g)::value;
    l2_forward_kernel<T, G><<<row_blocks<G>(rows), block_threads(G), 0, s>>>(y, norm, x, gamma, scale, rows, n, eps);
  });
  CUDA_CHECK_LAUNCH();
}

template <class T>
void l2_rows_dx(T* dx, const T* dy, const T* x, const T* gamma, double scale, const T* norm, int64_t rows, int64_t n,
                double eps, int device) {
  if (rows == 0) return;
  colt5::cuda::DeviceGuard guard(device);
  cudaStream_t s = colt5::cuda::current_stream(device);
  row_launch(rows, n, [&](auto g) {
    constexpr int G = decltype(g)::value;
    l2_dx_kernel<T, G><<<row_blocks<G>(rows), block_threads(G), 0, s>>>(dx, dy, x, gamma, scale, norm, rows, n, eps);
  });
  CUDA_CHECK_LAUNCH();
}

template <class T>
void rms_backward(T* dx, T* dgamma, const T* dy, const T* x, const T* gamma, const T* norm, int64_t rows, int64_t n,
                  double eps, int device) {
  const double scale = std::sqrt(static_cast<double>(n));
  if (dx) l2_rows_dx(dx, dy, x, gamma, scale, norm, rows, n, eps, device);
  if (!dgamma) return;
  colt5::cuda::DeviceGuard guard(device);
  cudaStream_t s = colt5::cuda::current_stream(device);
  if (rows == 0) {
    CUDA_CHECK(cudaMemsetAsync(dgamma, 0, n * sizeof(T), s));
    return;
  }
  const unsigned col_blocks = static_cast<unsigned>((n + 255) / 256);
  const Chunks ch = chunks_for(rows, n);
  colt5::cuda::Workspace ws(sizeof(Acc<T>) * ch.nchunks * n, device);
  rms_param_partial_kernel<T><<<dim3(col_blocks, static_cast<unsigned>(ch.nchunks)), 256, 0, s>>>(
      ws.as<Acc<T>>(), dy, x, norm, scale, eps, rows, n, ch.per);
  CUDA_CHECK_LAUNCH();
  merge_chunks_kernel<T><<<col_blocks, 256, 0, s>>>(dgamma, ws.as<Acc<T>>(), ch.nchunks, 1, 0, n);
  CUDA_CHECK_LAUNCH();
}

template <class T>
void l2_forward(T* y, T* norm, const T* x, int64_t outer, int64_t n, int64_t inner, double eps, int device) {
  if (outer * inner == 0) return;
  if (inner == 1) return l2_rows_forward<T>(y, norm, x, nullptr, 1.0, outer, n, eps, device);
  colt5::cuda::DeviceGuard guard(device);
  const int64_t cols = outer * inner;
  l2_cols_forward_kernel<T><<<static_cast<unsigned>((cols + 255) / 256), 256, 0, colt5::cuda::current_stream(device)>>>(
      y, norm, x, outer, n, inner, eps);
  CUDA_CHECK_LAUNCH();
}

template <class T>
void l2_backward(T* dx, const T* dy, const T* x, const T* norm, int64_t outer, int64_t n, int64_t inner, double eps,
                 int device) {
  if (outer * inner == 0) return;
  if (inner == 1) return l2_rows_dx<T>(dx, dy, x, nullptr, 1.0, norm, outer, n, eps, device);
  colt5::cuda::DeviceGuard guard(device);
  const int64_t cols = outer * inner;
  l2_cols_backward_kernel<T>
      <<<static_cast<unsigned>((cols + 255) / 256), 256, 0, colt5::cuda::current_stream(device)>>>(
          dx, dy, x, norm, outer, n, inner, eps);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void layer_norm_forward(float* out, float* mean, float* rstd, const float* x, const float* weight,
                        const float* bias, int64_t rows, int64_t n, double eps, int device) {
  ln_forward(out, mean, rstd, x, weight, bias, rows, n, eps, device);
}
void layer_norm_forward(double* out, double* mean, double* rstd, const double* x, const double* weight,
                        const double* bias, int64_t rows, int64_t n, double eps, int device) {
  ln_forward(out, mean, rstd, x, weight, bias, rows, n, eps, device);
}
void layer_norm_backward(float* dx, float* dweight, float* dbias, const float* dout, const float* x,
                         const float* weight, const float* mean, const float* rstd, int64_t rows, int64_t n,
                         int device) {
  ln_backward(dx, dweight, dbias, dout, x, weight, mean, rstd, rows, n, device);
}
void layer_norm_backward(double* dx, double* dweight, double* dbias, const double* dout, const double* x,
                         const double* weight, const double* mean, const double* rstd, int64_t rows, int64_t n,
                         int device) {
  ln_backward(dx, dweight, dbias, dout, x, weight, mean, rstd, rows, n, device);
}

void rms_norm_forward(float* out, float* norm, const float* x, const float* gamma, int64_t rows, int64_t n,
                      double eps, int device) {
  l2_rows_forward(out, norm, x, gamma, std::sqrt(static_cast<double>(n)), rows, n, eps, device);
}
void rms_norm_forward(double* out, double* norm, const double* x, const double* gamma, int64_t rows, int64_t n,
                      double eps, int device) {
  l2_rows_forward(out, norm, x, gamma, std::sqrt(static_cast<double>(n)), rows, n, eps, device);
}
void rms_norm_backward(float* dx, float* dgamma, const float* dout, const float* x, const float* gamma,
                       const float* norm, int64_t rows, int64_t n, double eps, int device) {
  rms_backward(dx, dgamma, dout, x, gamma, norm, rows, n, eps, device);
}
void rms_norm_backward(double* dx, double* dgamma, const double* dout, const double* x, const double* gamma,
                       const double* norm, int64_t rows, int64_t n, double eps, int device) {
  rms_backward(dx, dgamma, dout, x, gamma, norm, rows, n, eps, device);
}

void l2norm_forward(float* out, float* norm, const float* x, int64_t outer, int64_t n, int64_t inner, double eps,
                    int device) {
  l2_forward(out, norm, x, outer, n, inner, eps, device);
}
void l2norm_forward(double* out, double* norm, const double* x, int64_t outer, int64_t n, int64_t inner,
                    double eps, int device) {
  l2_forward(out, norm, x, outer, n, inner, eps, device);
}
void l2norm_backward(float* dx, const float* dout, const float* x, const float* norm, int64_t outer, int64_t n,
                     int64_t inner, double eps, int device) {
  l2_backward(dx, dout, x, norm, outer, n, inner, eps, device);
}
void l2norm_backward(double* dx, const double* dout, const double* x, const double* norm, int64_t outer, int64_t n,
                     int64_t inner, double eps, int device) {
  l2_backward(dx, dout, x, norm, outer, n, inner, eps, device);
}

}  // namespace colt5::kernels::cuda
