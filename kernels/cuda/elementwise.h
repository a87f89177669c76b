// CUDA elementwise kernels: same contract as kernels/cpu/elementwise.h, on the
// device's current stream.
#pragma once
#include "engine/strided.h"
#include "kernels/elementwise_ops.h"

namespace colt5::kernels::cuda {

void unary(UnaryOp op, double p0, double p1, DType dt, void* out, const void* in, const Geometry<2>& g, int device);
void binary(BinaryOp op, DType dt, void* out, const void* a, const void* b, const Geometry<3>& g, int device);
void compare(CompareOp op, DType dt, bool* out, const void* a, const void* b, const Geometry<3>& g, int device);
void where(DType dt, void* out, const bool* cond, const void* a, const void* b, const Geometry<4>& g, int device);

}  // namespace colt5::kernels::cuda
