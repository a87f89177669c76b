// `colt5 bench coor-descent-kernels`: times the pointer-level coordinate-descent
// kernels (kernels/cpu/coor_descent.h, kernels/cuda/coor_descent.h), forward and
// forward+backward, and prints a table. Options:
//   --device cpu|cuda|all   (default all: the CPU, and the GPU when built with CUDA and one is present)
//   --runs N                timed runs per shape, median reported (default 30, at least 20)
//   --warmup N              untimed runs first (default 5)
//   --threads N             CPU threads (default: the pool's)
// Returns 0, or 2 on a bad option.
#pragma once

int bench_coor_descent_kernels(int argc, char** argv);
