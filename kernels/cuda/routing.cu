// CUDA routing gathers / scatters (contract and strategy in kernels/cuda/routing.h).
//
// Elementwise kernels move V elements per thread (a 16-byte vector) when the
// feature count, the pointers and every row stride allow it, else one.
#include "kernels/cuda/routing.h"

#include <algorithm>
#include <type_traits>

#include "engine/cuda/kernel_utils.cuh"

namespace colt5::kernels::cuda {
namespace {

using colt5::cuda::Vec;
using colt5::cuda::warp_reduce;
using colt5::cuda::SumF;

constexpr int kThreads = 256;

template <class T> struct AccOf { using type = float; };
template <> struct AccOf<double> { using type = double; };

template <class A, class T>
__device__ __forceinline__ A ld(T v) {
  if constexpr (std::is_same_v<T, f16_t>) return static_cast<A>(__half2float(__ushort_as_half(v.bits)));
  else if constexpr (std::is_same_v<T, bf16_t>) return static_cast<A>(__bfloat162float(__ushort_as_bfloat16(v.bits)));
  else return static_cast<A>(v);
}
template <class T, class A>
__device__ __forceinline__ T st(A v) {
  if constexpr (std::is_same_v<T, f16_t>) return T{__half_as_ushort(__float2half_rn(static_cast<float>(v)))};
  else if constexpr (std::is_same_v<T, bf16_t>) return T{__bfloat16_as_ushort(__float2bfloat16_rn(static_cast<float>(v)))};
  else return static_cast<T>(v);
}

unsigned blocks_for(int64_t total) {
  const int64_t need = (total + kThreads - 1) / kThreads;
  return static_cast<unsigned>(std::clamp<int64_t>(need, 1, int64_t{1} << 20));
}

// ---------------------------------------------------------------- elementwise row kernels

// out[b, j, :] = x[b, idx[b, j], :] * s
template <class T, int V, class I, bool HasS>
__global__ void __launch_bounds__(kThreads)
    gather_kernel(T* __restrict__ out, int64_t osb, int64_t osn, const T* __restrict__ x, int64_t xsb, int64_t xsn,
                  const int64_t* __restrict__ idx, const T* __restrict__ scores, int64_t m, int64_t Dv, int64_t total) {
  using A = typename AccOf<T>::type;
  for (I t = blockIdx.x * I(blockDim.x) + threadIdx.x; t < I(total); t += I(gridDim.x) * blockDim.x) {
    const I r = t / I(Dv), c = t - r * I(Dv);
    const I b = r / I(m), j = r - b * I(m);
    const Vec<T, V> v = *reinterpret_cast<const Vec<T, V>*>(x + int64_t(b) * xsb + idx[r] * xsn + int64_t(c) * V);
    Vec<T, V> o;
    if constexpr (HasS) {
      const A s = ld<A>(scores[r]);
#pragma unroll
      for (int e = 0; e < V; ++e) o.v[e] = st<T>(ld<A>(v.v[e]) * s);
    } else {
      o = v;
    }
    *reinterpret_cast<Vec<T, V>*>(out + int64_t(b) * osb + int64_t(j) * osn + int64_t(c) * V) = o;
  }
}

// out[b, t, :] = inv >= 0 ? routed[b, inv, :] * s : dst[b, t, :]
template <class T, int V, class I, bool HasS>
__global__ void __launch_bounds__(kThreads)
    route_forward_kernel(T* __restrict__ out, int64_t osb, int64_t osn, const T* __restrict__ dst, int64_t dsb,
                         int64_t dsn, const T* __restrict__ routed, int64_t rsb, int64_t rsn,
                         const int64_t* __restrict__ inv, const T* __restrict__ scores, int64_t N, int64_t m,
                         int64_t Dv, int64_t total) {
  using A = typename AccOf<T>::type;
  for (I t = blockIdx.x * I(blockDim.x) + threadIdx.x; t < I(total); t += I(gridDim.x) * blockDim.x) {
    const I r = t / I(Dv), c = t - r * I(Dv);
    const I b = r / I(N), n = r - b * I(N);
    const int64_t j = inv[r];
    Vec<T, V> o;
    if (j < 0) {
      o = *reinterpret_cast<const Vec<T, V>*>(dst + int64_t(b) * dsb + int64_t(n) * dsn + int64_t(c) * V);
    } else {
      const Vec<T, V> v =
          *reinterpret_cast<const Vec<T, V>*>(routed + int64_t(b) * rsb + j * rsn + int64_t(c) * V);
      if constexpr (HasS) {
        const A s = ld<A>(scores[int64_t(b) * m + j]);
#pragma unroll
        for (int e = 0; e < V; ++e) o.v[e] = st<T>(ld<A>(v.v[e]) * s);
      } else {
        o = v;
      }
    }
    *reinterpret_cast<Vec<T, V>*>(out + int64_t(b) * osb + int64_t(n) * osn + int64_t(c) * V) = o;
  }
}

// ddst[b, t, :] = inv >= 0 ? 0 : g[b, t, :]
template <class T, int V, class I>
__global__ void __launch_bounds__(kThreads)
    route_ddst_kernel(T* __restrict__ ddst, int64_t osb, int64_t osn, const T* __restrict__ g, int64_t gsb,
                      int64_t gsn, const int64_t* __restrict__ inv, int64_t N, int64_t Dv, int64_t total) {
  using A = typename AccOf<T>::type;
  for (I t = blockIdx.x * I(blockDim.x) + threadIdx.x; t < I(total); t += I(gridDim.x) * blockDim.x) {
    const I r = t / I(Dv), c = t - r * I(Dv);
    const I b = r / I(N), n = r - b * I(N);
    Vec<T, V> o;
    if (inv[r] >= 0) {
#pragma unroll
      for (int e = 0; e < V; ++e) o.v[e] = st<T>(A(0));
    } else {
      o = *reinterpret_cast<const Vec<T, V>*>(g + int64_t(b) * gsb + int64_t(n) * gsn + int64_t(c) * V);
    }
    *reinterpret_cast<Vec<T, V>*>(ddst + int64_t(b) * osb + int64_t(n) * osn + int64_t(c) * V) = o;
  }
}

// drouted[b, j, :] = inv[b, idx[b, j]] == j ? g[b, idx[b, j], :] * s : 0
template <class T, int V, class I, bool HasS>
__global__ void __launch_bounds__(kThreads)
    route_drouted_kernel(T* __restrict__ dr, int64_t osb, int64_t osn, const T* __restrict__ g, int64_t gsb,
                         int64_t gsn, const int64_t* __restrict__ idx, const int64_t* __restrict__ inv,
                         const T* __restrict__ scores, int64_t N, int64_t m, int64_t Dv, int64_t total) {
  using A = typename AccOf<T>::type;
  for (I t = blockIdx.x * I(blockDim.x) + threadIdx.x; t < I(total); t += I(gridDim.x) * blockDim.x) {
    const I r = t / I(Dv), c = t - r * I(Dv);
    const I b = r / I(m), j = r - b * I(m);
    const int64_t tok = idx[r];
    Vec<T, V> o;
    if (inv[int64_t(b) * N + tok] != int64_t(j)) {
#pragma unroll
      for (int e = 0; e < V; ++e) o.v[e] = st<T>(A(0));
    } else {
      const Vec<T, V> v = *reinterpret_cast<const Vec<T, V>*>(g + int64_t(b) * gsb + tok * gsn + int64_t(c) * V);
      if constexpr (HasS) {
        const A s = ld<A>(scores[r]);
#pragma unroll
        for (int e = 0; e < V; ++e) o.v[e] = st<T>(ld<A>(v.v[e]) * s);
      } else {
        o = v;
      }
    }
    *reinterpret_cast<Vec<T, V>*>(dr + int64_t(b) * osb + int64_t(j) * osn + int64_t(c) * V) = o;
  }
}

// ---------------------------------------------------------------- row dots (one warp per row)

// dscores[b, j] = <g[b, j], x[b, idx[b, j]]>; with `inv`: 0 unless inv[b, idx[b, j]] == j
template <class T>
__global__ void __launch_bounds__(kThreads)
    dscores_kernel(T* __restrict__ ds, const T* __restrict__ a, int64_t asb, int64_t asn, bool a_at_idx,
                   const T* __restrict__ x, int64_t xsb, int64_t xsn, bool x_at_idx, const int64_t* __restrict__ idx,
                   const int64_t* __restrict__ inv, int64_t N, int64_t m, int64_t D, int64_t rows) {
  using A = typename AccOf<T>::type;
  const int lane = threadIdx.x % colt5::cuda::kWarp;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x / colt5::cuda::kWarp);
  for (int64_t r = int64_t(blockIdx.x) * (blockDim.x / colt5::cuda::kWarp) + threadIdx.x / colt5::cuda::kWarp;
       r < rows; r += warps) {
    const int64_t b = r / m, j = r - b * m, tok = idx[r];
    A s = 0;
    if (!inv || inv[b * N + tok] == j) {
      const T* ar = a + b * asb + (a_at_idx ? tok : j) * asn;
      const T* xr = x + b * xsb + (x_at_idx ? tok : j) * xsn;
      for (int64_t c = lane; c < D; c += colt5::cuda::kWarp) s += ld<A>(ar[c]) * ld<A>(xr[c]);
      s = warp_reduce(s, SumF<A>{});
    }
    if (lane == 0) ds[r] = st<T>(s);
  }
}

// ---------------------------------------------------------------- inverse maps

template <class U>
__global__ void fill_kernel(U* __restrict__ p, U v, int64_t count) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += int64_t(gridDim.x) * blockDim.x)
    p[i] = v;
}

// route_back: inv[b, idx[b, j]] = max j
__global__ void route_inverse_kernel(long long* __restrict__ inv, const int64_t* __restrict__ idx, int64_t N,
                                     int64_t m, int64_t total) {
  for (int64_t r = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; r < total; r += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = r / m, j = r - b * m;
    atomicMax(inv + b * N + idx[r], static_cast<long long>(j));
  }
}

// gather backward: inv[b, r, idx[b, r, jj]] = jj; a taken slot raises *dup
__global__ void gather_inverse_kernel(int* __restrict__ inv, int* __restrict__ dup, const int64_t* __restrict__ idx,
                                      int64_t N, int64_t n, int64_t total) {
  for (int64_t q = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; q < total; q += int64_t(gridDim.x) * blockDim.x) {
    const int64_t br = q / n, jj = q - br * n;
    if (atomicCAS(inv + br * N + idx[q], -1, static_cast<int>(jj)) != -1) atomicExch(dup, 1);
  }
}

// dx[b, t, :] = sum_r g[b, r * n + inv[b, r, t], :] * s   (r in order; skipped when *dup)
template <class T, int V, class I, bool HasS>
__global__ void __launch_bounds__(kThreads)
    gather_backward_kernel(T* __restrict__ dx, int64_t osb, int64_t osn, const T* __restrict__ g, int64_t gsb,
                           int64_t gsn, const int* __restrict__ inv, const int* __restrict__ dup,
                           const T* __restrict__ scores, int64_t N, int64_t R, int64_t n, int64_t Dv, int64_t total) {
  using A = typename AccOf<T>::type;
  if (*dup) return;
  for (I t = blockIdx.x * I(blockDim.x) + threadIdx.x; t < I(total); t += I(gridDim.x) * blockDim.x) {
    const I row = t / I(Dv), c = t - row * I(Dv);
    const I b = row / I(N), tok = row - b * I(N);
    A acc[V];
#pragma unroll
    for (int e = 0; e < V; ++e) acc[e] = 0;
    for (int64_t r = 0; r < R; ++r) {
      const int j = inv[(int64_t(b) * R + r) * N + tok];
      if (j < 0) continue;
      const int64_t jr = r * n + j;
      const Vec<T, V> v = *reinterpret_cast<const Vec<T, V>*>(g + int64_t(b) * gsb + jr * gsn + int64_t(c) * V);
      if constexpr (HasS) {
        const A s = ld<A>(scores[int64_t(b) * R * n + jr]);
#pragma unroll
        for (int e = 0; e < V; ++e) acc[e] += ld<A>(v.v[e]) * s;
      } else {
#pragma unroll
        for (int e = 0; e < V; ++e) acc[e] += ld<A>(v.v[e]);
      }
    }
    Vec<T, V> o;
#pragma unroll
    for (int e = 0; e < V; ++e) o.v[e] = st<T>(acc[e]);
    *reinterpret_cast<Vec<T, V>*>(dx + int64_t(b) * osb + int64_t(tok) * osn + int64_t(c) * V) = o;
  }
}

// Fallback when *dup: thread (b, c) zeroes column c of dx[b] and adds every routed row in order.
template <class T, bool HasS>
__global__ void __launch_bounds__(kThreads)
    gather_backward_ordered_kernel(T* __restrict__ dx, int64_t osb, int64_t osn, const T* __restrict__ g, int64_t gsb,
                                   int64_t gsn, const int64_t* __restrict__ idx, const int* __restrict__ dup,
                                   const T* __restrict__ scores, int64_t N, int64_t m, int64_t D, int64_t total) {
  using A = typename AccOf<T>::type;
  if (!*dup) return;
  for (int64_t q = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; q < total; q += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = q / D, c = q - b * D;
    T* col = dx + b * osb + c;
    for (int64_t t = 0; t < N; ++t) col[t * osn] = st<T>(A(0));
    for (int64_t j = 0; j < m; ++j) {
      const A s = HasS ? ld<A>(scores[b * m + j]) : A(1);
      T& o = col[idx[b * m + j] * osn];
      o = st<T>(ld<A>(o) + ld<A>(g[b * gsb + j * gsn + c]) * s);
    }
  }
}

// ---------------------------------------------------------------- dispatch helpers

template <class F>
void by_dtype(DType dt, const char* op, F&& f) {
  switch (dt) {
    case DType::f32: f(float{}); return;
    case DType::f64: f(double{}); return;
    case DType::bf16: f(bf16_t{}); return;
    case DType::f16: f(f16_t{}); return;
    default: break;
  }
  COLT5_FAIL(op, ": dtype must be f32, f64, bf16 or f16, got ", dtype_name(dt));
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Elements per thread: a 16-byte vector when D, every pointer and every row stride allow it.
template <class T>
int vec_width(int64_t D, std::initializer_list<const void*> ptrs, std::initializer_list<int64_t> strides) {
  constexpr int W = 16 / sizeof(T);
  if (W <= 1 || D % W != 0) return 1;
  for (const void* p : ptrs)
    if (p && !aligned16(p)) return 1;
  for (int64_t s : strides)
    if (s % W != 0) return 1;
  return W;
}

template <int V>
using VecC = std::integral_constant<int, V>;

// Calls f(VecC<V>, I) with V = 1 or 16 / sizeof(T) elements per thread, I the narrowest safe index type.
template <class T, class F>
void launch_v(int vw, int64_t total_elems, F&& f) {
  constexpr int W = 16 / sizeof(T) > 0 ? 16 / sizeof(T) : 1;
  const bool small = total_elems < (int64_t{1} << 31);
  if (vw == W && W > 1) {
    if (small) f(VecC<W>{}, uint32_t{});
    else f(VecC<W>{}, uint64_t{});
  } else {
    if (small) f(VecC<1>{}, uint32_t{});
    else f(VecC<1>{}, uint64_t{});
  }
}

}  // namespace

void gather_rows(const RoutingDims& d, RowsOut out, RowsIn x, const int64_t* idx, const void* scores,
                 cudaStream_t stream) {
  const char* op = "cuda::gather_rows";
  check_routing_dims(d, op);
  const int64_t m = d.m(), total = d.B * m * d.D;
  if (total == 0) return;
  auto run = [&](auto tag) {
    using T = decltype(tag);
    const int vw = vec_width<T>(d.D, {out.p, x.p}, {out.sb, out.sn, x.sb, x.sn});
    launch_v<T>(vw, total, [&](auto vc, auto ic) {
      constexpr int V = decltype(vc)::value;
      using I = decltype(ic);
      const int64_t t = total / V;
      if (scores)
        gather_kernel<T, V, I, true><<<blocks_for(t), kThreads, 0, stream>>>(
            static_cast<T*>(out.p), out.sb, out.sn, static_cast<const T*>(x.p), x.sb, x.sn, idx,
            static_cast<const T*>(scores), m, d.D / V, t);
      else
        gather_kernel<T, V, I, false><<<blocks_for(t), kThreads, 0, stream>>>(
            static_cast<T*>(out.p), out.sb, out.sn, static_cast<const T*>(x.p), x.sb, x.sn, idx, nullptr, m,
            d.D / V, t);
      CUDA_CHECK_LAUNCH();
    });
  };
  if (d.dtype == DType::b8) {
    COLT5_CHECK(!scores, op, ": bool rows take no scores");
    // bool rows are moved as bytes, one per thread
    gather_kernel<uint8_t, 1, uint64_t, false><<<blocks_for(total), kThreads, 0, stream>>>(
        static_cast<uint8_t*>(out.p), out.sb, out.sn, static_cast<const uint8_t*>(x.p), x.sb, x.sn, idx, nullptr, m,
        d.D, total);
    CUDA_CHECK_LAUNCH();
    return;
  }
  by_dtype(d.dtype, op, run);
}

size_t gather_rows_backward_workspace_bytes(const RoutingDims& d) {
  return 16 + sizeof(int) * static_cast<size_t>(d.B * d.R * d.N);
}

void gather_rows_backward(const RoutingDims& d, RowsOut dx, RowsIn g, const int64_t* idx, const void* scores,
                          void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  const char* op = "cuda::gather_rows_backward";
  check_routing_dims(d, op);
  const int64_t total = d.B * d.N * d.D;
  if (total == 0) return;
  COLT5_CHECK(d.N < (int64_t{1} << 31) && d.n < (int64_t{1} << 31), op, ": sequence too long: N=", d.N, " n=", d.n);
  const size_t need = gather_rows_backward_workspace_bytes(d);
  COLT5_CHECK(workspace && workspace_bytes >= need, op, ": workspace of ", workspace_bytes, " bytes given, ", need,
              " needed");
  int* dup = static_cast<int*>(workspace);
  int* inv = reinterpret_cast<int*>(static_cast<char*>(workspace) + 16);
  const int64_t ninv = d.B * d.R * d.N, nidx = d.B * d.m();
  CUDA_CHECK(cudaMemsetAsync(dup, 0, sizeof(int), stream));
  fill_kernel<int><<<blocks_for(ninv), kThreads, 0, stream>>>(inv, -1, ninv);
  CUDA_CHECK_LAUNCH();
  if (nidx > 0) {
    gather_inverse_kernel<<<blocks_for(nidx), kThreads, 0, stream>>>(inv, dup, idx, d.N, d.n, nidx);
    CUDA_CHECK_LAUNCH();
  }
  by_dtype(d.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    const T* s = static_cast<const T*>(scores);
    const int vw = vec_width<T>(d.D, {dx.p, g.p}, {dx.sb, dx.sn, g.sb, g.sn});
    launch_v<T>(vw, total, [&](auto vc, auto ic) {
      constexpr int V = decltype(vc)::value;
      using I = decltype(ic);
      const int64_t t = total / V;
      if (s)
        gather_backward_kernel<T, V, I, true><<<blocks_for(t), kThreads, 0, stream>>>(
            static_cast<T*>(dx.p), dx.sb, dx.sn, static_cast<const T*>(g.p), g.sb, g.sn, inv, dup, s, d.N, d.R, d.n,
            d.D / V, t);
      else
        gather_backward_kernel<T, V, I, false><<<blocks_for(t), kThreads, 0, stream>>>(
            static_cast<T*>(dx.p), dx.sb, dx.sn, static_cast<const T*>(g.p), g.sb, g.sn, inv, dup, nullptr, d.N, d.R,
            d.n, d.D / V, t);
      CUDA_CHECK_LAUNCH();
    });
    const int64_t cols = d.B * d.D;
    if (s)
      gather_backward_ordered_kernel<T, true><<<blocks_for(cols), kThreads, 0, stream>>>(
          static_cast<T*>(dx.p), dx.sb, dx.sn, static_cast<const T*>(g.p), g.sb, g.sn, idx, dup, s, d.N, d.m(), d.D,
          cols);
    else
      gather_backward_ordered_kernel<T, false><<<blocks_for(cols), kThreads, 0, stream>>>(
          static_cast<T*>(dx.p), dx.sb, dx.sn, static_cast<const T*>(g.p), g.sb, g.sn, idx, dup, nullptr, d.N, d.m(),
          d.D, cols);
    CUDA_CHECK_LAUNCH();
  });
}

void gather_rows_dscores(const RoutingDims& d, void* dscores, RowsIn g, RowsIn x, const int64_t* idx,
                         cudaStream_t stream) {
  const char* op = "cuda::gather_rows_dscores";
  check_routing_dims(d, op);
  const int64_t rows = d.B * d.m();
  if (rows == 0) return;
  by_dtype(d.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    const unsigned grid = blocks_for(rows * colt5::cuda::kWarp);
    dscores_kernel<T><<<grid, kThreads, 0, stream>>>(static_cast<T*>(dscores), static_cast<const T*>(g.p), g.sb, g.sn,
                                                     false, static_cast<const T*>(x.p), x.sb, x.sn, true, idx, nullptr,
                                                     d.N, d.m(), d.D, rows);
    CUDA_CHECK_LAUNCH();
  });
}

void route_back_inverse(const RoutingDims& d, const int64_t* idx, int64_t* inv, cudaStream_t stream) {
  const char* op = "cuda::route_back_inverse";
  check_routing_dims(d, op);
  COLT5_CHECK(d.R == 1, op, ": route_back takes (B, n) indices, got R=", d.R);
  const int64_t ninv = d.B * d.N, nidx = d.B * d.m();
  if (ninv == 0) return;
  fill_kernel<long long><<<blocks_for(ninv), kThreads, 0, stream>>>(reinterpret_cast<long long*>(inv), -1LL, ninv);
  CUDA_CHECK_LAUNCH();
  if (nidx > 0) {
    route_inverse_kernel<<<blocks_for(nidx), kThreads, 0, stream>>>(reinterpret_cast<long long*>(inv), idx, d.N,
                                                                   d.m(), nidx);
    CUDA_CHECK_LAUNCH();
  }
}

void route_back_forward(const RoutingDims& d, RowsOut out, RowsIn dst, RowsIn routed, const int64_t* inv,
                        const void* scores, cudaStream_t stream) {
  const char* op = "cuda::route_back_forward";
  check_routing_dims(d, op);
  const int64_t total = d.B * d.N * d.D;
  if (total == 0) return;
  by_dtype(d.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    const T* s = static_cast<const T*>(scores);
    const int vw = vec_width<T>(d.D, {out.p, dst.p, routed.p}, {out.sb, out.sn, dst.sb, dst.sn, routed.sb, routed.sn});
    launch_v<T>(vw, total, [&](auto vc, auto ic) {
      constexpr int V = decltype(vc)::value;
      using I = decltype(ic);
      const int64_t t = total / V;
      if (s)
        route_forward_kernel<T, V, I, true><<<blocks_for(t), kThreads, 0, stream>>>(
            static_cast<T*>(out.p), out.sb, out.sn, static_cast<const T*>(dst.p), dst.sb, dst.sn,
            static_cast<const T*>(routed.p), routed.sb, routed.sn, inv, s, d.N, d.m(), d.D / V, t);
      else
        route_forward_kernel<T, V, I, false><<<blocks_for(t), kThreads, 0, stream>>>(
            static_cast<T*>(out.p), out.sb, out.sn, static_cast<const T*>(dst.p), dst.sb, dst.sn,
            static_cast<const T*>(routed.p), routed.sb, routed.sn, inv, nullptr, d.N, d.m(), d.D / V, t);
      CUDA_CHECK_LAUNCH();
    });
  });
}

void route_back_backward(const RoutingDims& d, RowsOut ddst, RowsOut drouted, void* dscores, RowsIn g, RowsIn routed,
                         const int64_t* idx, const int64_t* inv, const void* scores, cudaStream_t stream) {
  const char* op = "cuda::route_back_backward";
  check_routing_dims(d, op);
  by_dtype(d.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    const T* s = static_cast<const T*>(scores);
    const int64_t tot_dst = d.B * d.N * d.D, tot_r = d.B * d.m() * d.D;
    if (ddst.p && tot_dst > 0) {
      const int vw = vec_width<T>(d.D, {ddst.p, g.p}, {ddst.sb, ddst.sn, g.sb, g.sn});
      launch_v<T>(vw, tot_dst, [&](auto vc, auto ic) {
      constexpr int V = decltype(vc)::value;
      using I = decltype(ic);
        const int64_t t = tot_dst / V;
        route_ddst_kernel<T, V, I><<<blocks_for(t), kThreads, 0, stream>>>(
            static_cast<T*>(ddst.p), ddst.sb, ddst.sn, static_cast<const T*>(g.p), g.sb, g.sn, inv, d.N, d.D / V, t);
        CUDA_CHECK_LAUNCH();
      });
    }
    if (drouted.p && tot_r > 0) {
      const int vw = vec_width<T>(d.D, {drouted.p, g.p}, {drouted.sb, drouted.sn, g.sb, g.sn});
      launch_v<T>(vw, tot_r, [&](auto vc, auto ic) {
      constexpr int V = decltype(vc)::value;
      using I = decltype(ic);
        const int64_t t = tot_r / V;
        if (s)
          route_drouted_kernel<T, V, I, true><<<blocks_for(t), kThreads, 0, stream>>>(
              static_cast<T*>(drouted.p), drouted.sb, drouted.sn, static_cast<const T*>(g.p), g.sb, g.sn, idx, inv, s,
              d.N, d.m(), d.D / V, t);
        else
          route_drouted_kernel<T, V, I, false><<<blocks_for(t), kThreads, 0, stream>>>(
              static_cast<T*>(drouted.p), drouted.sb, drouted.sn, static_cast<const T*>(g.p), g.sb, g.sn, idx, inv,
              nullptr, d.N, d.m(), d.D / V, t);
        CUDA_CHECK_LAUNCH();
      });
    }
    const int64_t rows = d.B * d.m();
    if (dscores && rows > 0) {
      dscores_kernel<T><<<blocks_for(rows * colt5::cuda::kWarp), kThreads, 0, stream>>>(
          static_cast<T*>(dscores), static_cast<const T*>(g.p), g.sb, g.sn, true, static_cast<const T*>(routed.p),
          routed.sb, routed.sn, false, idx, inv, d.N, d.m(), d.D, rows);
      CUDA_CHECK_LAUNCH();
    }
  });
}

}  // namespace colt5::kernels::cuda
