// Strided copy with dtype conversion and fill on a CUDA device (current stream).
#pragma once
#include "engine/strided.h"

namespace colt5::kernels::cuda {

void copy(void* dst, DType dst_dtype, const void* src, DType src_dtype, const Geometry<2>& g, int device);
void fill(void* dst, DType dtype, double value, const Geometry<1>& g, int device);

}  // namespace colt5::kernels::cuda
