// CUDA binary elementwise kernels, comparisons and where (see elementwise.cu).
#include "engine/cuda/loops.cuh"
#include "kernels/cuda/elementwise.h"

namespace colt5::kernels::cuda {
namespace {

template <class T>
struct WhereBody {
  T* out;
  const bool* c;
  const T* a;
  const T* b;
  __device__ __forceinline__ void operator()(const int64_t (&o)[4]) const { out[o[0]] = c[o[1]] ? a[o[2]] : b[o[3]]; }
};

}  // namespace

void binary(BinaryOp op, DType dt, void* out, const void* a, const void* b, const Geometry<3>& g, int device) {
  if (g.numel == 0) return;
  colt5::cuda::DeviceGuard guard(device);
  using colt5::cuda::map2;
  if (dt == DType::i64) {
    using I = int64_t;
    switch (op) {
      case BinaryOp::add: map2<I, I, I>(Binary_add{}, out, a, b, g, device); return;
      case BinaryOp::sub: map2<I, I, I>(Binary_sub{}, out, a, b, g, device); return;
      case BinaryOp::mul: map2<I, I, I>(Binary_mul{}, out, a, b, g, device); return;
      case BinaryOp::div: map2<I, I, I>(Binary_div{}, out, a, b, g, device); return;
      case BinaryOp::maximum: map2<I, I, I>(Binary_maximum{}, out, a, b, g, device); return;
      case BinaryOp::minimum: map2<I, I, I>(Binary_minimum{}, out, a, b, g, device); return;
      default: COLT5_FAIL(binary_op_name(op), ": not defined for i64 tensors");
    }
  }
  dispatch_float(dt, binary_op_name(op), [&](auto tag) {
    using T = decltype(tag);
    switch (op) {
#define COLT5_CASE(name, ...) \
  case BinaryOp::name: map2<T, T, T>(Binary_##name{}, out, a, b, g, device); break;
      COLT5_BINARY_OPS(COLT5_CASE)
#undef COLT5_CASE
    }
  });
}

void compare(CompareOp op, DType dt, bool* out, const void* a, const void* b, const Geometry<3>& g, int device) {
  if (g.numel == 0) return;
  colt5::cuda::DeviceGuard guard(device);
  auto run = [&](auto tag) {
    using T = decltype(tag);
    switch (op) {
#define COLT5_CASE(name, ...) \
  case CompareOp::name: colt5::cuda::map2<bool, T, T>(Compare_##name{}, out, a, b, g, device); break;
      COLT5_COMPARE_OPS(COLT5_CASE)
#undef COLT5_CASE
    }
  };
  if (dt == DType::b8) run(bool{});
  else dispatch_numeric(dt, compare_op_name(op), run);
}

void where(DType dt, void* out, const bool* cond, const void* a, const void* b, const Geometry<4>& g, int device) {
  if (g.numel == 0) return;
  colt5::cuda::DeviceGuard guard(device);
  auto run = [&](auto tag) {
    using T = decltype(tag);
    colt5::cuda::launch_strided<4>(
        g, WhereBody<T>{static_cast<T*>(out), cond, static_cast<const T*>(a), static_cast<const T*>(b)}, device);
  };
  if (dt == DType::b8) run(bool{});
  else dispatch_numeric(dt, "where", run);
}

}  // namespace colt5::kernels::cuda
