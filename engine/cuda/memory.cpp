// Caching allocator and streams (see memory.h for the contract).
//
// Per device: one mutex, one free list per stream (a multimap from rounded
// size to block: lower_bound is the best fit), and a table of live blocks
// (pointer -> rounded size and the stream it belongs to). A cached block is
// reused for a request when it is at most twice the rounded request, so large
// blocks stay for large tensors. Nothing is split or merged: a training loop
// repeats its sizes, and exact-size reuse is what keeps it off cudaMalloc.
#include "engine/cuda/memory.h"

#include <cstdio>
#include <map>
#include <mutex>
#include <sstream>
#include <unordered_map>

#include "engine/cuda/check.h"

namespace colt5::cuda {
namespace {

constexpr int kMaxDevices = 64;
constexpr size_t kSmall = size_t{1} << 20;   // below: 512-byte granularity
constexpr size_t kLargeRound = size_t{2} << 20;  // above: 2 MiB granularity

size_t round_size(size_t n) {
  if (n == 0) n = 1;
  if (n < kSmall) return (n + 511) / 512 * 512;
  return (n + kLargeRound - 1) / kLargeRound * kLargeRound;
}

struct Block {
  size_t size;
  cudaStream_t stream;
};

struct DeviceState {
  std::mutex mu;
  std::unordered_map<cudaStream_t, std::multimap<size_t, void*>> pools;  // free blocks per stream
  std::unordered_map<void*, Block> live;
  int64_t current = 0, peak = 0, cached = 0, cached_blocks = 0, driver_allocs = 0;
  std::once_flag stream_once, props_once;
  cudaStream_t default_stream = nullptr;
  cudaStream_t stream = nullptr;
  bool stream_set = false;  // set_current_stream was called
  cudaDeviceProp props{};
};

// Never destroyed: tensors in static storage may be freed after main returns.
DeviceState& state(int d) {
  static DeviceState* s = new DeviceState[kMaxDevices];
  COLT5_CHECK(d >= 0 && d < kMaxDevices, "cuda: device index ", d, " out of range");
  return s[d];
}

void check_device(int d) {
  int n = cuda_device_count();
  COLT5_CHECK(d >= 0 && d < n, "cuda: device cuda:", d, " does not exist (", n, " CUDA device",
              n == 1 ? "" : "s", " visible)");
}

std::string bytes_str(int64_t b) {
  std::ostringstream os;
  os << b << " bytes";
  double v = static_cast<double>(b);
  if (v >= 1024.0 * 1024 * 1024) os << " (" << v / (1024.0 * 1024 * 1024) << " GiB)";
  else if (v >= 1024.0 * 1024) os << " (" << v / (1024.0 * 1024) << " MiB)";
  return os.str();
}

// Frees every cached block of every stream. Caller holds st.mu and has made
// the device current.
void release_cached(DeviceState& st) {
  for (auto& [stream, pool] : st.pools) {
    for (auto& [sz, p] : pool) {
      cudaFree(p);
      st.cached -= static_cast<int64_t>(sz);
      --st.cached_blocks;
    }
    pool.clear();
  }
}

}  // namespace

// ------------------------------------------------------------ device guard

DeviceGuard::DeviceGuard(int device) {
  CUDA_CHECK(cudaGetDevice(&prev_));
  if (prev_ != device) {
    CUDA_CHECK(cudaSetDevice(device));
    changed_ = true;
  }
}

DeviceGuard::~DeviceGuard() {
  if (changed_) cudaSetDevice(prev_);
}

// ------------------------------------------------------------ allocator

void* alloc(size_t nbytes, int device) {
  check_device(device);
  DeviceState& st = state(device);
  cudaStream_t stream = current_stream(device);
  const size_t sz = round_size(nbytes);
  std::lock_guard<std::mutex> lk(st.mu);
  void* p = nullptr;
  size_t got = sz;
  auto& pool = st.pools[stream];
  auto it = pool.lower_bound(sz);
  if (it != pool.end() && it->first <= 2 * sz) {
    got = it->first;
    p = it->second;
    pool.erase(it);
    st.cached -= static_cast<int64_t>(got);
    --st.cached_blocks;
  } else {
    DeviceGuard g(device);
    cudaError_t e = cudaMalloc(&p, sz);
    if (e == cudaErrorMemoryAllocation) {
      cudaGetLastError();  // clear it; retry with the cache released
      const int64_t cached = st.cached, cached_blocks = st.cached_blocks;
      CUDA_CHECK(cudaDeviceSynchronize());
      release_cached(st);
      e = cudaMalloc(&p, sz);
      if (e == cudaErrorMemoryAllocation) {
        cudaGetLastError();
        size_t free_b = 0, total_b = 0;
        cudaMemGetInfo(&free_b, &total_b);
        COLT5_FAIL("CUDA out of memory on cuda:", device, ": tried to allocate ", bytes_str(static_cast<int64_t>(nbytes)),
                   "; live tensors hold ", bytes_str(st.current), "; the cache held ", bytes_str(cached), " in ",
                   cached_blocks, " blocks (released, then retried); the driver reports ",
                   bytes_str(static_cast<int64_t>(free_b)), " free of ", bytes_str(static_cast<int64_t>(total_b)));
      }
    }
    CUDA_CHECK(e);
    ++st.driver_allocs;
  }
  st.live[p] = Block{got, stream};
  st.current += static_cast<int64_t>(got);
  if (st.current > st.peak) st.peak = st.current;
  return p;
}

void free(void* ptr, size_t, int device) {
  if (!ptr) return;
  DeviceState& st = state(device);
  std::lock_guard<std::mutex> lk(st.mu);
  auto it = st.live.find(ptr);
  if (it == st.live.end()) {
    // Not ours: a bug elsewhere. Called from destructors, so report, don't throw.
    std::fprintf(stderr, "colt5: cuda::free of a pointer the allocator does not own (cuda:%d)\n", device);
    return;
  }
  Block b = it->second;
  st.live.erase(it);
  st.current -= static_cast<int64_t>(b.size);
  // Back to the free list of the stream it was used on: the next user on that
  // stream is ordered after every kernel that touched it.
  st.pools[b.stream].emplace(b.size, ptr);
  st.cached += static_cast<int64_t>(b.size);
  ++st.cached_blocks;
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
  check_device(device);
  DeviceState& st = state(device);
  std::lock_guard<std::mutex> lk(st.mu);
  DeviceGuard g(device);
  CUDA_CHECK(cudaDeviceSynchronize());
  release_cached(st);
}

// ------------------------------------------------------------ copies

void copy(void* dst, Device dd, const void* src, Device sd, size_t nbytes) {
  if (nbytes == 0) return;
  if (dd.is_cuda() && sd.is_cuda()) {
    if (dd.index == sd.index) {  // ordered on the stream like any kernel
      DeviceGuard g(dd.index);
      CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToDevice, current_stream(dd.index)));
      return;
    }
    // Across devices: the source must be ready, and the copy done before the
    // source's block can be reused on its own stream.
    synchronize(sd.index);
    DeviceGuard g(dd.index);
    cudaStream_t s = current_stream(dd.index);
    CUDA_CHECK(cudaMemcpyPeerAsync(dst, dd.index, src, sd.index, nbytes, s));
    CUDA_CHECK(cudaStreamSynchronize(s));
    return;
  }
  const int d = dd.is_cuda() ? dd.index : sd.index;
  check_device(d);
  DeviceGuard g(d);
  cudaStream_t s = current_stream(d);
  cudaMemcpyKind kind = dd.is_cuda() ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost;
  // Ordered after earlier kernels on the stream; host memory is pageable, so
  // wait for the copy: the host buffer may be read or freed on return.
  CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, kind, s));
  CUDA_CHECK(cudaStreamSynchronize(s));
}

void memset_zero(void* dst, size_t nbytes, int device) {
  if (nbytes == 0) return;
  DeviceGuard g(device);
  CUDA_CHECK(cudaMemsetAsync(dst, 0, nbytes, current_stream(device)));
}

// ------------------------------------------------------------ streams, devices

cudaStream_t current_stream(int device) {
  DeviceState& st = state(device);
  std::call_once(st.stream_once, [&] {
    check_device(device);
    DeviceGuard g(device);
    CUDA_CHECK(cudaStreamCreate(&st.default_stream));
    std::lock_guard<std::mutex> lk(st.mu);
    if (!st.stream_set) st.stream = st.default_stream;
  });
  std::lock_guard<std::mutex> lk(st.mu);
  return st.stream;
}

void set_current_stream(int device, cudaStream_t s) {
  current_stream(device);  // create the default one first, so it is never created over s
  DeviceState& st = state(device);
  std::lock_guard<std::mutex> lk(st.mu);
  st.stream = s;
  st.stream_set = true;
}

void set_device(int device) {
  check_device(device);
  CUDA_CHECK(cudaSetDevice(device));
}

void synchronize(int device) {
  DeviceGuard g(device);
  CUDA_CHECK(cudaStreamSynchronize(current_stream(device)));
}

const cudaDeviceProp& device_properties(int device) {
  DeviceState& st = state(device);
  std::call_once(st.props_once, [&] {
    check_device(device);
    CUDA_CHECK(cudaGetDeviceProperties(&st.props, device));
  });
  return st.props;
}

}  // namespace colt5::cuda
