// Gather / scatter along one dim on a CUDA device (current stream), for
// ops/index.cpp. Plain C++ header: includable without nvcc. Same contract as
// kernels/cpu/index.h (IndexGeometry, operand order, in-range indices), plus:
//   - scatter with accumulate must stay deterministic (no float atomics whose
//     order varies): e.g. one thread per line walking j in order, or a
//     sort-by-destination + segmented sum;
//   - indices_in_range copies its answer to the host (synchronises the stream).
#pragma once
#include "kernels/cpu/index.h"

namespace colt5::kernels::cuda {

using cpu::IndexGeometry;

void gather(DType dt, void* dst, const int64_t* idx, const void* src, const IndexGeometry& g, int device);
void scatter(DType dt, void* dst, const int64_t* idx, const void* src, const IndexGeometry& g, bool accumulate,
             const char* op, int device);
bool indices_in_range(const int64_t* idx, const Geometry<1>& g, int64_t size, int64_t* bad, int device);

}  // namespace colt5::kernels::cuda
