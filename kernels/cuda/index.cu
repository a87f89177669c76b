// CUDA gather / scatter along one dim (contract in kernels/cpu/index.h and
// kernels/cuda/index.h). Deterministic throughout, no float atomics:
//   - gather: one thread per output element (no conflicts);
//   - scatter (overwrite): one thread per line walking j in order, so the
//     last duplicate wins, as on the CPU;
//   - scatter_add: one thread per line walking j in order; or, when every line
//     shares one index sequence (index_select / embedding backward: idx
//     expanded with stride 0) and the lines are many, a stable radix sort of
//     the positions by index (CUB), then one thread per (run of equal indices,
//     line) adding its values in j order: the same sums in the same order as
//     the sequential walk, with all lines and runs in parallel;
//   - indices_in_range: one pass, the first bad element by position (atomicMin
//     on the position: the same answer whatever the schedule), read back.
#include "kernels/cuda/index.h"

#include <cub/device/device_radix_sort.cuh>

#include "engine/cuda/kernel_utils.cuh"

namespace colt5::kernels::cuda {
namespace {

using colt5::cuda::geometry_offsets;

constexpr int kThreads = 256;

// True when the dim is the dense direction of operand k (walk j innermost).
bool dim_inner(const IndexGeometry& g, int k) {
  const int nd = g.lines.ndim;
  if (nd == 0) return true;
  const int64_t a = g.dim_stride[k] < 0 ? -g.dim_stride[k] : g.dim_stride[k];
  const int64_t b = g.lines.strides[k][nd - 1] < 0 ? -g.lines.strides[k][nd - 1] : g.lines.strides[k][nd - 1];
  return a <= b;
}

template <class T, class I>
__global__ void __launch_bounds__(kThreads)
    gather_kernel(T* __restrict__ dst, const int64_t* __restrict__ idx, const T* __restrict__ src, Geometry<3> lines,
                  int64_t m, int64_t dd, int64_t di, int64_t ds, bool j_inner) {
  const I nlines = static_cast<I>(lines.numel), total = nlines * static_cast<I>(m);
  for (I t = blockIdx.x * blockDim.x + threadIdx.x; t < total; t += gridDim.x * blockDim.x) {
    I line, j;
    if (j_inner) {
      line = t / static_cast<I>(m);
      j = t - line * static_cast<I>(m);
    } else {
      j = t / nlines;
      line = t - j * nlines;
    }
    int64_t off[3];
    geometry_offsets<3, I>(lines, line, off);
    const int64_t jj = static_cast<int64_t>(j);
    dst[off[0] + jj * dd] = src[off[2] + idx[off[1] + jj * di] * ds];
  }
}

template <class T, bool Acc>
__global__ void __launch_bounds__(kThreads)
    scatter_lines_kernel(T* __restrict__ dst, const int64_t* __restrict__ idx, const T* __restrict__ src,
                         Geometry<3> lines, int64_t m, int64_t dd, int64_t di, int64_t ds) {
  for (int64_t line = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; line < lines.numel;
       line += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t off[3];
    geometry_offsets<3, uint64_t>(lines, static_cast<uint64_t>(line), off);
    T* d = dst + off[0];
    const int64_t* x = idx + off[1];
    const T* s = src + off[2];
    for (int64_t j = 0; j < m; ++j) {
      T& out = d[x[j * di] * dd];
      if constexpr (Acc) out += s[j * ds];
      else out = s[j * ds];
    }
  }
}

// keys[j] = idx[j * di] (the shared sequence), vals[j] = j.
__global__ void keys_kernel(int64_t* __restrict__ keys, int32_t* __restrict__ vals, const int64_t* __restrict__ idx,
                            int64_t m, int64_t di) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j < m) {
    keys[j] = idx[j * di];
    vals[j] = static_cast<int32_t>(j);
  }
}

// Thread (i, line), line fastest: if sorted position i starts a run of equal
// keys, adds the run's src values (in j order) into dst at that key.
template <class T, class I>
__global__ void __launch_bounds__(kThreads)
    scatter_add_runs_kernel(T* __restrict__ dst, const T* __restrict__ src, const int64_t* __restrict__ keys,
                            const int32_t* __restrict__ order, Geometry<3> lines, int64_t m, int64_t dd, int64_t ds) {
  const I nlines = static_cast<I>(lines.numel), total = nlines * static_cast<I>(m);
  for (I t = blockIdx.x * blockDim.x + threadIdx.x; t < total; t += gridDim.x * blockDim.x) {
    const I i = t / nlines, line = t - i * nlines;
    const int64_t k = keys[i];
    if (i > 0 && keys[i - 1] == k) continue;
    int64_t off[3];
    geometry_offsets<3, I>(lines, line, off);
    const T* s = src + off[2];
    T acc = dst[off[0] + k * dd];
    for (int64_t p = static_cast<int64_t>(i); p < m && keys[p] == k; ++p) acc += s[static_cast<int64_t>(order[p]) * ds];
    dst[off[0] + k * dd] = acc;
  }
}

template <class T>
void scatter_add_sorted(T* dst, const int64_t* idx, const T* src, const IndexGeometry& g, int device) {
  cudaStream_t s = colt5::cuda::current_stream(device);
  const int64_t m = g.m;
  colt5::cuda::Workspace keys_in(sizeof(int64_t) * m, device), keys_out(sizeof(int64_t) * m, device);
  colt5::cuda::Workspace vals_in(sizeof(int32_t) * m, device), vals_out(sizeof(int32_t) * m, device);
  keys_kernel<<<static_cast<unsigned>((m + kThreads - 1) / kThreads), kThreads, 0, s>>>(
      keys_in.as<int64_t>(), vals_in.as<int32_t>(), idx, m, g.dim_stride[1]);
  CUDA_CHECK_LAUNCH();
  // Keys are valid indices (checked by the caller): non-negative, so an
  // unsigned order on their low bits is the numeric order.
  size_t temp = 0;
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, temp, keys_in.as<int64_t>(), keys_out.as<int64_t>(),
                                             vals_in.as<int32_t>(), vals_out.as<int32_t>(), static_cast<int>(m), 0,
                                             63, s));
  colt5::cuda::Workspace tmp(temp, device);
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(tmp.get(), temp, keys_in.as<int64_t>(), keys_out.as<int64_t>(),
                                             vals_in.as<int32_t>(), vals_out.as<int32_t>(), static_cast<int>(m), 0,
                                             63, s));
  const int64_t total = g.lines.numel * m;
  const unsigned grid = colt5::cuda::grid_for(total, kThreads, device);
  if (total < (int64_t{1} << 31))
    scatter_add_runs_kernel<T, uint32_t><<<grid, kThreads, 0, s>>>(dst, src, keys_out.as<int64_t>(),
                                                                   vals_out.as<int32_t>(), g.lines, m,
                                                                   g.dim_stride[0], g.dim_stride[2]);
  else
    scatter_add_runs_kernel<T, uint64_t><<<grid, kThreads, 0, s>>>(dst, src, keys_out.as<int64_t>(),
                                                                   vals_out.as<int32_t>(), g.lines, m,
                                                                   g.dim_stride[0], g.dim_stride[2]);
  CUDA_CHECK_LAUNCH();
}

bool shared_index(const IndexGeometry& g) {
  for (int d = 0; d < g.lines.ndim; ++d)
    if (g.lines.strides[1][d] != 0) return false;
  return true;
}

__global__ void range_kernel(unsigned long long* __restrict__ first_bad, const int64_t* __restrict__ idx,
                             Geometry<1> g, int64_t size) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < g.numel;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t off[1];
    geometry_offsets<1, uint64_t>(g, static_cast<uint64_t>(i), off);
    const int64_t v = idx[off[0]];
    if (v < 0 || v >= size) atomicMin(first_bad, static_cast<unsigned long long>(i));
  }
}

template <class F>
void by_size(DType dt, F&& f) {
  switch (dtype_size(dt)) {
    case 1: f(uint8_t{}); break;
    case 2: f(uint16_t{}); break;
    case 4: f(uint32_t{}); break;
    default: f(uint64_t{}); break;
  }
}

}  // namespace

void gather(DType dt, void* dst, const int64_t* idx, const void* src, const IndexGeometry& g, int device) {
  const int64_t total = g.lines.numel * g.m;
  if (total == 0) return;
  colt5::cuda::DeviceGuard guard(device);
  cudaStream_t s = colt5::cuda::current_stream(device);
  const unsigned grid = colt5::cuda::grid_for(total, kThreads, device);
  const bool j_inner = dim_inner(g, 0);
  by_size(dt, [&](auto tag) {
    using T = decltype(tag);
    if (total < (int64_t{1} << 31))
      gather_kernel<T, uint32_t><<<grid, kThreads, 0, s>>>(static_cast<T*>(dst), idx, static_cast<const T*>(src),
                                                           g.lines, g.m, g.dim_stride[0], g.dim_stride[1],
                                                           g.dim_stride[2], j_inner);
    else
      gather_kernel<T, uint64_t><<<grid, kThreads, 0, s>>>(static_cast<T*>(dst), idx, static_cast<const T*>(src),
                                                           g.lines, g.m, g.dim_stride[0], g.dim_stride[1],
                                                           g.dim_stride[2], j_inner);
    CUDA_CHECK_LAUNCH();
  });
}

void scatter(DType dt, void* dst, const int64_t* idx, const void* src, const IndexGeometry& g, bool accumulate,
             const char* op, int device) {
  if (g.lines.numel == 0 || g.m == 0) return;
  colt5::cuda::DeviceGuard guard(device);
  cudaStream_t s = colt5::cuda::current_stream(device);
  const unsigned grid = colt5::cuda::grid_for(g.lines.numel, kThreads, device);
  if (!accumulate) {
    by_size(dt, [&](auto tag) {
      using T = decltype(tag);
      scatter_lines_kernel<T, false><<<grid, kThreads, 0, s>>>(static_cast<T*>(dst), idx,
                                                                static_cast<const T*>(src), g.lines, g.m,
                                                                g.dim_stride[0], g.dim_stride[1], g.dim_stride[2]);
      CUDA_CHECK_LAUNCH();
    });
    return;
  }
  dispatch_numeric(dt, op, [&](auto tag) {
    using T = decltype(tag);
    // Few long lines sharing one index sequence: sort once, sum runs in parallel.
    if (shared_index(g) && g.m >= 64 && g.m < (int64_t{1} << 31)) {
      scatter_add_sorted<T>(static_cast<T*>(dst), idx, static_cast<const T*>(src), g, device);
      return;
    }
    scatter_lines_kernel<T, true><<<grid, kThreads, 0, s>>>(static_cast<T*>(dst), idx, static_cast<const T*>(src),
                                                             g.lines, g.m, g.dim_stride[0], g.dim_stride[1],
                                                             g.dim_stride[2]);
    CUDA_CHECK_LAUNCH();
  });
}

bool indices_in_range(const int64_t* idx, const Geometry<1>& g, int64_t size, int64_t* bad, int device) {
  if (g.numel == 0) return true;
  colt5::cuda::DeviceGuard guard(device);
  cudaStream_t s = colt5::cuda::current_stream(device);
  colt5::cuda::Workspace flag(sizeof(unsigned long long), device);
  CUDA_CHECK(cudaMemsetAsync(flag.get(), 0xff, sizeof(unsigned long long), s));
  range_kernel<<<colt5::cuda::grid_for(g.numel, kThreads, device), kThreads, 0, s>>>(flag.as<unsigned long long>(),
                                                                                     idx, g, size);
  CUDA_CHECK_LAUNCH();
  unsigned long long first = 0;
  CUDA_CHECK(cudaMemcpyAsync(&first, flag.get(), sizeof(first), cudaMemcpyDeviceToHost, s));
  CUDA_CHECK(cudaStreamSynchronize(s));
  if (first == ~0ull) return true;
  // Offset of element `first` (row-major over g's dims), then its value.
  int64_t off = 0, rem = static_cast<int64_t>(first);
  for (int d = g.ndim - 1; d >= 0; --d) {
    off += (rem % g.shape[d]) * g.strides[0][d];
    rem /= g.shape[d];
  }
  CUDA_CHECK(cudaMemcpyAsync(bad, idx + off, sizeof(int64_t), cudaMemcpyDeviceToHost, s));
  CUDA_CHECK(cudaStreamSynchronize(s));
  return false;
}

}  // namespace colt5::kernels::cuda
