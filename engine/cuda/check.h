// Checked CUDA and cuBLAS calls: a failure throws colt5::Error naming the call,
// the file, the line and the driver's error string.
#pragma once
#include <cuda_runtime.h>

#include "engine/error.h"

#define CUDA_CHECK(call)                                                              \
  do {                                                                                \
    cudaError_t colt5_err_ = (call);                                                  \
    if (colt5_err_ != cudaSuccess)                                                    \
      ::colt5::detail::fail(__FILE__, __LINE__,                                       \
                            std::string("CUDA error in ") + #call + ": " +           \
                                cudaGetErrorName(colt5_err_) + ": " +                 \
                                cudaGetErrorString(colt5_err_));                      \
  } while (0)

// After a kernel launch: reports launch-configuration errors immediately.
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())
