// Device memory. CPU: 64-byte aligned host memory. CUDA: the caching
// allocator of engine/cuda (size-bucketed free lists per device and stream).
#pragma once
#include <cstddef>
#include <cstdint>

#include "engine/device.h"

namespace colt5 {

void* device_alloc(size_t nbytes, Device device);
void device_free(void* ptr, size_t nbytes, Device device);

// Copies nbytes between any two devices (host<->device copies synchronise, so
// the data is usable when this returns).
void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes);
// Fills nbytes with zero bytes.
void zero_bytes(void* dst, Device device, size_t nbytes);

struct MemoryStats {
  int64_t current_bytes = 0;  // held by live tensors
  int64_t peak_bytes = 0;     // max of current since the last reset
  int64_t cached_bytes = 0;   // held by the allocator's free lists (CUDA)
  int64_t driver_allocs = 0;  // calls to the driver's allocator (cudaMalloc / aligned_alloc)
};
MemoryStats memory_stats(Device device);
void reset_peak_memory(Device device);

}  // namespace colt5
