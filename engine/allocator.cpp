#include "engine/allocator.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "engine/error.h"
#ifdef COLT5_WITH_CUDA
#include "engine/cuda/memory.h"
#endif

namespace colt5 {
namespace {

struct HostCounters {
  std::atomic<int64_t> current{0}, peak{0}, allocs{0};
};
HostCounters& host() {
  static HostCounters c;
  return c;
}

[[noreturn]] void no_cuda(const char* what) {
  COLT5_FAIL(what, ": this build of colt5 has no CUDA backend (configure with COLT5_CUDA=ON on a machine with nvcc)");
}

}  // namespace

void* device_alloc(size_t nbytes, Device device) {
  if (device.is_cpu()) {
    size_t n = (nbytes + 63) / 64 * 64;
    if (n == 0) n = 64;
    void* p = std::aligned_alloc(64, n);
    COLT5_CHECK(p != nullptr, "device_alloc: out of host memory allocating ", nbytes, " bytes");
    auto& c = host();
    int64_t cur = c.current.fetch_add(static_cast<int64_t>(nbytes)) + static_cast<int64_t>(nbytes);
    int64_t pk = c.peak.load();
    while (cur > pk && !c.peak.compare_exchange_weak(pk, cur)) {
    }
    c.allocs.fetch_add(1);
    return p;
  }
#ifdef COLT5_WITH_CUDA
  return cuda::alloc(nbytes, device.index);
#else
  no_cuda("device_alloc");
#endif
}

void device_free(void* ptr, size_t nbytes, Device device) {
  if (device.is_cpu()) {
    std::free(ptr);
    host().current.fetch_sub(static_cast<int64_t>(nbytes));
    return;
  }
#ifdef COLT5_WITH_CUDA
  cuda::free(ptr, nbytes, device.index);
#endif
}

void copy_bytes(void* dst, Device dd, const void* src, Device sd, size_t nbytes) {
  if (nbytes == 0) return;
  if (dd.is_cpu() && sd.is_cpu()) {
    std::memcpy(dst, src, nbytes);
    return;
  }
#ifdef COLT5_WITH_CUDA
  cuda::copy(dst, dd, src, sd, nbytes);
#else
  no_cuda("copy_bytes");
#endif
}

void zero_bytes(void* dst, Device device, size_t nbytes) {
  if (nbytes == 0) return;
  if (device.is_cpu()) {
    std::memset(dst, 0, nbytes);
    return;
  }
#ifdef COLT5_WITH_CUDA
  cuda::memset_zero(dst, nbytes, device.index);
#else
  no_cuda("zero_bytes");
#endif
}

void device_synchronize(Device device) {
  if (device.is_cpu()) return;
#ifdef COLT5_WITH_CUDA
  cuda::synchronize(device.index);
#else
  no_cuda("device_synchronize");
#endif
}

MemoryStats memory_stats(Device device) {
  if (device.is_cpu()) {
    MemoryStats s;
    s.current_bytes = host().current.load();
    s.peak_bytes = host().peak.load();
    s.driver_allocs = host().allocs.load();
    return s;
  }
#ifdef COLT5_WITH_CUDA
  return cuda::memory_stats(device.index);
#else
  no_cuda("memory_stats");
#endif
}

void reset_peak_memory(Device device) {
  if (device.is_cpu()) {
    host().peak.store(host().current.load());
    return;
  }
#ifdef COLT5_WITH_CUDA
  cuda::reset_peak_memory(device.index);
#else
  no_cuda("reset_peak_memory");
#endif
}

}  // namespace colt5
