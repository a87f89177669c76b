// Dtype dispatch: run a generic lambda with the C++ element type of a dtype.
//   dispatch_float(t.dtype(), "softmax", [&](auto tag) { using T = decltype(tag); ... });
#pragma once
#include <cstdint>

#include "engine/dtype.h"
#include "engine/error.h"

namespace colt5 {

// Storage-only half types (converted to float for compute).
struct f16_t { uint16_t bits; };
struct bf16_t { uint16_t bits; };

template <class F>
auto dispatch_float(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::f32: return f(float{});
    case DType::f64: return f(double{});
    default: break;
  }
  COLT5_FAIL(op, ": expected a floating dtype (f32 or f64), got ", dtype_name(t));
}

template <class F>
auto dispatch_numeric(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::f32: return f(float{});
    case DType::f64: return f(double{});
    case DType::i64: return f(int64_t{});
    default: break;
  }
  COLT5_FAIL(op, ": expected f32, f64 or i64, got ", dtype_name(t));
}

template <class F>
auto dispatch_all(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::f32: return f(float{});
    case DType::f64: return f(double{});
    case DType::i64: return f(int64_t{});
    case DType::b8: return f(bool{});
    case DType::f16: return f(f16_t{});
    case DType::bf16: return f(bf16_t{});
  }
  COLT5_FAIL(op, ": unknown dtype");
}

// Host conversions between element types.
template <class T> inline double to_double(T v) { return static_cast<double>(v); }
template <> inline double to_double(f16_t v) { return f16_to_float(v.bits); }
template <> inline double to_double(bf16_t v) { return bf16_to_float(v.bits); }
template <class T> inline T from_double(double v) { return static_cast<T>(v); }
template <> inline bool from_double<bool>(double v) { return v != 0.0; }
template <> inline f16_t from_double<f16_t>(double v) { return {float_to_f16(static_cast<float>(v))}; }
template <> inline bf16_t from_double<bf16_t>(double v) { return {float_to_bf16(static_cast<float>(v))}; }

}  // namespace colt5
