// CPU elementwise kernels over a Geometry (operand 0 = output).
#pragma once
#include "engine/strided.h"
#include "kernels/elementwise_ops.h"

namespace colt5::kernels::cpu {

// out and in have dtype dt (f32/f64; logical_not: bool).
void unary(UnaryOp op, double p0, double p1, DType dt, void* out, const void* in, const Geometry<2>& g);
// out, a, b have dtype dt (f32/f64; add/sub/mul/div/maximum/minimum also i64).
void binary(BinaryOp op, DType dt, void* out, const void* a, const void* b, const Geometry<3>& g);
// a, b have dtype dt (any but halves); out is bool.
void compare(CompareOp op, DType dt, bool* out, const void* a, const void* b, const Geometry<3>& g);
// out = cond ? a : b; out, a, b have dtype dt.
void where(DType dt, void* out, const bool* cond, const void* a, const void* b, const Geometry<4>& g);

}  // namespace colt5::kernels::cpu
