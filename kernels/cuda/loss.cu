// CUDA cross-entropy with fused log-softmax (contract in kernels/cpu/loss.h,
// the reference).
//
// Forward: the targets are checked first by a small kernel that records the
// first bad row (atomicMin: the same row whatever the schedule); the host reads
// that flag back (one stream synchronisation) and throws colt5::Error naming
// the value, its row and C before any loss is computed. Then a group of threads
// per row (a warp up to 2048 classes, a block of 256 beyond): max, sum of
// exp(x - max) in f64 for f32, lse and the loss.
// Backward: one thread per logit, dlogits = dl * (exp(x - lse) - [c == t]).
#include "kernels/cuda/loss.h"

#include <limits>

#include "engine/cuda/kernel_utils.cuh"

namespace colt5::kernels::cuda {
namespace {

using colt5::cuda::group_reduce;
using colt5::cuda::MaxSkipNanF;
using colt5::cuda::SumF;

template <class T> using Acc = std::conditional_t<std::is_same_v<T, float>, double, T>;
template <class T> __device__ __forceinline__ T ninf() { return -std::numeric_limits<T>::infinity(); }
constexpr int block_threads(int G) { return G >= 256 ? G : 256; }

__global__ void check_targets_kernel(unsigned long long* __restrict__ bad_row, const int64_t* __restrict__ target,
                                     int64_t rows, int64_t C, int64_t ignore) {
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; r < rows;
       r += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = target[r];
    if (t != ignore && (t < 0 || t >= C)) atomicMin(bad_row, static_cast<unsigned long long>(r));
  }
}

template <class T, int G>
__global__ void __launch_bounds__(block_threads(G))
    ce_forward_kernel(T* __restrict__ losses, T* __restrict__ lse, const T* __restrict__ x,
                      const int64_t* __restrict__ target, int64_t rows, int64_t C, int64_t ignore) {
  using A = Acc<T>;
  constexpr int kThreads = block_threads(G), kR = kThreads / G;
  __shared__ A smem_a[kThreads / 32];
  __shared__ T smem_t[kThreads / 32];
  const int lane = threadIdx.x % G;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kR + threadIdx.x / G;
  const bool valid = row < rows;
  const T* xr = x + (valid ? row : 0) * C;
  T m = ninf<T>();
  if (valid)
    for (int64_t c = lane; c < C; c += G) m = xr[c] > m ? xr[c] : m;
  m = group_reduce<G>(m, MaxSkipNanF<T>{}, smem_t);
  A s = 0;
  if (valid && m != ninf<T>())
    for (int64_t c = lane; c < C; c += G) {
      const T v = xr[c];
      // v == m counts 1 even for m = +inf (as the CPU's online sum does); -inf counts 0; NaN poisons s.
      s += v == m ? A(1) : static_cast<A>(std::exp(v - m));
    }
  s = group_reduce<G>(s, SumF<A>{}, smem_a);
  if (!valid || lane != 0) return;
  const T l = m == ninf<T>() ? m : static_cast<T>(static_cast<A>(m) + std::log(s));
  lse[row] = l;
  const int64_t t = target[row];
  if (t == ignore) losses[row] = 0;
  else if (xr[t] == ninf<T>()) losses[row] = std::numeric_limits<T>::infinity();
  else losses[row] = l - xr[t];
}

template <class T>
__global__ void ce_backward_kernel(T* __restrict__ dx, const T* __restrict__ dl, const T* __restrict__ x,
                                   const T* __restrict__ lse, const int64_t* __restrict__ target, int64_t rows,
                                   int64_t C, int64_t ignore) {
  const int64_t total = rows * C;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / C, c = i - r * C;
    const int64_t t = target[r];
    if (t == ignore) {
      dx[i] = 0;
      continue;
    }
    const T d = dl[r], l = lse[r];
    T v = l == ninf<T>() ? T(0) : d * std::exp(x[i] - l);
    if (c == t) v -= d;
    dx[i] = v;
  }
}

template <class T>
void forward(T* losses, T* lse, const T* x, const int64_t* target, int64_t rows, int64_t C, int64_t ignore,
             int device) {
  if (rows == 0) return;
  colt5::cuda::DeviceGuard guard(device);
  cudaStream_t s = colt5::cuda::current_stream(device);
  {
    colt5::cuda::Workspace flag(sizeof(unsigned long long), device);
    CUDA_CHECK(cudaMemsetAsync(flag.get(), 0xff, sizeof(unsigned long long), s));
    check_targets_kernel<<<colt5::cuda::grid_for(rows, 256, device), 256, 0, s>>>(
        flag.as<unsigned long long>(), target, rows, C, ignore);
    CUDA_CHECK_LAUNCH();
    unsigned long long bad = 0;
    CUDA_CHECK(cudaMemcpyAsync(&bad, flag.get(), sizeof(bad), cudaMemcpyDeviceToHost, s));
    CUDA_CHECK(cudaStreamSynchronize(s));
    if (bad != ~0ull) {
      int64_t t = 0;
      CUDA_CHECK(cudaMemcpyAsync(&t, target + bad, sizeof(t), cudaMemcpyDeviceToHost, s));
      CUDA_CHECK(cudaStreamSynchronize(s));
      COLT5_FAIL("cross_entropy: target value ", t, " (row ", bad, ") is out of range for C = ", C,
                 " classes (expected 0..", C - 1, " or ignore_index ", ignore, ")");
    }
  }
  auto launch = [&](auto g) {
    constexpr int G = decltype(g)::value;
    constexpr int R = block_threads(G) / G;
    ce_forward_kernel<T, G><<<static_cast<unsigned>((rows + R - 1) / R), block_threads(G), 0, s>>>(
        losses, lse, x, target, rows, C, ignore);
  };
  if (C <= 2048) launch(std::integral_constant<int, 32>{});
  else launch(std::integral_constant<int, 256>{});
  CUDA_CHECK_LAUNCH();
}

template <class T>
void backward(T* dx, const T* dl, const T* x, const T* lse, const int64_t* target, int64_t rows, int64_t C,
              int64_t ignore, int device) {
  if (rows * C == 0) return;
  colt5::cuda::DeviceGuard guard(device);
  ce_backward_kernel<T><<<colt5::cuda::grid_for(rows * C, 256, device), 256, 0, colt5::cuda::current_stream(device)>>>(
      dx, dl, x, lse, target, rows, C, ignore);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void cross_entropy_forward(float* losses, float* lse, const float* logits, const int64_t* target, int64_t rows,
                           int64_t C, int64_t ignore_index, int device) {
  forward(losses, lse, logits, target, rows, C, ignore_index, device);
}
void cross_entropy_forward(double* losses, double* lse, const double* logits, const int64_t* target, int64_t rows,
                           int64_t C, int64_t ignore_index, int device) {
  forward(losses, lse, logits, target, rows, C, ignore_index, device);
}
void cross_entropy_backward(float* dlogits, const float* dlosses, const float* logits, const float* lse,
                            const int64_t* target, int64_t rows, int64_t C, int64_t ignore_index, int device) {
  backward(dlogits, dlosses, logits, lse, target, rows, C, ignore_index, device);
}
void cross_entropy_backward(double* dlogits, const double* dlosses, const double* logits, const double* lse,
                            const int64_t* target, int64_t rows, int64_t C, int64_t ignore_index, int device) {
  backward(dlogits, dlosses, logits, lse, target, rows, C, ignore_index, device);
}

}  // namespace colt5::kernels::cuda
