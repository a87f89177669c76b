// colt5 bench cuda: the CUDA backend's headline numbers on device 0, medians
// of cudaEvent timings on the engine's stream:
//   - f32 GEMM 4096^3 through cuBLAS (kernels/cuda/gemm.h), TF32 off and on;
//   - elementwise add of 2^26 f32 (the engine's add op) beside a
//     device-to-device cudaMemcpy of the same tensor, same run;
//   - softmax (forward, backward) over rows of 8192 f32;
//   - a full sum of 2^26 f32.
// Without the CUDA backend it says so and returns 1.
#pragma once

int bench_cuda(int argc, char** argv);
