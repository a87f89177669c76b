// Strided copy with dtype conversion, and fill, on the device's current stream.
//   - same dtype, both contiguous: cudaMemcpyAsync (the copy engine's rate);
//   - same dtype, strided: moves elements as raw 1/2/4/8-byte words (exact
//     for every dtype);
//   - different dtypes: converts through double, exactly like the CPU copy.
#include "kernels/cuda/copy.h"

#include "engine/cuda/kernel_utils.cuh"

namespace colt5::kernels::cuda {
namespace {

using colt5::cuda::geometry_offsets;

constexpr int kThreads = 256;

template <class D, class S, class I>
__global__ void __launch_bounds__(kThreads) copy_kernel(D* __restrict__ dst, const S* __restrict__ src, Geometry<2> g) {
  const I n = static_cast<I>(g.numel);
  for (I i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    int64_t off[2];
    geometry_offsets<2, I>(g, i, off);
    if constexpr (std::is_same_v<D, S>) dst[off[0]] = src[off[1]];
    else dst[off[0]] = colt5::cuda::from_f64<D>(colt5::cuda::to_f64(src[off[1]]));
  }
}

template <class T, class I>
__global__ void __launch_bounds__(kThreads) fill_kernel(T* __restrict__ dst, T value, Geometry<1> g) {
  const I n = static_cast<I>(g.numel);
  for (I i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    int64_t off[1];
    geometry_offsets<1, I>(g, i, off);
    dst[off[0]] = value;
  }
}

template <class D, class S>
void launch_copy(void* dst, const void* src, const Geometry<2>& g, int device) {
  cudaStream_t s = colt5::cuda::current_stream(device);
  const unsigned grid = colt5::cuda::grid_for(g.numel, kThreads, device);
  if (g.numel < (int64_t{1} << 31))
    copy_kernel<D, S, uint32_t><<<grid, kThreads, 0, s>>>(static_cast<D*>(dst), static_cast<const S*>(src), g);
  else
    copy_kernel<D, S, uint64_t><<<grid, kThreads, 0, s>>>(static_cast<D*>(dst), static_cast<const S*>(src), g);
  CUDA_CHECK_LAUNCH();
}

// Raw word of the element size: same-dtype copies move bits, not values.
template <class F>
void dispatch_word(size_t size, F&& f) {
  switch (size) {
    case 1: f(uint8_t{}); return;
    case 2: f(uint16_t{}); return;
    case 4: f(uint32_t{}); return;
    case 8: f(uint64_t{}); return;
  }
  COLT5_FAIL("copy: unsupported element size ", size);
}

}  // namespace

void copy(void* dst, DType dt, const void* src, DType st, const Geometry<2>& g, int device) {
  if (g.numel == 0) return;
  colt5::cuda::DeviceGuard guard(device);
  if (dt == st) {
    const size_t es = dtype_size(dt);
    const bool flat = g.ndim == 0 || (g.ndim == 1 && g.strides[0][0] == 1 && g.strides[1][0] == 1);
    if (flat) {
      CUDA_CHECK(cudaMemcpyAsync(dst, src, g.numel * es, cudaMemcpyDeviceToDevice,
                                 colt5::cuda::current_stream(device)));
      return;
    }
    dispatch_word(es, [&](auto w) {
      using W = decltype(w);
      launch_copy<W, W>(dst, src, g, device);
    });
    return;
  }
  dispatch_all(dt, "copy", [&](auto dtag) {
    using D = decltype(dtag);
    dispatch_all(st, "copy", [&](auto stag) {
      using S = decltype(stag);
      if constexpr (!std::is_same_v<D, S>) launch_copy<D, S>(dst, src, g, device);
    });
  });
}

void fill(void* dst, DType dt, double value, const Geometry<1>& g, int device) {
  if (g.numel == 0) return;
  colt5::cuda::DeviceGuard guard(device);
  cudaStream_t s = colt5::cuda::current_stream(device);
  const unsigned grid = colt5::cuda::grid_for(g.numel, kThreads, device);
  dispatch_all(dt, "fill", [&](auto tag) {
    using T = decltype(tag);
    // Converted on the host with the host's rules; written as raw words.
    T v = from_double<T>(value);
    dispatch_word(sizeof(T), [&](auto w) {
      using W = decltype(w);
      W bits;
      std::memcpy(&bits, &v, sizeof(W));
      if (g.numel < (int64_t{1} << 31))
        fill_kernel<W, uint32_t><<<grid, kThreads, 0, s>>>(static_cast<W*>(dst), bits, g);
      else
        fill_kernel<W, uint64_t><<<grid, kThreads, 0, s>>>(static_cast<W*>(dst), bits, g);
      CUDA_CHECK_LAUNCH();
    });
  });
}

}  // namespace colt5::kernels::cuda
