// Host-side launch helpers shared by the CUDA attention kernels
// (kernels/cuda/flash_attention.cu, kernels/cuda/local_attention.cu):
// the opt-in shared-memory limit, per-kernel dynamic shared-memory setup,
// pointer / stride alignment tests for the vectorised paths, the grid size of
// the 256-thread grid-stride helper kernels, and workspace rounding.
//
// Every function is inline or a template, so any number of translation units
// may include it without duplicate symbols. Needs the CUDA runtime (include
// from .cu files or other code built against it).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "engine/cuda/check.h"
#include "engine/error.h"
#include "kernels/cpu/flash_attention.h"  // AttnStrides

namespace colt5::kernels::cuda::launch {

// Largest dynamic shared memory a block may opt in to on the current device.
inline int max_smem_optin() {
  int dev = 0, v = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  return v;
}

// Allows kernel fn `smem` bytes of dynamic shared memory; a clear error naming
// `op` when the device cannot give that many. The limit is read once per
// kernel type (function-local static of each instantiation).
template <class KernelFn>
void prepare(KernelFn fn, size_t smem, const char* op) {
  static const int limit = max_smem_optin();
  COLT5_CHECK(smem <= size_t(limit), op, ": kernel needs ", smem, " bytes of shared memory, device allows ", limit);
  CUDA_CHECK(cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
}

// ptr is a multiple of n bytes.
inline bool aligned(const void* ptr, size_t n) { return (reinterpret_cast<uintptr_t>(ptr) % n) == 0; }

// Batch, head and row strides are all multiples of ce elements.
inline bool strides_ok(const AttnStrides& s, int64_t ce) { return s.b % ce == 0 && s.h % ce == 0 && s.n % ce == 0; }

// Blocks for a 256-thread grid-stride loop over `total` items (at most 4096).
inline int grid_for(long long total) { return int(std::min<long long>((total + 255) / 256, 4096)); }

// x rounded up to a multiple of 256 bytes (workspace sub-buffer offsets).
inline size_t round_up(size_t x) { return (x + 255) & ~size_t(255); }

}  // namespace colt5::kernels::cuda::launch
