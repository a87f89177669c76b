#include "engine/cuda/cublas.h"

#include <atomic>
#include <mutex>

#include "engine/cuda/check.h"
#include "engine/cuda/memory.h"

namespace colt5::cuda {
namespace {

std::atomic<bool> g_allow_tf32{false};

struct HandleState {
  std::once_flag once;
  cublasHandle_t handle = nullptr;
  cudaStream_t bound = nullptr;
  std::mutex mu;
};

// Never destroyed: cuBLAS may already be unloaded at static destruction.
HandleState& handle_state(int device) {
  constexpr int kMaxDevices = 64;
  static HandleState* s = new HandleState[kMaxDevices];
  COLT5_CHECK(device >= 0 && device < kMaxDevices, "cublas: device index ", device, " out of range");
  return s[device];
}

}  // namespace

void set_allow_tf32(bool allow) { g_allow_tf32.store(allow); }
bool allow_tf32() { return g_allow_tf32.load(); }

cublasHandle_t cublas_handle(int device) {
  HandleState& hs = handle_state(device);
  cudaStream_t s = current_stream(device);
  std::call_once(hs.once, [&] {
    DeviceGuard g(device);
    CUBLAS_CHECK(cublasCreate(&hs.handle));
    // Precision is chosen per call (compute type); keep the handle's own mode strict.
    CUBLAS_CHECK(cublasSetMathMode(hs.handle, CUBLAS_DEFAULT_MATH));
    CUBLAS_CHECK(cublasSetPointerMode(hs.handle, CUBLAS_POINTER_MODE_HOST));
    CUBLAS_CHECK(cublasSetStream(hs.handle, s));
    hs.bound = s;
  });
  std::lock_guard<std::mutex> lk(hs.mu);
  if (hs.bound != s) {  // cublasSetStream also resets the workspace: only on a change
    CUBLAS_CHECK(cublasSetStream(hs.handle, s));
    hs.bound = s;
  }
  return hs.handle;
}

}  // namespace colt5::cuda
