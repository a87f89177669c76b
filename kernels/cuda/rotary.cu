// CUDA rotary embedding (contract in kernels/cpu/rotary.h).
#include "kernels/cuda/rotary.h"

#include <algorithm>

#include "engine/cuda/kernel_utils.cuh"

namespace colt5::kernels::cuda {
namespace {

constexpr int kThreads = 256;

template <class C, class T>
__device__ __forceinline__ C ld(T v) {
  if constexpr (std::is_same_v<T, f16_t>) return static_cast<C>(__half2float(__ushort_as_half(v.bits)));
  else if constexpr (std::is_same_v<T, bf16_t>) return static_cast<C>(__bfloat162float(__ushort_as_bfloat16(v.bits)));
  else return static_cast<C>(v);
}
template <class T, class C>
__device__ __forceinline__ T st(C v) {
  if constexpr (std::is_same_v<T, f16_t>) return T{__half_as_ushort(__float2half_rn(static_cast<float>(v)))};
  else if constexpr (std::is_same_v<T, bf16_t>) return T{__bfloat16_as_ushort(__float2bfloat16_rn(static_cast<float>(v)))};
  else return static_cast<T>(v);
}

__device__ __forceinline__ void sin_cos(float f, float* s, float* c) { sincosf(f, s, c); }
__device__ __forceinline__ void sin_cos(double f, double* s, double* c) { sincos(f, s, c); }

// Thread k of a row: k < h rotates channels (k, k + h); h <= k < d - h copies channel k + h.
template <class T, class C, class I>
__global__ void __launch_bounds__(kThreads)
    rotary_kernel(T* __restrict__ out, const T* __restrict__ x, const C* __restrict__ pos,
                  const C* __restrict__ invf, Geometry<3> rows, int64_t h, int64_t per_row, int64_t total,
                  bool inverse) {
  for (I t = blockIdx.x * I(blockDim.x) + threadIdx.x; t < I(total); t += I(gridDim.x) * blockDim.x) {
    const I r = t / I(per_row), k = t - r * I(per_row);
    int64_t off[3];
    colt5::cuda::geometry_offsets<3, I>(rows, r, off);
    T* o = out + off[0];
    const T* xi = x + off[1];
    if (int64_t(k) < h) {
      const C f = pos[off[2]] * invf[k];
      C s, c;
      sin_cos(f, &s, &c);
      if (inverse) s = -s;
      const C x1 = ld<C>(xi[k]), x2 = ld<C>(xi[k + h]);
      o[k] = st<T>(x1 * c - x2 * s);
      o[k + h] = st<T>(x2 * c + x1 * s);
    } else {
      o[k + h] = xi[k + h];
    }
  }
}

template <class T, class C>
void launch(const RotaryParams& p, void* out, const void* x, cudaStream_t stream) {
  const int64_t per_row = p.d - p.half, total = p.rows.numel * per_row;
  if (total == 0) return;
  const unsigned grid =
      static_cast<unsigned>(std::clamp<int64_t>((total + kThreads - 1) / kThreads, 1, int64_t{1} << 20));
  if (total < (int64_t{1} << 31))
    rotary_kernel<T, C, uint32_t><<<grid, kThreads, 0, stream>>>(
        static_cast<T*>(out), static_cast<const T*>(x), static_cast<const C*>(p.positions),
        static_cast<const C*>(p.inv_freq), p.rows, p.half, per_row, total, p.inverse);
  else
    rotary_kernel<T, C, uint64_t><<<grid, kThreads, 0, stream>>>(
        static_cast<T*>(out), static_cast<const T*>(x), static_cast<const C*>(p.positions),
        static_cast<const C*>(p.inv_freq), p.rows, p.half, per_row, total, p.inverse);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void apply_rotary(const RotaryParams& p, void* out, const void* x, cudaStream_t stream) {
  const char* op = "cuda::apply_rotary";
  COLT5_CHECK(p.half >= 0 && 2 * p.half <= p.d, op, ": need 2 * len(inv_freq) <= d, got len(inv_freq)=", p.half,
              " d=", p.d);
  if (p.rows.numel == 0 || p.d == 0) return;
  COLT5_CHECK(out && x && (p.half == 0 || (p.positions && p.inv_freq)), op, ": null pointer");
  switch (p.dtype) {
    case DType::f32: return launch<float, float>(p, out, x, stream);
    case DType::f64: return launch<double, double>(p, out, x, stream);
    case DType::bf16: return launch<bf16_t, float>(p, out, x, stream);
    case DType::f16: return launch<f16_t, float>(p, out, x, stream);
    default: break;
  }
  COLT5_FAIL(op, ": dtype must be f32, f64, bf16 or f16, got ", dtype_name(p.dtype));
}

}  // namespace colt5::kernels::cuda
