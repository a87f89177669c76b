// Caching allocator: size-bucketed free lists per (device, stream). Blocks are
// rounded up (512 B for small, 2 MiB granularity above 1 MiB) and reused; the
// driver is asked only when no cached block fits. On out-of-memory the cache
// is emptied once and the request retried; a second failure throws with the
// requested size and what is cached.
#include "engine/cuda/memory.h"

#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "engine/cuda/check.h"

namespace colt5::cuda {
namespace {

constexpr int kMaxDevices = 16;

size_t round_size(size_t n) {
  if (n == 0) n = 1;
  if (n < (1u << 20)) return (n + 511) / 512 * 512;
  return (n + (2u << 20) - 1) / (2u << 20) * (2u << 20);
}

struct DeviceState {
  std::mutex mu;
  // free blocks by rounded size (multimap: best fit = lower_bound)
  std::multimap<size_t, void*> free_blocks;
  std::unordered_map<void*, size_t> live;  // ptr -> rounded size
  int64_t current = 0, peak = 0, cached = 0, driver_allocs = 0;
  cudaStream_t stream = nullptr;  // default: legacy stream 0 until set
};

DeviceState& state(int d) {
  static DeviceState s[kMaxDevices];
  COLT5_CHECK(d >= 0 && d < kMaxDevices, "cuda: device index ", d, " out of range");
  return s[d];
}

struct DeviceGuard {
  int prev = -1;
  explicit DeviceGuard(int d) {
    CUDA_CHECK(cudaGetDevice(&prev));
    if (prev != d) CUDA_CHECK(cudaSetDevice(d));
  }
  ~DeviceGuard() {
    int cur;
    if (cudaGetDevice(&cur) == cudaSuccess && cur != prev) cudaSetDevice(prev);
  }
};

void release_cached(DeviceState& st) {
  for (auto& [sz, p] : st.free_blocks) {
    cudaFree(p);
    st.cached -= static_cast<int64_t>(sz);
  }
  st.free_blocks.clear();
}

}  // namespace

void* alloc(size_t nbytes, int device) {
  DeviceState& st = state(device);
  size_t sz = round_size(nbytes);
  std::lock_guard<std::mutex> lk(st.mu);
  void* p = nullptr;
  // Best fit among cached blocks, but never hand out a block more than twice
  // the request (keeps big blocks for big tensors).
  auto it = st.free_blocks.lower_bound(sz);
  if (it != st.free_blocks.end() && it->first <= 2 * sz + (1u << 20)) {
    sz = it->first;
    p = it->second;
    st.free_blocks.erase(it);
    st.cached -= static_cast<int64_t>(sz);
  } else {
    DeviceGuard g(device);
    cudaError_t e = cudaMalloc(&p, sz);
    if (e != cudaSuccess) {
      cudaGetLastError();
      int64_t cached = st.cached;
      release_cached(st);
      e = cudaMalloc(&p, sz);
      if (e != cudaSuccess) {
        cudaGetLastError();
        size_t free_b = 0, total_b = 0;
        cudaMemGetInfo(&free_b, &total_b);
        COLT5_FAIL("CUDA out of memory on cuda:", device, ": requested ", nbytes, " bytes (", sz,
                   " rounded); in use by tensors ", st.current, " bytes; cached ", cached,
                   " bytes (released and retried); driver reports ", free_b, " free of ", total_b);
      }
    }
    ++st.driver_allocs;
  }
  st.live[p] = sz;
  st.current += static_cast<int64_t>(sz);
  if (st.current > st.peak) st.peak = st.current;
  return p;
}

void free(void* ptr, size_t, int device) {
  if (!ptr) return;
  DeviceState& st = state(device);
  std::lock_guard<std::mutex> lk(st.mu);
  auto it = st.live.find(ptr);
  if (it == st.live.end()) return;
  size_t sz = it->second;
  st.live.erase(it);
  st.current -= static_cast<int64_t>(sz);
  // All engine work on a device is ordered on its one current stream, so a
  // block freed here may be reused by the next launch on that stream.
  st.free_blocks.emplace(sz, ptr);
  st.cached += static_cast<int64_t>(sz);
}

void copy(void* dst, Device dd, const void* src, Device sd, size_t nbytes) {
  if (dd.is_cuda() && sd.is_cuda()) {
    DeviceGuard g(dd.index);
    CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToDevice, current_stream(dd.index)));
    if (dd.index != sd.index) CUDA_CHECK(cudaStreamSynchronize(current_stream(dd.index)));
    return;
  }
  int d = dd.is_cuda() ? dd.index : sd.index;
  DeviceGuard g(d);
  cudaStream_t s = current_stream(d);
  cudaMemcpyKind kind = dd.is_cuda() ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost;
  CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, kind, s));
  // Host memory is pageable: synchronise so the host buffer may be reused/read.
  CUDA_CHECK(cudaStreamSynchronize(s));
}

void memset_zero(void* dst, size_t nbytes, int device) {
  DeviceGuard g(device);
  CUDA_CHECK(cudaMemsetAsync(dst, 0, nbytes, current_stream(device)));
}

MemoryStats memory_stats(int device) {
  DeviceState& st = state(device);
  std::lock_guard<std::mutex> lk(st.mu);
  MemoryStats m;
  m.current_bytes = st.current;
  m.peak_bytes = st.peak;
  m.cached_bytes = st.cached;
  m.driver_allocs = st.driver_allocs;
  return m;
}

void reset_peak_memory(int device) {
  DeviceState& st = state(device);
  std::lock_guard<std::mutex> lk(st.mu);
  st.peak = st.current;
}

void empty_cache(int device) {
  DeviceState& st = state(device);
  std::lock_guard<std::mutex> lk(st.mu);
  DeviceGuard g(device);
  CUDA_CHECK(cudaDeviceSynchronize());
  release_cached(st);
}

cudaStream_t current_stream(int device) { return state(device).stream; }
void set_current_stream(int device, cudaStream_t s) { state(device).stream = s; }
void set_device(int device) { CUDA_CHECK(cudaSetDevice(device)); }
void synchronize(int device) {
  DeviceGuard g(device);
  CUDA_CHECK(cudaStreamSynchronize(current_stream(device)));
}

}  // namespace colt5::cuda
