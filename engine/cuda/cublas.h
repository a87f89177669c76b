// cuBLAS for the engine: one handle per device, bound to the device's current
// stream (engine/cuda/memory.h) whenever it is handed out, and the TF32 switch.
//
// TF32: off by default, so f32 matrix products are true f32 (the tensor cores'
// TF32 mode rounds the inputs to 10 mantissa bits, ~3e-4 relative error).
// set_allow_tf32(true) lets f32 products use it (faster, about 7x on an H100).
#pragma once
#include <cublas_v2.h>

namespace colt5::cuda {

// Process-wide switch read at each f32 GEMM call.
void set_allow_tf32(bool allow);
bool allow_tf32();

// The handle of `device`, created on first use, set to the device's current
// stream. Use it from the thread that asked, right away (not thread-safe
// across threads that use different streams on one device).
cublasHandle_t cublas_handle(int device);

}  // namespace colt5::cuda
