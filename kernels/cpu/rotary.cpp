// CPU rotary embedding (contract in the header): one task per block of rows.
#include "kernels/cpu/rotary.h"

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "engine/dispatch.h"
#include "engine/error.h"
#include "engine/parallel.h"

namespace colt5::kernels::cpu {
namespace {

template <class C, class T>
inline C ld(T v) {
  if constexpr (std::is_same_v<T, f16_t>) return static_cast<C>(f16_to_float(v.bits));
  else if constexpr (std::is_same_v<T, bf16_t>) return static_cast<C>(bf16_to_float(v.bits));
  else return static_cast<C>(v);
}
template <class T, class C>
inline T st(C v) {
  if constexpr (std::is_same_v<T, f16_t>) return T{float_to_f16(static_cast<float>(v))};
  else if constexpr (std::is_same_v<T, bf16_t>) return T{float_to_bf16(static_cast<float>(v))};
  else return static_cast<T>(v);
}

template <class T, class C>
void rotary_impl(const RotaryParams& p, T* out, const T* x) {
  const Geometry<3>& g = p.rows;
  const C* pos = static_cast<const C*>(p.positions);
  const C* invf = static_cast<const C*>(p.inv_freq);
  const int64_t d = p.d, h = p.half;
  const int64_t grain = std::max<int64_t>(1, 8192 / std::max<int64_t>(d, 1));
  parallel_for(0, g.numel, grain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      int64_t off[3] = {0, 0, 0};
      int64_t rem = r;
      for (int dd = g.ndim - 1; dd >= 0; --dd) {
        const int64_t i = rem % g.shape[dd];
        rem /= g.shape[dd];
        for (int k = 0; k < 3; ++k) off[k] += i * g.strides[k][dd];
      }
      T* o = out + off[0];
      const T* xi = x + off[1];
      const C t = pos[off[2]];
      for (int64_t i = 0; i < h; ++i) {
        const C f = t * invf[i];
        const C c = std::cos(f), s = p.inverse ? -std::sin(f) : std::sin(f);
        const C x1 = ld<C>(xi[i]), x2 = ld<C>(xi[i + h]);
        o[i] = st<T>(x1 * c - x2 * s);
        o[i + h] = st<T>(x2 * c + x1 * s);
      }
      for (int64_t c = 2 * h; c < d; ++c) o[c] = xi[c];
    }
  });
}

}  // namespace

void apply_rotary(const RotaryParams& p, void* out, const void* x) {
  const char* op = "cpu::apply_rotary";
  COLT5_CHECK(p.half >= 0 && 2 * p.half <= p.d, op, ": need 2 * len(inv_freq) <= d, got len(inv_freq)=", p.half,
              " d=", p.d);
  if (p.rows.numel == 0 || p.d == 0) return;
  COLT5_CHECK(out && x && (p.half == 0 || (p.positions && p.inv_freq)), op, ": null pointer");
  switch (p.dtype) {
    case DType::f32: return rotary_impl<float, float>(p, static_cast<float*>(out), static_cast<const float*>(x));
    case DType::f64: return rotary_impl<double, double>(p, static_cast<double*>(out), static_cast<const double*>(x));
    case DType::bf16: return rotary_impl<bf16_t, float>(p, static_cast<bf16_t*>(out), static_cast<const bf16_t*>(x));
    case DType::f16: return rotary_impl<f16_t, float>(p, static_cast<f16_t*>(out), static_cast<const f16_t*>(x));
    default: break;
  }
  COLT5_FAIL(op, ": dtype must be f32, f64, bf16 or f16, got ", dtype_name(p.dtype));
}

}  // namespace colt5::kernels::cpu
