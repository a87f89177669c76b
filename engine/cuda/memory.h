// CUDA memory and streams for the engine: the caching allocator behind
// device_alloc for CUDA devices, copies, and the current stream per device.
//
// Streams. Every engine kernel, copy and cuBLAS call on device d is issued on
// current_stream(d). By default that is one stream per device, created on
// first use with cudaStreamCreate (a *blocking* stream: it also orders itself
// with the legacy default stream, so a stray launch without a stream argument
// is still correctly ordered with engine work). set_current_stream replaces it
// (e.g. with a user stream or a capture stream); the caller owns such a stream.
//
// Allocator. Blocks are cached per (device, stream) in size-bucketed free
// lists: a block freed by a tensor goes back to the list of the stream it was
// allocated on, and is handed out again only to work on that same stream,
// which the stream orders after every earlier use. Sizes are rounded (512 B
// below 1 MiB, 2 MiB above), so a training loop that repeats its shapes stops
// calling cudaMalloc after its first step. Using a tensor on a stream other
// than the one it was allocated on is the caller's business (synchronise
// before its storage is freed).
//
// Out of memory: the cache is released once and the allocation retried; a
// second failure throws colt5::Error naming the request, what tensors hold,
// what was cached and what the driver reports free.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>

#include "engine/allocator.h"
#include "engine/device.h"

namespace colt5::cuda {

void* alloc(size_t nbytes, int device);
void free(void* ptr, size_t nbytes, int device);
void copy(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes);
void memset_zero(void* dst, size_t nbytes, int device);
// current_bytes / peak_bytes count rounded block sizes held by live tensors;
// cached_bytes what the free lists hold; driver_allocs every cudaMalloc so far.
MemoryStats memory_stats(int device);
void reset_peak_memory(int device);
// Returns every cached, unused block to the driver (synchronises the device).
void empty_cache(int device);

// The stream every kernel of the engine on this device is launched on.
cudaStream_t current_stream(int device);
void set_current_stream(int device, cudaStream_t stream);
// Makes `device` the CUDA runtime's current device for this thread.
void set_device(int device);
// Waits for all work on the device's current stream.
void synchronize(int device);
// Cached properties of a device (multiprocessor count, shared memory, ...).
const cudaDeviceProp& device_properties(int device);

// Makes `device` current for the scope; restores the previous one after.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = -1;
  bool changed_ = false;
};

// Scratch device memory for one launch sequence on the current stream,
// returned to the cache when the scope ends (stream order makes reuse safe).
class Workspace {
 public:
  Workspace(size_t nbytes, int device) : n_(nbytes), dev_(device), p_(nbytes ? alloc(nbytes, device) : nullptr) {}
  ~Workspace() {
    if (p_) free(p_, n_, dev_);
  }
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;
  void* get() const { return p_; }
  template <class T> T* as() const { return static_cast<T*>(p_); }

 private:
  size_t n_;
  int dev_;
  void* p_;
};

}  // namespace colt5::cuda
