// colt5 bench matmul [--reps N] [--threads N] [--max N] [--sizes a,b,...]
// C = A B for square n x n matrices (n = 256, 512, 1024, 2048 by default), f32
// and f64, on the CPU. Median GFLOP/s (2 n^3 flops) over --reps timed runs
// (default 7, at least 5) after one warm-up. Columns:
//   matmul      colt5::matmul on tensors (OpenBLAS when the build has it,
//               else the engine's own GEMM), output allocation included;
//   matmul(B^T) the same with B a transposed view (read in place, no copy);
//   own gemm    kernels::cpu::gemm called directly, shown beside OpenBLAS when
//               the build has it (without OpenBLAS it is what matmul runs).
// Threads: --threads N sets the engine pool and OpenBLAS (default: the pool's
// current count, COLT5_NUM_THREADS or all cores).
#include "tools/bench_matmul.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "engine/blas.h"
#include "engine/generator.h"
#include "engine/parallel.h"
#include "engine/tensor.h"
#include "kernels/cpu/gemm.h"
#include "ops/matmul.h"

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

// Median seconds of fn over reps runs after one warm-up.
double time_median(int reps, const std::function<void()>& fn) {
  fn();
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    fn();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return median(t);
}

std::vector<int64_t> parse_sizes(const char* s) {
  std::vector<int64_t> out;
  for (const char* p = s; *p;) {
    out.push_back(std::atoll(p));
    while (*p && *p != ',') ++p;
    if (*p == ',') ++p;
  }
  return out;
}

}  // namespace

int bench_matmul(int argc, char** argv) {
  using namespace colt5;
  int reps = 7, threads = 0;
  int64_t max_n = 2048;
  std::vector<int64_t> sizes = {256, 512, 1024, 2048};
  for (int i = 1; i < argc; ++i) {  // argv[0]: the program name
    auto next = [&](const char* name) -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "bench matmul: %s needs a value\n", name);
        std::exit(2);
      }
      return argv[++i];
    };
    if (!std::strcmp(argv[i], "--reps")) reps = std::max(5, std::atoi(next("--reps")));
    else if (!std::strcmp(argv[i], "--threads")) threads = std::atoi(next("--threads"));
    else if (!std::strcmp(argv[i], "--max")) max_n = std::atoll(next("--max"));
    else if (!std::strcmp(argv[i], "--sizes")) sizes = parse_sizes(next("--sizes"));
    else if (!std::strcmp(argv[i], "--help") || !std::strcmp(argv[i], "-h")) {
      std::printf("usage: colt5 bench matmul [--reps N (>= 5)] [--threads N] [--max N] [--sizes a,b,...]\n");
      return 0;
    } else {
      std::fprintf(stderr, "bench matmul: unknown argument %s\n", argv[i]);
      return 2;
    }
  }
  if (threads > 0) set_num_threads(threads);
  blas_set_num_threads(get_num_threads());
  const bool openblas = blas_is_openblas();
  std::printf("matmul throughput, CPU, %d thread(s), median of %d runs, GFLOP/s (2 n^3 flops per product)\n",
              get_num_threads(), reps);
  std::printf("matmul backend: %s\n", blas_name());
  std::printf("own gemm:       %s\n", kernels::cpu::gemm_kernel_description());
  std::printf("%-6s %6s %12s %12s %12s\n", "dtype", "n", "matmul", "matmul(B^T)", openblas ? "own gemm" : "");
  for (DType dt : {DType::f32, DType::f64}) {
    for (int64_t n : sizes) {
      if (n > max_n || n <= 0) continue;
      Generator gen(42);
      Tensor a = randn({n, n}, gen, {.dtype = dt}), b = randn({n, n}, gen, {.dtype = dt});
      Tensor bt = b.t().contiguous().t();  // same values, column-major storage
      const double flops = 2.0 * static_cast<double>(n) * n * n;
      Tensor c;
      double t_mm = time_median(reps, [&] { c = matmul(a, b); });
      double t_mt = time_median(reps, [&] { c = matmul(a, bt); });
      double t_own = 0;
      if (openblas) {
        Tensor out = empty({n, n}, {.dtype = dt});
        t_own = time_median(reps, [&] {
          if (dt == DType::f32)
            kernels::cpu::gemm<float>(false, false, n, n, n, 1.0f, a.data<float>(), n, b.data<float>(), n, 0.0f,
                                      out.data<float>(), n);
          else
            kernels::cpu::gemm<double>(false, false, n, n, n, 1.0, a.data<double>(), n, b.data<double>(), n, 0.0,
                                       out.data<double>(), n);
        });
      }
      char own[32] = "";
      if (openblas) std::snprintf(own, sizeof(own), "%12.1f", flops / t_own * 1e-9);
      std::printf("%-6s %6lld %12.1f %12.1f %s\n", dtype_name(dt), static_cast<long long>(n), flops / t_mm * 1e-9,
                  flops / t_mt * 1e-9, own);
      std::fflush(stdout);
    }
  }
  return 0;
}
