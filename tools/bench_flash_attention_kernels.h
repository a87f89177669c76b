// Benchmark of the fused flash-attention kernels (CUDA) beside an unfused
// reference (cuBLAS gemm + softmax kernel + gemm) on the same device.
// Usage: bench_flash_attention_kernels [--iters N] [--only NAME] [--no-unfused] [--variants]
// (--variants also times the alternative half-precision kernel configurations.)
// Prints forward and forward+backward milliseconds (median) and TFLOP/s.
// Without CUDA it prints a note and returns 0.
#pragma once

int bench_flash_attention_kernels(int argc, char** argv);
