#include "engine/device.h"

#include "engine/error.h"

#ifdef COLT5_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace colt5 {

Device Device::parse(const std::string& s) {
  if (s == "cpu") return cpu();
  if (s == "cuda") return cuda(0);
  if (s.rfind("cuda:", 0) == 0) {
    try {
      return cuda(std::stoi(s.substr(5)));
    } catch (const std::exception&) {
    }
  }
  COLT5_FAIL("Device::parse: expected \"cpu\", \"cuda\" or \"cuda:N\", got \"", s, "\"");
}

bool cuda_compiled() {
#ifdef COLT5_WITH_CUDA
  return true;
#else
  return false;
#endif
}

int cuda_device_count() {
#ifdef COLT5_WITH_CUDA
  static int n = [] {
    int c = 0;
    if (cudaGetDeviceCount(&c) != cudaSuccess) {
      cudaGetLastError();  // clear the sticky "no device" error
      return 0;
    }
    return c;
  }();
  return n;
#else
  return 0;
#endif
}

}  // namespace colt5
