// Checked CUDA and cuBLAS calls: a failure throws colt5::Error naming the call,
// the file, the line and the library's error string.
//   CUDA_CHECK(cudaMemcpyAsync(...));
//   CUBLAS_CHECK(cublasGemmEx(...));
//   my_kernel<<<grid, block, 0, stream>>>(...); CUDA_CHECK_LAUNCH();
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <string>

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

// After a kernel launch: reports launch-configuration errors immediately
// (errors inside the kernel surface at the next synchronising call).
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())

#define CUBLAS_CHECK(call)                                                              \
  do {                                                                                  \
    cublasStatus_t colt5_st_ = (call);                                                  \
    if (colt5_st_ != CUBLAS_STATUS_SUCCESS)                                             \
      ::colt5::detail::fail(__FILE__, __LINE__,                                         \
                            std::string("cuBLAS error in ") + #call + ": " +           \
                                cublasGetStatusName(colt5_st_) + ": " +                 \
                                cublasGetStatusString(colt5_st_));                      \
  } while (0)
