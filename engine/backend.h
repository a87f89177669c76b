// Device dispatch for ops: COLT5_ON_DEVICE(op_name, device, cpu_stmt, cuda_stmt).
// Without the CUDA backend the CUDA branch is not compiled and a CUDA tensor
// reaching an op throws a clear error instead.
#pragma once
#include "engine/device.h"
#include "engine/error.h"

#ifdef COLT5_WITH_CUDA
#define COLT5_ON_DEVICE(op, dev, cpu_stmt, cuda_stmt) \
  do {                                                \
    if ((dev).is_cpu()) {                             \
      cpu_stmt;                                       \
    } else {                                          \
      cuda_stmt;                                      \
    }                                                 \
  } while (0)
#else
#define COLT5_ON_DEVICE(op, dev, cpu_stmt, cuda_stmt)                                      \
  do {                                                                                     \
    if ((dev).is_cpu()) {                                                                  \
      cpu_stmt;                                                                            \
    } else {                                                                               \
      COLT5_FAIL(op, ": tensor is on ", (dev).str(), " but this build has no CUDA backend"); \
    }                                                                                      \
  } while (0)
#endif

namespace colt5 {
class Tensor;
// Throws unless every defined tensor is on the same device: "op: expected all
// tensors on cpu, got cuda:0 for argument 2".
void check_same_device(const char* op, std::initializer_list<const Tensor*> ts);
}  // namespace colt5
