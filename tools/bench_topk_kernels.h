// colt5 bench topk: hard top-k kernels, GPU (ours vs CUB full segmented sorts)
// and CPU, median milliseconds per shape.
#pragma once

int bench_topk_kernels(int argc, char** argv);
