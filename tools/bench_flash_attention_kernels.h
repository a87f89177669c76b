// `colt5 bench attention`: one table of every attention shape of issue 5
// (item 6) on the GPU: our fused kernels (dense flash attention and local
// windowed attention), the unfused reference (matmul + softmax + matmul) and,
// in builds with cuDNN, cuDNN's fused SDPA where it supports the shape
// (bf16/f16, no null key), each with forward and forward+backward
// milliseconds (medians, CUDA events) and TFLOP/s, beside the target
// and PyTorch SDPA's H100 figure. Extra "probe" rows (bf16 sizes) are the
// measurements behind the Auto rule of ops/attention.h.
// Usage: bench attention [--iters N] [--only TEXT] [--no-unfused] [--no-local]
//        [--no-probes] [--variants]
// (--variants also times the alternative half-precision kernel configurations.)
// Without CUDA it prints a note and returns 0.
#pragma once

int bench_flash_attention_kernels(int argc, char** argv);
