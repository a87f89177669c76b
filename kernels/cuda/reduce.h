// CUDA reductions: same contract as kernels/cpu/reduce.h, on the current stream.
#pragma once
#include "engine/strided.h"
#include "kernels/cpu/reduce.h"

namespace colt5::kernels::cuda {

using cpu::ReduceOp;
void reduce(ReduceOp op, DType dt, void* out, const void* x, const Geometry<2>& kept, const Geometry<1>& red, int device);

}  // namespace colt5::kernels::cuda
