// CPU reductions. The input is described by two geometries over its strides:
// `kept` (output dims; operand 0 = output strides, operand 1 = input strides)
// and `red` (reduced dims, input strides only).
#pragma once
#include "engine/strided.h"

namespace colt5::kernels::cpu {

enum class ReduceOp { sum, max, min, argmax, argmin };

// out has dtype dt (argmax/argmin: i64). Sums of f32 accumulate in f64.
void reduce(ReduceOp op, DType dt, void* out, const void* x, const Geometry<2>& kept, const Geometry<1>& red);

}  // namespace colt5::kernels::cpu
