// CUDA reductions (sum, max, min, argmax, argmin), deterministic: no atomics,
// every output is reduced in a fixed order that depends only on the shape.
//
// The input is a matrix of outputs o (geometry `kept`) by reduced elements r
// (geometry `red`). Two kernels:
//   - inner: the reduced elements are contiguous (innermost stride 1), or
//     nothing else is: a group of threads (a warp, or a block of 256 for long
//     rows) strides over r, then reduces with warp shuffles and shared memory;
//   - outer: the outputs are contiguous (e.g. a sum over the batch dim of a
//     (B, C) tensor): each thread column owns one output and walks r, threads
//     stacked in y split r and are combined in shared memory in order.
// Few long reductions are split over several blocks per output, each writing
// a partial; a second kernel merges the partials in order (still no atomics).
// Sums of f32 accumulate in f64 (the CPU contract); max/min propagate NaN;
// argmax/argmin return the first index of the extreme (first NaN wins).
#include "kernels/cuda/reduce.h"

#include <limits>

#include "engine/cuda/kernel_utils.cuh"

namespace colt5::kernels::cuda {
namespace {

using colt5::cuda::geometry_offsets;
using colt5::cuda::kWarp;

// ---------------------------------------------------------------- ops

template <class T> struct AccOf { using type = T; };
template <> struct AccOf<float> { using type = double; };

template <class T>
struct SumR {
  using A = typename AccOf<T>::type;
  using O = T;
  __device__ static A init() { return A(0); }
  __device__ static void step(A& a, T x, int64_t) { a += static_cast<A>(x); }
  __device__ static void merge(A& a, const A& b) { a += b; }
  __device__ static O done(const A& a) { return static_cast<O>(a); }
};

__device__ __forceinline__ int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }

template <class T> __device__ __forceinline__ bool is_nan(T x) { return x != x; }

template <class T>
struct MaxR {
  using A = T;
  using O = T;
  __device__ static A init() { return -std::numeric_limits<T>::infinity(); }
  __device__ static void step(A& a, T x, int64_t) { a = (x > a || is_nan(x)) ? x : a; }
  __device__ static void merge(A& a, const A& b) { step(a, b, 0); }
  __device__ static O done(const A& a) { return a; }
};
template <class T>
struct MinR {
  using A = T;
  using O = T;
  __device__ static A init() { return std::numeric_limits<T>::infinity(); }
  __device__ static void step(A& a, T x, int64_t) { a = (x < a || is_nan(x)) ? x : a; }
  __device__ static void merge(A& a, const A& b) { step(a, b, 0); }
  __device__ static O done(const A& a) { return a; }
};

template <class T>
struct ArgA {
  T v;
  int64_t i;  // -1: nothing seen yet
};

template <class T, bool kMax>
struct ArgR {
  using A = ArgA<T>;
  using O = int64_t;
  // Does (v1, i1) win over (v2, i2)? NaN beats everything, then the extreme
  // value, then the lower index: the first extreme, whatever the merge order.
  __device__ static bool better(T v1, int64_t i1, T v2, int64_t i2) {
    if (i2 < 0) return true;
    if (i1 < 0) return false;
    const bool n1 = is_nan(v1), n2 = is_nan(v2);
    if (n1 || n2) return n1 && (!n2 || i1 < i2);
    if (v1 == v2) return i1 < i2;
    return kMax ? v1 > v2 : v1 < v2;
  }
  __device__ static A init() { return A{T(0), -1}; }
  __device__ static void step(A& a, T x, int64_t r) {
    if (better(x, r, a.v, a.i)) a = A{x, r};
  }
  __device__ static void merge(A& a, const A& b) {
    if (better(b.v, b.i, a.v, a.i)) a = b;
  }
  __device__ static O done(const A& a) { return a.i; }
};

template <class T>
__device__ __forceinline__ T shfl_down(T v, int d) {
  return __shfl_down_sync(0xffffffffu, v, d);
}
template <class T>
__device__ __forceinline__ ArgA<T> shfl_down(ArgA<T> v, int d) {
  return ArgA<T>{__shfl_down_sync(0xffffffffu, v.v, d), __shfl_down_sync(0xffffffffu, v.i, d)};
}

// Tree over the warp; lane 0 holds the result. Fixed order.
template <class Op>
__device__ __forceinline__ typename Op::A warp_merge(typename Op::A a) {
#pragma unroll
  for (int d = kWarp / 2; d >= 1; d >>= 1) {
    typename Op::A b = shfl_down(a, d);
    Op::merge(a, b);
  }
  return a;
}

// Offset of reduced element r (1-D fast path: r * stride).
template <class I>
__device__ __forceinline__ int64_t red_offset(const Geometry<1>& red, I r) {
  if (red.ndim <= 1) return red.ndim == 0 ? 0 : static_cast<int64_t>(r) * red.strides[0][0];
  int64_t off[1];
  geometry_offsets<1, I>(red, r, off);
  return off[0];
}

// ---------------------------------------------------------------- inner

// Block = (G threads per group) x (groups per block). Group j of block b
// reduces output o = (b * groups + j) / nsplit, split s = ... % nsplit, over
// r in [s * chunk, min(nred, (s + 1) * chunk)).
template <class Op, class T, class I, int G>
__global__ void reduce_inner_kernel(const T* __restrict__ x, typename Op::O* __restrict__ out,
                                    typename Op::A* __restrict__ partial, Geometry<2> kept, Geometry<1> red,
                                    int64_t nout, int64_t nred, int64_t chunk, int nsplit) {
  using A = typename Op::A;
  constexpr int kGroupsPerBlock = 256 / G;
  const int lane = threadIdx.x % G, group = threadIdx.x / G;
  const int64_t job = static_cast<int64_t>(blockIdx.x) * kGroupsPerBlock + group;
  const bool active = job < nout * nsplit;
  const int64_t o = job / nsplit;
  const int s = static_cast<int>(job % nsplit);
  A acc = Op::init();
  int64_t koff[2] = {0, 0};
  if (active) {
    geometry_offsets<2, uint64_t>(kept, static_cast<uint64_t>(o), koff);
    const T* base = x + koff[1];
    const int64_t r0 = s * chunk, r1 = imin(nred, r0 + chunk);
    if (red.ndim == 1 && red.strides[0][0] == 1) {
      for (int64_t r = r0 + lane; r < r1; r += G) Op::step(acc, base[r], r);
    } else {
      for (int64_t r = r0 + lane; r < r1; r += G) Op::step(acc, base[red_offset<I>(red, static_cast<I>(r))], r);
    }
  }
  acc = warp_merge<Op>(acc);
  if constexpr (G > kWarp) {
    __shared__ A smem[256 / kWarp];
    const int warp = threadIdx.x / kWarp;
    if (threadIdx.x % kWarp == 0) smem[warp] = acc;
    __syncthreads();
    if (lane == 0) {  // the group's first warp holds its first partial
      acc = smem[warp];
      for (int w = 1; w < G / kWarp; ++w) Op::merge(acc, smem[warp + w]);
    }
  }
  if (active && lane == 0) {
    if (nsplit == 1) out[koff[0]] = Op::done(acc);
    else partial[o * nsplit + s] = acc;
  }
}

// ---------------------------------------------------------------- outer

// Block (BX, BY): thread (tx, ty) of block (bx, s) owns output o = bx * BX + tx
// and reduces r = r0 + ty, r0 + ty + BY, ... of split s; the BY partial
// results are merged in ty order.
template <class Op, class T, class I>
__global__ void reduce_outer_kernel(const T* __restrict__ x, typename Op::O* __restrict__ out,
                                    typename Op::A* __restrict__ partial, Geometry<2> kept, Geometry<1> red,
                                    int64_t nout, int64_t nred, int64_t chunk, int nsplit) {
  using A = typename Op::A;
  __shared__ A smem[256];
  const int tx = threadIdx.x, ty = threadIdx.y, bx = blockDim.x, by = blockDim.y;
  const int64_t o = static_cast<int64_t>(blockIdx.x) * bx + tx;
  const int s = blockIdx.y;
  A acc = Op::init();
  int64_t koff[2] = {0, 0};
  if (o < nout) {
    geometry_offsets<2, I>(kept, static_cast<I>(o), koff);
    const T* base = x + koff[1];
    const int64_t r0 = s * chunk, r1 = imin(nred, r0 + chunk);
    if (red.ndim == 1) {  // 8 loads in flight per thread, then the steps in r order
      const int64_t st = red.strides[0][0];
      int64_t r = r0 + ty;
      for (; r + 7 * by < r1; r += 8 * by) {
        T v[8];
#pragma unroll
        for (int u = 0; u < 8; ++u) v[u] = base[(r + u * by) * st];
#pragma unroll
        for (int u = 0; u < 8; ++u) Op::step(acc, v[u], r + u * by);
      }
      for (; r < r1; r += by) Op::step(acc, base[r * st], r);
    } else {
      for (int64_t r = r0 + ty; r < r1; r += by) Op::step(acc, base[red_offset<I>(red, static_cast<I>(r))], r);
    }
  }
  if (by > 1) {
    smem[ty * bx + tx] = acc;
    __syncthreads();
    if (ty == 0) {
      for (int k = 1; k < by; ++k) Op::merge(acc, smem[k * bx + tx]);
    }
  }
  if (ty == 0 && o < nout) {
    if (nsplit == 1) out[koff[0]] = Op::done(acc);
    else partial[o * nsplit + s] = acc;
  }
}

// Merges the nsplit partials of each output in order.
template <class Op>
__global__ void reduce_partials_kernel(const typename Op::A* __restrict__ partial, typename Op::O* __restrict__ out,
                                       Geometry<2> kept, int64_t nout, int nsplit) {
  const int64_t o = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (o >= nout) return;
  typename Op::A acc = partial[o * nsplit];
  for (int s = 1; s < nsplit; ++s) Op::merge(acc, partial[o * nsplit + s]);
  int64_t koff[2];
  geometry_offsets<2, uint64_t>(kept, static_cast<uint64_t>(o), koff);
  out[koff[0]] = Op::done(acc);
}

// ---------------------------------------------------------------- launch

// Blocks to aim for when a reduction is split: constants, so that the split
// (and hence the rounding) depends on the shape only. Measured on the H100:
// the outer kernel wants a full wave (8 blocks of 256 per SM), the inner one
// did best with half that (2^26 -> 1: 2412 GB/s at 512 jobs, 2239 at 1024).
constexpr int64_t kTargetJobsInner = 512;
constexpr int64_t kTargetJobsOuter = 1024;
constexpr int64_t kMinChunk = 4096;

template <class Op, class T>
void run(const void* xv, void* outv, const Geometry<2>& kept, const Geometry<1>& red, int device) {
  using A = typename Op::A;
  const T* x = static_cast<const T*>(xv);
  auto* out = static_cast<typename Op::O*>(outv);
  const int64_t nout = kept.numel, nred = red.numel;
  if (nout == 0) return;
  cudaStream_t stream = colt5::cuda::current_stream(device);
  const bool small_index = nred < (int64_t{1} << 31) && nout < (int64_t{1} << 31);

  const bool red_contig = red.ndim >= 1 && red.strides[0][red.ndim - 1] == 1;
  const bool out_contig = kept.ndim >= 1 && kept.strides[1][kept.ndim - 1] == 1;
  const bool outer = !red_contig && (out_contig || nred <= 16);

  if (!outer) {
    const bool long_rows = nred > 2048;
    int nsplit = 1;
    if (nout < kTargetJobsInner && nred >= 2 * kMinChunk)
      nsplit = static_cast<int>(std::min<int64_t>((kTargetJobsInner + nout - 1) / nout, nred / kMinChunk));
    const int64_t chunk = (nred + nsplit - 1) / nsplit;
    colt5::cuda::Workspace ws(nsplit > 1 ? sizeof(A) * nout * nsplit : 0, device);
    const int64_t jobs = nout * nsplit;
    auto launch = [&](auto g_tag, auto i_tag) {
      constexpr int G = decltype(g_tag)::value;
      using I = decltype(i_tag);
      const int64_t blocks = (jobs + (256 / G) - 1) / (256 / G);
      reduce_inner_kernel<Op, T, I, G><<<static_cast<unsigned>(blocks), 256, 0, stream>>>(
          x, out, ws.as<A>(), kept, red, nout, nred, chunk, nsplit);
      CUDA_CHECK_LAUNCH();
    };
    using G256 = std::integral_constant<int, 256>;
    using G32 = std::integral_constant<int, 32>;
    if (long_rows) {
      if (small_index) launch(G256{}, uint32_t{});
      else launch(G256{}, uint64_t{});
    } else {
      if (small_index) launch(G32{}, uint32_t{});
      else launch(G32{}, uint64_t{});
    }
    if (nsplit > 1) {
      reduce_partials_kernel<Op><<<static_cast<unsigned>((nout + 255) / 256), 256, 0, stream>>>(ws.as<A>(), out, kept,
                                                                                               nout, nsplit);
      CUDA_CHECK_LAUNCH();
    }
    return;
  }

  // outer
  int bx = 32;
  while (bx < 256 && bx < nout) bx *= 2;
  const int by = 256 / bx;
  const int64_t gx = (nout + bx - 1) / bx;
  int nsplit = 1;
  if (gx < kTargetJobsOuter && nred >= 2 * 256)
    nsplit = static_cast<int>(std::min<int64_t>({(kTargetJobsOuter + gx - 1) / gx, nred / 256, 65535}));
  const int64_t chunk = (nred + nsplit - 1) / nsplit;
  colt5::cuda::Workspace ws(nsplit > 1 ? sizeof(A) * nout * nsplit : 0, device);
  dim3 grid(static_cast<unsigned>(gx), static_cast<unsigned>(nsplit)), block(bx, by);
  if (small_index)
    reduce_outer_kernel<Op, T, uint32_t><<<grid, block, 0, stream>>>(x, out, ws.as<A>(), kept, red, nout, nred, chunk,
                                                                      nsplit);
  else
    reduce_outer_kernel<Op, T, uint64_t><<<grid, block, 0, stream>>>(x, out, ws.as<A>(), kept, red, nout, nred, chunk,
                                                                      nsplit);
  CUDA_CHECK_LAUNCH();
  if (nsplit > 1) {
    reduce_partials_kernel<Op><<<static_cast<unsigned>((nout + 255) / 256), 256, 0, stream>>>(ws.as<A>(), out, kept,
                                                                                             nout, nsplit);
    CUDA_CHECK_LAUNCH();
  }
}

}  // namespace

void reduce(ReduceOp op, DType dt, void* out, const void* x, const Geometry<2>& kept, const Geometry<1>& red,
            int device) {
  if (kept.numel == 0) return;
  COLT5_CHECK(red.numel > 0, "reduce: cannot reduce over an empty dim");
  colt5::cuda::DeviceGuard guard(device);
  dispatch_numeric(dt, "reduce", [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_same_v<T, int64_t>) {
      COLT5_CHECK(op == ReduceOp::sum, "reduce: only sum is supported for i64 tensors");
      run<SumR<int64_t>, int64_t>(x, out, kept, red, device);
    } else {
      switch (op) {
        case ReduceOp::sum: run<SumR<T>, T>(x, out, kept, red, device); break;
        case ReduceOp::max: run<MaxR<T>, T>(x, out, kept, red, device); break;
        case ReduceOp::min: run<MinR<T>, T>(x, out, kept, red, device); break;
        case ReduceOp::argmax: run<ArgR<T, true>, T>(x, out, kept, red, device); break;
        case ReduceOp::argmin: run<ArgR<T, false>, T>(x, out, kept, red, device); break;
      }
    }
  });
}

}  // namespace colt5::kernels::cuda
