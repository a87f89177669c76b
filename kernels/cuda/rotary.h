// Rotary position embedding on CUDA: host API (plain C++, no nvcc needed).
// Same params and results as kernels/cpu/rotary.h (the reference). One thread
// per (row, channel pair) plus one per passed-through channel; angles with
// sincosf / sincos (full-range accurate, not the fast intrinsics), so CPU and
// GPU agree to a few ulp. Device pointers; queued on `stream`, no sync.
#pragma once
#include "kernels/cpu/rotary.h"

struct CUstream_st;
typedef CUstream_st* cudaStream_t;

namespace colt5::kernels::cuda {

using colt5::kernels::RotaryParams;

void apply_rotary(const RotaryParams& p, void* out, const void* x, cudaStream_t stream);

}  // namespace colt5::kernels::cuda
