// CUDA unary elementwise kernels: the scalar functors of
// kernels/elementwise_ops.h (one definition for both backends) mapped by the
// loops of engine/cuda/loops.cuh. Binary ops, comparisons and where are in
// elementwise_binary.cu (split for compile time).
#include "engine/cuda/loops.cuh"
#include "kernels/cuda/elementwise.h"

namespace colt5::kernels::cuda {
namespace {
struct LogicalNot {
  __device__ __forceinline__ bool operator()(bool x) const { return !x; }
};
}  // namespace

void unary(UnaryOp op, double p0, double p1, DType dt, void* out, const void* in, const Geometry<2>& g, int device) {
  if (g.numel == 0) return;
  colt5::cuda::DeviceGuard guard(device);
  if (op == UnaryOp::logical_not) {
    COLT5_CHECK(dt == DType::b8, "logical_not: expected bool, got ", dtype_name(dt));
    colt5::cuda::map1<bool, bool>(LogicalNot{}, out, in, g, device);
    return;
  }
  dispatch_float(dt, unary_op_name(op), [&](auto tag) {
    using T = decltype(tag);
    switch (op) {
#define COLT5_CASE(name, ...)                                                     \
  case UnaryOp::name:                                                             \
    colt5::cuda::map1<T, T>(Unary_##name{p0, p1}, out, in, g, device);           \
    break;
      COLT5_UNARY_FLOAT_OPS(COLT5_CASE)
#undef COLT5_CASE
      default: break;
    }
  });
}

}  // namespace colt5::kernels::cuda
