// Random fills on the GPU: one thread per element in a grid-stride loop, each
// evaluating the host's own per-element function (colt5::rng, shared with
// engine/generator.cpp), so a seed gives the same tensor on either device.
// randn costs two hashes, one log, one cos and one sqrt in double per element
// (H100: ample f64 throughput for a write-bound fill).
#include "kernels/cuda/random.h"

#include <type_traits>

#include "engine/cuda/kernel_utils.cuh"
#include "engine/generator.h"

namespace colt5::kernels::cuda {
namespace {

constexpr int kThreads = 256;

struct UniformF {
  uint64_t seed, c0;
  double lo, hi;
  template <class T>
  __device__ __forceinline__ T operator()(uint64_t i) const {
    return colt5::cuda::from_f64<T>(rng::uniform_at(seed, c0 + i, lo, hi));
  }
};

struct NormalF {
  uint64_t seed, pair0;
  template <class T>
  __device__ __forceinline__ T operator()(uint64_t i) const {
    return colt5::cuda::from_f64<T>(rng::normal_at(seed, pair0 + i));
  }
};

struct IntF {
  uint64_t seed, c0;
  int64_t lo;
  uint64_t span;
  template <class T>
  __device__ __forceinline__ T operator()(uint64_t i) const {
    const int64_t v = rng::randint_at(seed, c0 + i, lo, span);
    if constexpr (std::is_same_v<T, int64_t>) return v;
    else return colt5::cuda::from_f64<T>(static_cast<double>(v));
  }
};

template <class T, class F>
__global__ void __launch_bounds__(kThreads) random_kernel(T* __restrict__ dst, int64_t n, F f) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    dst[i] = f.template operator()<T>(static_cast<uint64_t>(i));
}

template <class F>
void launch(const char* op, void* dst, DType dt, int64_t n, const F& f, int device) {
  COLT5_CHECK(n >= 0, op, ": negative element count ", n);
  if (n == 0) return;
  colt5::cuda::DeviceGuard guard(device);
  cudaStream_t s = colt5::cuda::current_stream(device);
  const unsigned grid = colt5::cuda::grid_for(n, kThreads, device);
  dispatch_all(dt, op, [&](auto tag) {
    using T = decltype(tag);
    random_kernel<T, F><<<grid, kThreads, 0, s>>>(static_cast<T*>(dst), n, f);
    CUDA_CHECK_LAUNCH();
  });
}

}  // namespace

void random_uniform(void* dst, DType dt, int64_t n, uint64_t seed, uint64_t c0, double lo, double hi, int device) {
  launch("uniform", dst, dt, n, UniformF{seed, c0, lo, hi}, device);
}

void random_normal(void* dst, DType dt, int64_t n, uint64_t seed, uint64_t pair0, int device) {
  launch("randn", dst, dt, n, NormalF{seed, pair0}, device);
}

void random_int(void* dst, DType dt, int64_t n, uint64_t seed, uint64_t c0, int64_t lo, uint64_t span, int device) {
  launch("randint", dst, dt, n, IntF{seed, c0, lo, span}, device);
}

}  // namespace colt5::kernels::cuda
