// CUDA softmax / log-softmax, forward and backward (contract in
// kernels/cpu/softmax.h, the reference).
//
// Rows (inner == 1), the common case: a group of G threads owns a row and
// holds it in registers (VPT vectors of W elements per thread, 16-byte loads),
// so a row is read once and written once: max (group reduce), exp and sum
// (group reduce, f64 for f32), scale, store. G and VPT are picked from the
// row length (rows of 8192 f32: one block of 256 threads per row, 32
// elements per thread). Rows longer than the largest configuration (16384
// f32) take a looping kernel (one block of 1024 per row, three passes).
// Lines along a middle dim (inner > 1): one thread per (outer, inner) column,
// walking n with stride inner (adjacent threads read adjacent addresses).
// Every reduction has a fixed order: results are deterministic.
#include "kernels/cuda/softmax.h"

#include <limits>

#include "engine/cuda/kernel_utils.cuh"

namespace colt5::kernels::cuda {
namespace {

using colt5::cuda::group_reduce;
using colt5::cuda::MaxSkipNanF;
using colt5::cuda::SumF;
using colt5::cuda::Vec;

template <class T> using Acc = std::conditional_t<std::is_same_v<T, float>, double, T>;
template <class T> __device__ __forceinline__ T ninf() { return -std::numeric_limits<T>::infinity(); }

constexpr int block_threads(int G) { return G >= 256 ? G : 256; }

// Loads element j*G*W + lane*W + k of a row into v[j][k]; `pad` outside [0, n).
template <class T, int W, int VPT, int G>
__device__ __forceinline__ void load_row(T (&v)[VPT][W], const T* __restrict__ p, int64_t n, int lane, bool valid,
                                         T pad) {
#pragma unroll
  for (int j = 0; j < VPT; ++j) {
    const int64_t i = (static_cast<int64_t>(j) * G + lane) * W;
    if (valid && i + W <= n) {
      const Vec<T, W> t = *reinterpret_cast<const Vec<T, W>*>(p + i);
#pragma unroll
      for (int k = 0; k < W; ++k) v[j][k] = t.v[k];
    } else {
#pragma unroll
      for (int k = 0; k < W; ++k) v[j][k] = (valid && i + k < n) ? p[i + k] : pad;
    }
  }
}

template <class T, int W, int VPT, int G>
__device__ __forceinline__ void store_row(const T (&v)[VPT][W], T* __restrict__ p, int64_t n, int lane, bool valid) {
  if (!valid) return;
#pragma unroll
  for (int j = 0; j < VPT; ++j) {
    const int64_t i = (static_cast<int64_t>(j) * G + lane) * W;
    if (i + W <= n) {
      Vec<T, W> t;
#pragma unroll
      for (int k = 0; k < W; ++k) t.v[k] = v[j][k];
      *reinterpret_cast<Vec<T, W>*>(p + i) = t;
    } else {
#pragma unroll
      for (int k = 0; k < W; ++k)
        if (i + k < n) p[i + k] = v[j][k];
    }
  }
}

// ---------------------------------------------------------------- rows, in registers

template <class T, int W, int VPT, int G>
__global__ void __launch_bounds__(block_threads(G))
    softmax_rows_kernel(T* __restrict__ out, const T* __restrict__ x, int64_t rows, int64_t n, bool log) {
  using A = Acc<T>;
  constexpr int kThreads = block_threads(G), R = kThreads / G;
  __shared__ A smem_a[kThreads / 32];
  __shared__ T smem_t[kThreads / 32];
  const int lane = threadIdx.x % G;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * R + threadIdx.x / G;
  const bool valid = row < rows;
  const T* xr = x + (valid ? row : 0) * n;

  T v[VPT][W];
  load_row<T, W, VPT, G>(v, xr, n, lane, valid, ninf<T>());
  T m = ninf<T>();
#pragma unroll
  for (int j = 0; j < VPT; ++j)
#pragma unroll
    for (int k = 0; k < W; ++k) m = v[j][k] > m ? v[j][k] : m;  // NaN skipped (it poisons the sum)
  m = group_reduce<G>(m, MaxSkipNanF<T>{}, smem_t);
  const T mm = m == ninf<T>() ? T(0) : m;  // fully masked: std::exp(-inf - 0) = 0, s = 0

  A s = 0;
#pragma unroll
  for (int j = 0; j < VPT; ++j)
#pragma unroll
    for (int k = 0; k < W; ++k) {
      const T e = std::exp(v[j][k] - mm);
      s += static_cast<A>(e);
      if (!log) v[j][k] = e;
    }
  s = group_reduce<G>(s, SumF<A>{}, smem_a);

  if (!log) {
    const T inv = s == A(0) ? T(0) : static_cast<T>(A(1) / s);
#pragma unroll
    for (int j = 0; j < VPT; ++j)
#pragma unroll
      for (int k = 0; k < W; ++k) v[j][k] *= inv;
  } else if (m == ninf<T>()) {
#pragma unroll
    for (int j = 0; j < VPT; ++j)
#pragma unroll
      for (int k = 0; k < W; ++k) v[j][k] = m;
  } else {
    const T c = static_cast<T>(static_cast<A>(m) + std::log(s));
#pragma unroll
    for (int j = 0; j < VPT; ++j)
#pragma unroll
      for (int k = 0; k < W; ++k) v[j][k] -= c;
  }
  store_row<T, W, VPT, G>(v, out + (valid ? row : 0) * n, n, lane, valid);
}

template <class T, int W, int VPT, int G>
__global__ void __launch_bounds__(block_threads(G))
    softmax_backward_rows_kernel(T* __restrict__ dx, const T* __restrict__ dy, const T* __restrict__ y,
                                 int64_t rows, int64_t n, bool log) {
  using A = Acc<T>;
  constexpr int kThreads = block_threads(G), R = kThreads / G;
  __shared__ A smem_a[kThreads / 32];
  __shared__ T smem_t[kThreads / 32];
  const int lane = threadIdx.x % G;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * R + threadIdx.x / G;
  const bool valid = row < rows;
  const int64_t base = (valid ? row : 0) * n;

  T g[VPT][W], v[VPT][W];
  load_row<T, W, VPT, G>(g, dy + base, n, lane, valid, T(0));
  load_row<T, W, VPT, G>(v, y + base, n, lane, valid, log ? ninf<T>() : T(0));
  A s = 0;
  T live = 0;  // log: 1 when some y != -inf
#pragma unroll
  for (int j = 0; j < VPT; ++j)
#pragma unroll
    for (int k = 0; k < W; ++k) {
      if (log) {
        s += static_cast<A>(g[j][k]);
        live = v[j][k] != ninf<T>() ? T(1) : live;
      } else {
        s += static_cast<A>(g[j][k]) * static_cast<A>(v[j][k]);
      }
    }
  s = group_reduce<G>(s, SumF<A>{}, smem_a);
  if (log) live = group_reduce<G>(live, MaxSkipNanF<T>{}, smem_t);
  const T d = static_cast<T>(s);
#pragma unroll
  for (int j = 0; j < VPT; ++j)
#pragma unroll
    for (int k = 0; k < W; ++k) {
      if (log) g[j][k] = live != T(0) ? g[j][k] - std::exp(v[j][k]) * d : T(0);
      else g[j][k] = v[j][k] * (g[j][k] - d);
    }
  store_row<T, W, VPT, G>(g, dx + base, n, lane, valid);
}

// ---------------------------------------------------------------- long rows, looping

constexpr int kLongThreads = 1024;

template <class T>
__global__ void __launch_bounds__(kLongThreads)
    softmax_long_kernel(T* __restrict__ out, const T* __restrict__ x, int64_t n, bool log) {
  using A = Acc<T>;
  __shared__ A smem_a[kLongThreads / 32];
  __shared__ T smem_t[kLongThreads / 32];
  const T* xr = x + static_cast<int64_t>(blockIdx.x) * n;
  T* yr = out + static_cast<int64_t>(blockIdx.x) * n;
  T m = ninf<T>();
  for (int64_t i = threadIdx.x; i < n; i += kLongThreads) m = xr[i] > m ? xr[i] : m;
  m = group_reduce<kLongThreads>(m, MaxSkipNanF<T>{}, smem_t);
  const T mm = m == ninf<T>() ? T(0) : m;
  A s = 0;
  for (int64_t i = threadIdx.x; i < n; i += kLongThreads) s += static_cast<A>(std::exp(xr[i] - mm));
  s = group_reduce<kLongThreads>(s, SumF<A>{}, smem_a);
  if (!log) {
    const T inv = s == A(0) ? T(0) : static_cast<T>(A(1) / s);
    for (int64_t i = threadIdx.x; i < n; i += kLongThreads) yr[i] = std::exp(xr[i] - mm) * inv;
  } else {
    const T c = static_cast<T>(static_cast<A>(m) + std::log(s));
    for (int64_t i = threadIdx.x; i < n; i += kLongThreads) yr[i] = m == ninf<T>() ? m : xr[i] - c;
  }
}

template <class T>
__global__ void __launch_bounds__(kLongThreads)
    softmax_backward_long_kernel(T* __restrict__ dx, const T* __restrict__ dy, const T* __restrict__ y, int64_t n,
                                 bool log) {
  using A = Acc<T>;
  __shared__ A smem_a[kLongThreads / 32];
  __shared__ T smem_t[kLongThreads / 32];
  const int64_t base = static_cast<int64_t>(blockIdx.x) * n;
  A s = 0;
  T live = 0;
  for (int64_t i = threadIdx.x; i < n; i += kLongThreads) {
    if (log) {
      s += static_cast<A>(dy[base + i]);
      live = y[base + i] != ninf<T>() ? T(1) : live;
    } else {
      s += static_cast<A>(dy[base + i]) * static_cast<A>(y[base + i]);
    }
  }
  s = group_reduce<kLongThreads>(s, SumF<A>{}, smem_a);
  if (log) live = group_reduce<kLongThreads>(live, MaxSkipNanF<T>{}, smem_t);
  const T d = static_cast<T>(s);
  for (int64_t i = threadIdx.x; i < n; i += kLongThreads) {
    const T g = dy[base + i], v = y[base + i];
    dx[base + i] = log ? (live != T(0) ? g - std::exp(v) * d : T(0)) : v * (g - d);
  }
}

// ---------------------------------------------------------------- middle dim

template <class T>
__global__ void softmax_cols_kernel(T* __restrict__ out, const T* __restrict__ x, int64_t outer, int64_t n,
                                    int64_t inner, bool log) {
  using A = Acc<T>;
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= outer * inner) return;
  const int64_t base = (c / inner) * n * inner + c % inner;
  T m = ninf<T>();
  for (int64_t k = 0; k < n; ++k) {
    const T v = x[base + k * inner];
    m = v > m ? v : m;
  }
  if (m == ninf<T>()) m = 0;  // fully masked column: std::exp(-inf) = 0
  A s = 0;
  for (int64_t k = 0; k < n; ++k) s += static_cast<A>(std::exp(x[base + k * inner] - m));
  if (log) {
    const T cst = s == A(0) ? T(0) : static_cast<T>(m + std::log(s));
    for (int64_t k = 0; k < n; ++k) out[base + k * inner] = x[base + k * inner] - cst;
  } else {
    const T inv = s == A(0) ? T(0) : static_cast<T>(A(1) / s);
    for (int64_t k = 0; k < n; ++k) out[base + k * inner] = std::exp(x[base + k * inner] - m) * inv;
  }
}

template <class T>
__global__ void softmax_backward_cols_kernel(T* __restrict__ dx, const T* __restrict__ dy, const T* __restrict__ y,
                                             int64_t outer, int64_t n, int64_t inner, bool log) {
  using A = Acc<T>;
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= outer * inner) return;
  const int64_t base = (c / inner) * n * inner + c % inner;
  A s = 0;
  bool live = false;
  for (int64_t k = 0; k < n; ++k) {
    const int64_t i = base + k * inner;
    if (log) {
      s += static_cast<A>(dy[i]);
      live = live || y[i] != ninf<T>();
    } else {
      s += static_cast<A>(dy[i]) * static_cast<A>(y[i]);
    }
  }
  const T d = static_cast<T>(s);
  for (int64_t k = 0; k < n; ++k) {
    const int64_t i = base + k * inner;
    dx[i] = log ? (live ? dy[i] - std::exp(y[i]) * d : T(0)) : y[i] * (dy[i] - d);
  }
}

// ---------------------------------------------------------------- launch

// Register-resident configurations, smallest first: (G threads per row,
// VPT vectors per thread). Capacity G * VPT * W elements.
// At 1024 threads a thread has 64 registers, too few for 32 elements (and two
// rows in the backward): rows beyond 512 * 8 * W elements loop instead.
template <class F>
bool pick_config(int64_t n, int W, F&& launch) {
  auto fits = [&](int G, int VPT) { return n <= static_cast<int64_t>(G) * VPT * W; };
  using std::integral_constant;
  if (fits(32, 1)) return launch(integral_constant<int, 32>{}, integral_constant<int, 1>{}), true;
  if (fits(32, 4)) return launch(integral_constant<int, 32>{}, integral_constant<int, 4>{}), true;
  if (fits(32, 8)) return launch(integral_constant<int, 32>{}, integral_constant<int, 8>{}), true;
  if (fits(128, 8)) return launch(integral_constant<int, 128>{}, integral_constant<int, 8>{}), true;
  if (fits(256, 8)) return launch(integral_constant<int, 256>{}, integral_constant<int, 8>{}), true;
  if (fits(512, 8)) return launch(integral_constant<int, 512>{}, integral_constant<int, 8>{}), true;
  return false;
}

template <class T>
void forward(T* y, const T* x, int64_t outer, int64_t n, int64_t inner, bool log, int device) {
  if (outer * n * inner == 0) return;
  colt5::cuda::DeviceGuard guard(device);
  cudaStream_t s = colt5::cuda::current_stream(device);
  if (inner > 1) {
    const int64_t cols = outer * inner;
    softmax_cols_kernel<T><<<static_cast<unsigned>((cols + 255) / 256), 256, 0, s>>>(y, x, outer, n, inner, log);
    CUDA_CHECK_LAUNCH();
    return;
  }
  constexpr int Wv = 16 / sizeof(T);
  const bool vec = n % Wv == 0 && colt5::cuda::aligned(x, 16) && colt5::cuda::aligned(y, 16);
  auto run = [&](auto w_tag) {
    constexpr int W = decltype(w_tag)::value;
    return pick_config(n, W, [&](auto g_tag, auto v_tag) {
      constexpr int G = decltype(g_tag)::value, VPT = decltype(v_tag)::value;
      constexpr int R = block_threads(G) / G;
      softmax_rows_kernel<T, W, VPT, G>
          <<<static_cast<unsigned>((outer + R - 1) / R), block_threads(G), 0, s>>>(y, x, outer, n, log);
    });
  };
  const bool done = vec ? run(std::integral_constant<int, Wv>{}) : run(std::integral_constant<int, 1>{});
  if (!done) softmax_long_kernel<T><<<static_cast<unsigned>(outer), kLongThreads, 0, s>>>(y, x, n, log);
  CUDA_CHECK_LAUNCH();
}

template <class T>
void backward(T* dx, const T* dy, const T* y, int64_t outer, int64_t n, int64_t inner, bool log, int device) {
  if (outer * n * inner == 0) return;
  colt5::cuda::DeviceGuard guard(device);
  cudaStream_t s = colt5::cuda::current_stream(device);
  if (inner > 1) {
    const int64_t cols = outer * inner;
    softmax_backward_cols_kernel<T>
        <<<static_cast<unsigned>((cols + 255) / 256), 256, 0, s>>>(dx, dy, y, outer, n, inner, log);
    CUDA_CHECK_LAUNCH();
    return;
  }
  constexpr int Wv = 16 / sizeof(T);
  const bool vec = n % Wv == 0 && colt5::cuda::aligned(dx, 16) && colt5::cuda::aligned(dy, 16) &&
                   colt5::cuda::aligned(y, 16);
  auto run = [&](auto w_tag) {
    constexpr int W = decltype(w_tag)::value;
    return pick_config(n, W, [&](auto g_tag, auto v_tag) {
      constexpr int G = decltype(g_tag)::value, VPT = decltype(v_tag)::value;
      constexpr int R = block_threads(G) / G;
      softmax_backward_rows_kernel<T, W, VPT, G>
          <<<static_cast<unsigned>((outer + R - 1) / R), block_threads(G), 0, s>>>(dx, dy, y, outer, n, log);
    });
  };
  const bool done = vec ? run(std::integral_constant<int, Wv>{}) : run(std::integral_constant<int, 1>{});
  if (!done) softmax_backward_long_kernel<T><<<static_cast<unsigned>(outer), kLongThreads, 0, s>>>(dx, dy, y, n, log);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void softmax_forward(float* out, const float* x, int64_t outer, int64_t n, int64_t inner, int device) {
  forward(out, x, outer, n, inner, false, device);
}
void softmax_forward(double* out, const double* x, int64_t outer, int64_t n, int64_t inner, int device) {
  forward(out, x, outer, n, inner, false, device);
}
void log_softmax_forward(float* out, const float* x, int64_t outer, int64_t n, int64_t inner, int device) {
  forward(out, x, outer, n, inner, true, device);
}
void log_softmax_forward(double* out, const double* x, int64_t outer, int64_t n, int64_t inner, int device) {
  forward(out, x, outer, n, inner, true, device);
}
void softmax_backward(float* dx, const float* dout, const float* out, int64_t outer, int64_t n, int64_t inner,
                      int device) {
  backward(dx, dout, out, outer, n, inner, false, device);
}
void softmax_backward(double* dx, const double* dout, const double* out, int64_t outer, int64_t n, int64_t inner,
                      int device) {
  backward(dx, dout, out, outer, n, inner, false, device);
}
void log_softmax_backward(float* dx, const float* dout, const float* out, int64_t outer, int64_t n, int64_t inner,
                          int device) {
  backward(dx, dout, out, outer, n, inner, true, device);
}
void log_softmax_backward(double* dx, const double* dout, const double* out, int64_t outer, int64_t n,
                          int64_t inner, int device) {
  backward(dx, dout, out, outer, n, inner, true, device);
}

}  // namespace colt5::kernels::cuda
