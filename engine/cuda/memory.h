// CUDA memory and streams for the engine: the caching allocator behind
// device_alloc for CUDA devices, copies, and the current stream per device.
#pragma once
#include <cstddef>
#include <cuda_runtime_api.h>

#include "engine/allocator.h"
#include "engine/device.h"

namespace colt5::cuda {

void* alloc(size_t nbytes, int device);
void free(void* ptr, size_t nbytes, int device);
void copy(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes);
void memset_zero(void* dst, size_t nbytes, int device);
MemoryStats memory_stats(int device);
void reset_peak_memory(int device);
// Returns every cached, unused block to the driver.
void empty_cache(int device);

// The stream every kernel of the engine on this device is launched on.
cudaStream_t current_stream(int device);
void set_current_stream(int device, cudaStream_t stream);
// Makes `device` the CUDA runtime's current device for this thread.
void set_device(int device);
void synchronize(int device);

}  // namespace colt5::cuda
