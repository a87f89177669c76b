#pragma once
// colt5 bench coor-descent: the coor_descent op (fused kernels) beside its
// primitive-op reference on the same device, forward and forward+backward.
int bench_coor_descent(int argc, char** argv);
