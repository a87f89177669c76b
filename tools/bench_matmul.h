// colt5 bench matmul: CPU matmul throughput (GFLOP/s), square sizes, f32 and f64.
#pragma once

int bench_matmul(int argc, char** argv);
