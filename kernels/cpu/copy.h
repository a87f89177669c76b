// Strided copy with dtype conversion (CPU). Operand 0 of g is dst, 1 is src.
#pragma once
#include "engine/strided.h"

namespace colt5::kernels::cpu {

void copy(void* dst, DType dst_dtype, const void* src, DType src_dtype, const Geometry<2>& g);
void fill(void* dst, DType dtype, double value, const Geometry<1>& g);

}  // namespace colt5::kernels::cpu
