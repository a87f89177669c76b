// The CUDA elementwise loops (the device counterpart of kernels/cpu/loop.h):
// map f over the elements of a Geometry, operand 0 being the output.
//   - flat path: every operand contiguous or a broadcast scalar; each thread
//     moves 16-byte vectors (W elements), two of them, both loaded before
//     either is computed, so several loads are in flight per thread;
//   - strided path: any strides (broadcasts, permutes, slices); offsets from
//     the linear index by division per dim, in 32-bit when numel < 2^31.
//     (A 2-D grid variant, rows x inner dim with no division per element, was
//     measured on the H100 and lost: (8192, 8192) + (8192) ran at 1605 GB/s
//     against 2091 GB/s for this loop; notes in tools/bench_cuda.cpp.)
// Include only from .cu files.
#pragma once
#include "engine/cuda/kernel_utils.cuh"

namespace colt5::cuda {

constexpr int kLoopThreads = 256;
constexpr int kLoopUnroll = 2;

// ---------------------------------------------------------------- strided

template <int N, class I, class Body>
__global__ void __launch_bounds__(kLoopThreads) strided_kernel(Geometry<N> g, Body body) {
  const I n = static_cast<I>(g.numel);
  for (I i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    int64_t off[N];
    geometry_offsets<N, I>(g, i, off);
    body(off);
  }
}

template <int N, class Body>
void launch_strided(const Geometry<N>& g, const Body& body, int device) {
  if (g.numel == 0) return;
  const unsigned grid = grid_for(g.numel, kLoopThreads, device);
  cudaStream_t s = current_stream(device);
  if (g.numel < (int64_t{1} << 31)) strided_kernel<N, uint32_t><<<grid, kLoopThreads, 0, s>>>(g, body);
  else strided_kernel<N, uint64_t><<<grid, kLoopThreads, 0, s>>>(g, body);
  CUDA_CHECK_LAUNCH();
}

template <class O, class A, class F>
struct Map1Body {
  O* out;
  const A* a;
  F f;
  __device__ __forceinline__ void operator()(const int64_t (&o)[2]) const { out[o[0]] = f(a[o[1]]); }
};
template <class O, class A, class B, class F>
struct Map2Body {
  O* out;
  const A* a;
  const B* b;
  F f;
  __device__ __forceinline__ void operator()(const int64_t (&o)[3]) const { out[o[0]] = f(a[o[1]], b[o[2]]); }
};

// ---------------------------------------------------------------- flat

template <class T, int W>
__device__ __forceinline__ void load_vec(T (&v)[W], const T* __restrict__ p, int64_t i, bool scalar) {
  if (scalar) {
    const T s = p[0];
#pragma unroll
    for (int k = 0; k < W; ++k) v[k] = s;
  } else {
    const Vec<T, W> x = *reinterpret_cast<const Vec<T, W>*>(p + i);
#pragma unroll
    for (int k = 0; k < W; ++k) v[k] = x.v[k];
  }
}

// out[i] = f(a[i]) (a[0] where sa), W elements per vector, n elements in all.
template <int W, class O, class A, class F>
__global__ void __launch_bounds__(kLoopThreads) map1_flat(int64_t n, O* __restrict__ out, const A* __restrict__ a,
                                                          F f) {
  const int64_t nvec = n / W;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x * kLoopUnroll;
  for (int64_t base = static_cast<int64_t>(blockIdx.x) * blockDim.x * kLoopUnroll + threadIdx.x; base < nvec;
       base += step) {
    A av[kLoopUnroll][W];
#pragma unroll
    for (int u = 0; u < kLoopUnroll; ++u) {
      const int64_t v = base + u * blockDim.x;
      if (v < nvec) load_vec<A, W>(av[u], a, v * W, false);
    }
#pragma unroll
    for (int u = 0; u < kLoopUnroll; ++u) {
      const int64_t v = base + u * blockDim.x;
      if (v < nvec) {
        Vec<O, W> r;
#pragma unroll
        for (int k = 0; k < W; ++k) r.v[k] = f(av[u][k]);
        *reinterpret_cast<Vec<O, W>*>(out + v * W) = r;
      }
    }
  }
  if (blockIdx.x == 0 && threadIdx.x < n - nvec * W) {
    const int64_t i = nvec * W + threadIdx.x;
    out[i] = f(a[i]);
  }
}

// out[i] = f(a[i], b[i]); sa / sb: that operand is a broadcast scalar.
template <int W, class O, class A, class B, class F>
__global__ void __launch_bounds__(kLoopThreads) map2_flat(int64_t n, O* __restrict__ out, const A* __restrict__ a,
                                                          bool sa, const B* __restrict__ b, bool sb, F f) {
  const int64_t nvec = n / W;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x * kLoopUnroll;
  for (int64_t base = static_cast<int64_t>(blockIdx.x) * blockDim.x * kLoopUnroll + threadIdx.x; base < nvec;
       base += step) {
    A av[kLoopUnroll][W];
    B bv[kLoopUnroll][W];
#pragma unroll
    for (int u = 0; u < kLoopUnroll; ++u) {
      const int64_t v = base + u * blockDim.x;
      if (v < nvec) {
        load_vec<A, W>(av[u], a, v * W, sa);
        load_vec<B, W>(bv[u], b, v * W, sb);
      }
    }
#pragma unroll
    for (int u = 0; u < kLoopUnroll; ++u) {
      const int64_t v = base + u * blockDim.x;
      if (v < nvec) {
        Vec<O, W> r;
#pragma unroll
        for (int k = 0; k < W; ++k) r.v[k] = f(av[u][k], bv[u][k]);
        *reinterpret_cast<Vec<O, W>*>(out + v * W) = r;
      }
    }
  }
  if (blockIdx.x == 0 && threadIdx.x < n - nvec * W) {
    const int64_t i = nvec * W + threadIdx.x;
    out[i] = f(a[sa ? 0 : i], b[sb ? 0 : i]);
  }
}

template <class... T>
constexpr int vec_width() {
  constexpr size_t m = std::max({sizeof(T)...});
  return static_cast<int>(16 / m);
}

inline unsigned flat_grid(int64_t n, int w) {
  const int64_t per_block = static_cast<int64_t>(kLoopThreads) * kLoopUnroll * w;
  const int64_t need = (n + per_block - 1) / per_block;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(need, int64_t{1} << 30)));
}

// ---------------------------------------------------------------- entry points

// out (O) = f(a (A)) over g (operand 0 out, 1 a).
template <class O, class A, class F>
void map1(F f, void* out, const void* a, const Geometry<2>& g, int device) {
  if (g.numel == 0) return;
  auto* o = static_cast<O*>(out);
  auto* x = static_cast<const A*>(a);
  constexpr int W = vec_width<O, A>();
  if (g.ndim == 1 && g.strides[0][0] == 1 && g.strides[1][0] == 1 && aligned(o, sizeof(O) * W) &&
      aligned(x, sizeof(A) * W)) {
    map1_flat<W><<<flat_grid(g.numel, W), kLoopThreads, 0, current_stream(device)>>>(g.numel, o, x, f);
    CUDA_CHECK_LAUNCH();
    return;
  }
  launch_strided<2>(g, Map1Body<O, A, F>{o, x, f}, device);
}

// out (O) = f(a (A), b (B)) over g (operand 0 out, 1 a, 2 b).
template <class O, class A, class B, class F>
void map2(F f, void* out, const void* a, const void* b, const Geometry<3>& g, int device) {
  if (g.numel == 0) return;
  auto* o = static_cast<O*>(out);
  auto* x = static_cast<const A*>(a);
  auto* y = static_cast<const B*>(b);
  constexpr int W = vec_width<O, A, B>();
  if (g.ndim == 1 && flat_or_scalar(g)) {
    const bool sa = g.strides[1][0] == 0, sb = g.strides[2][0] == 0;
    if (aligned(o, sizeof(O) * W) && (sa || aligned(x, sizeof(A) * W)) && (sb || aligned(y, sizeof(B) * W))) {
      map2_flat<W><<<flat_grid(g.numel, W), kLoopThreads, 0, current_stream(device)>>>(g.numel, o, x, sa, y, sb, f);
      CUDA_CHECK_LAUNCH();
      return;
    }
  }
  launch_strided<3>(g, Map2Body<O, A, B, F>{o, x, y, f}, device);
}

}  // namespace colt5::cuda
