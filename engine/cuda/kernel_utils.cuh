// Device-side helpers shared by the CUDA kernels (kernels/cuda/*.cu): element
// offsets over a Geometry, launch sizes, warp and block reductions, half
// conversions. Include only from .cu files.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "engine/cuda/check.h"
#include "engine/cuda/memory.h"
#include "engine/dispatch.h"
#include "engine/strided.h"

namespace colt5::cuda {

constexpr int kWarp = 32;

// ---------------------------------------------------------------- geometry

// Offsets (in elements) of the i-th element, row-major over g's dims, for each
// operand. Dim 0 needs no division (i < its size once the inner dims are
// peeled off), so a 1-D geometry costs one multiply per operand. I is the
// index type: uint32_t when numel < 2^31 (cheaper division), else uint64_t.
template <int N, class I>
__device__ __forceinline__ void geometry_offsets(const Geometry<N>& g, I i, int64_t (&off)[N]) {
#pragma unroll
  for (int k = 0; k < N; ++k) off[k] = 0;
#pragma unroll
  for (int d = kMaxDims - 1; d >= 1; --d) {
    if (d < g.ndim) {
      const I size = static_cast<I>(g.shape[d]);
      const I q = i / size;
      const int64_t r = static_cast<int64_t>(i - q * size);
#pragma unroll
      for (int k = 0; k < N; ++k) off[k] += r * g.strides[k][d];
      i = q;
    }
  }
  if (g.ndim >= 1) {
#pragma unroll
    for (int k = 0; k < N; ++k) off[k] += static_cast<int64_t>(i) * g.strides[k][0];
  }
}

// True when every operand of g is contiguous (stride 1) or a broadcast scalar
// (stride 0) over one merged dim, operand 0 (the output) contiguous.
template <int N>
inline bool flat_or_scalar(const Geometry<N>& g) {
  if (g.ndim == 0) return true;
  if (g.ndim != 1 || g.strides[0][0] != 1) return false;
  for (int k = 1; k < N; ++k)
    if (g.strides[k][0] != 1 && g.strides[k][0] != 0) return false;
  return true;
}
template <int N>
inline bool is_scalar_operand(const Geometry<N>& g, int k) {
  return g.ndim == 0 || g.strides[k][0] == 0;
}

inline bool aligned(const void* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

// Blocks for a grid-stride loop over n items with `threads` per block: enough
// to fill the device, no more than n needs.
inline unsigned grid_for(int64_t n, int threads, int device) {
  const int64_t need = (n + threads - 1) / threads;
  const int64_t cap = static_cast<int64_t>(device_properties(device).multiProcessorCount) * (2048 / threads) * 4;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min(need, cap)));
}

// ---------------------------------------------------------------- reductions

template <class T>
__device__ __forceinline__ T shfl_xor(T v, int mask) {
  return __shfl_xor_sync(0xffffffffu, v, mask);
}

// Butterfly reduction over a full warp: every lane gets the result, and the
// order of operations is fixed (deterministic).
template <class T, class F>
__device__ __forceinline__ T warp_reduce(T v, F f) {
#pragma unroll
  for (int m = kWarp / 2; m >= 1; m >>= 1) v = f(v, shfl_xor(v, m));
  return v;
}

template <class T>
struct SumF {
  __device__ __forceinline__ T operator()(T a, T b) const { return a + b; }
};
template <class T>
struct MaxF {
  __device__ __forceinline__ T operator()(T a, T b) const { return a > b ? a : b; }
};

// NaN-skipping max (like fmax): the row maxima of softmax and the losses,
// where a NaN is left to poison the later sum instead.
template <class T>
struct MaxSkipNanF {
  __device__ __forceinline__ T operator()(T a, T b) const { return (b > a || a != a) ? b : a; }
};

// Reduces v over a group of G consecutive threads (G a multiple of 32 that
// divides blockDim.x); every thread of the group gets the result. `smem` holds
// blockDim.x / 32 T. Every thread of the block must call it. Deterministic.
template <int G, class T, class F>
__device__ __forceinline__ T group_reduce(T v, F f, T* smem) {
  v = warp_reduce(v, f);
  if constexpr (G == kWarp) {
    return v;
  } else {
    const int warp = threadIdx.x / kWarp, first = (threadIdx.x / G) * (G / kWarp);
    __syncthreads();  // smem may still be read by a previous call
    if (threadIdx.x % kWarp == 0) smem[warp] = v;
    __syncthreads();
    T r = smem[first];
#pragma unroll
    for (int w = 1; w < G / kWarp; ++w) r = f(r, smem[first + w]);
    return r;
  }
}

// Reduces v over the whole block (blockDim.x a multiple of 32, at most 1024);
// every thread gets the result. `smem` holds 32 T. Deterministic.
template <class T, class F>
__device__ __forceinline__ T block_reduce(T v, F f, T* smem) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp, nwarps = blockDim.x / kWarp;
  v = warp_reduce(v, f);
  __syncthreads();  // smem may still be read by a previous call
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  v = smem[0];
  for (int w = 1; w < nwarps; ++w) v = f(v, smem[w]);
  return v;
}

// ---------------------------------------------------------------- conversions

// Every element type through double, like the host's to_double/from_double:
// device copies convert exactly as CPU copies do.
template <class T>
__device__ __forceinline__ double to_f64(T v) {
  if constexpr (std::is_same_v<T, f16_t>) return static_cast<double>(__half2float(__ushort_as_half(v.bits)));
  else if constexpr (std::is_same_v<T, bf16_t>)
    return static_cast<double>(__bfloat162float(__ushort_as_bfloat16(v.bits)));
  else return static_cast<double>(v);
}
template <class T>
__device__ __forceinline__ T from_f64(double v) {
  if constexpr (std::is_same_v<T, f16_t>) return T{__half_as_ushort(__float2half_rn(static_cast<float>(v)))};
  else if constexpr (std::is_same_v<T, bf16_t>)
    return T{__bfloat16_as_ushort(__float2bfloat16_rn(static_cast<float>(v)))};
  else if constexpr (std::is_same_v<T, bool>) return v != 0.0;
  else return static_cast<T>(v);
}

// An aligned group of W elements for 16-byte (or narrower) vector accesses.
template <class T, int W>
struct alignas(sizeof(T) * W) Vec {
  T v[W];
};

}  // namespace colt5::cuda
