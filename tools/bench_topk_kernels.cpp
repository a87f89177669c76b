// colt5 bench topk [--reps N] [--cpu-reps N] [--no-cpu] [--no-gpu] [--case I] [--no-baseline]
// Hard top-k (values + int64 indices, sorted, ties to the lower index).
// GPU: our radix-select kernels (the path `automatic` takes, and the other
// path where it can run) beside two full sorts from CUB (what a top-k built on
// a segmented sort pays): DeviceSegmentedRadixSort and DeviceSegmentedSort,
// both SortPairsDescending of (value, int32 index). Median of cudaEvent times
// over --reps runs after 3 warm-ups, input resident in device memory (small
// inputs then sit in L2). "same" checks our GPU output against the CPU kernel,
// bit for bit. CPU: kernels::cpu::topk, median wall time, all pool threads.
#include "tools/bench_topk_kernels.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "engine/error.h"
#include "engine/parallel.h"
#include "kernels/cpu/topk.h"

#ifdef COLT5_WITH_CUDA
#include <cuda_runtime.h>

#include "engine/cuda/check.h"
#include "kernels/cuda/topk.h"
#endif

namespace {

struct Case {
  int64_t rows, n, k;
  bool router;  // router-like data (many exact 1.0) instead of standard normal
};

std::vector<float> make_input(const Case& c, uint64_t seed) {
  std::mt19937_64 g(seed);
  std::normal_distribution<float> nd;
  std::vector<float> x(static_cast<size_t>(c.rows * c.n));
  for (auto& e : x) {
    const float z = nd(g);
    e = c.router ? (z > 1.0f ? 1.0f : std::exp(3.0f * (z - 1.0f))) : z;
  }
  return x;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

std::string shape_name(const Case& c) {
  char buf[96];
  std::snprintf(buf, sizeof(buf), "%lldx%lld k=%lld", (long long)c.rows, (long long)c.n, (long long)c.k);
  return buf;
}

#ifdef COLT5_WITH_CUDA
using colt5::kernels::cuda::TopkPath;

double time_gpu(cudaStream_t s, int reps, const std::function<void()>& fn) {
  cudaEvent_t a, b;
  CUDA_CHECK(cudaEventCreate(&a));
  CUDA_CHECK(cudaEventCreate(&b));
  for (int i = 0; i < 3; ++i) fn();
  CUDA_CHECK(cudaStreamSynchronize(s));
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    CUDA_CHECK(cudaEventRecord(a, s));
    fn();
    CUDA_CHECK(cudaEventRecord(b, s));
    CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms);
  }
  CUDA_CHECK(cudaEventDestroy(a));
  CUDA_CHECK(cudaEventDestroy(b));
  return median(t);
}

void* dmalloc(size_t bytes) {
  void* p = nullptr;
  if (bytes) CUDA_CHECK(cudaMalloc(&p, bytes));
  return p;
}

int run_gpu(const std::vector<Case>& cases, int reps, bool baselines) {
  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  cudaDeviceProp prop;
  CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
  std::printf("GPU: %s, %d SMs; median of %d reps (ms)\n", prop.name, prop.multiProcessorCount, reps);
  std::printf("%-22s %-7s %-6s %9s %10s %12s %11s %8s %5s\n", "shape", "data", "path", "ours", "other-path",
              "cub-segradix", "cub-segsort", "speedup", "same");
  cudaStream_t s;
  CUDA_CHECK(cudaStreamCreate(&s));
  int failures = 0;
  for (const Case& c : cases) {
    const auto x = make_input(c, uint64_t(c.rows * 131 + c.n + c.k));
    const size_t nx = x.size(), nk = size_t(c.rows * c.k);
    float* dx = static_cast<float*>(dmalloc(nx * sizeof(float)));
    float* dv = static_cast<float*>(dmalloc(nk * sizeof(float)));
    int64_t* di = static_cast<int64_t*>(dmalloc(nk * sizeof(int64_t)));
    CUDA_CHECK(cudaMemcpy(dx, x.data(), nx * sizeof(float), cudaMemcpyHostToDevice));

    const TopkPath path = colt5::kernels::cuda::topk_auto_path(c.rows, c.n, c.k);
    const TopkPath other = path == TopkPath::block ? TopkPath::multi_block : TopkPath::block;
    const size_t wb = colt5::kernels::cuda::topk_workspace_bytes(c.rows, c.n, c.k, path);
    void* ws = dmalloc(wb);
    const double ours = time_gpu(s, reps, [&] { colt5::kernels::cuda::topk(dx, c.rows, c.n, c.k, dv, di, ws, s, path); });

    // correctness against the CPU kernel (the result of the last timed run)
    std::vector<float> gv(nk), cv(nk);
    std::vector<int64_t> gi(nk), ci(nk);
    CUDA_CHECK(cudaMemcpy(gv.data(), dv, nk * sizeof(float), cudaMemcpyDeviceToHost));
    CUDA_CHECK(cudaMemcpy(gi.data(), di, nk * sizeof(int64_t), cudaMemcpyDeviceToHost));
    colt5::kernels::cpu::topk<float>(x.data(), c.rows, c.n, c.k, cv.data(), ci.data());
    const bool same = gi == ci && std::memcmp(gv.data(), cv.data(), nk * sizeof(float)) == 0;
    failures += !same;

    double alt = -1;
    try {
      const size_t wb2 = colt5::kernels::cuda::topk_workspace_bytes(c.rows, c.n, c.k, other);
      void* ws2 = dmalloc(wb2);
      alt = time_gpu(s, reps, [&] { colt5::kernels::cuda::topk(dx, c.rows, c.n, c.k, dv, di, ws2, s, other); });
      if (ws2) CUDA_CHECK(cudaFree(ws2));
    } catch (const colt5::Error&) {  // the block path cannot hold this row
    }

    double base[2] = {-1, -1};
    float* sv = static_cast<float*>(dmalloc(nx * sizeof(float)));
    int32_t* si = static_cast<int32_t*>(dmalloc(nx * sizeof(int32_t)));
    for (int which = 0; which < (baselines ? 2 : 0); ++which) {
      const size_t bb = colt5::kernels::cuda::sort_baseline_workspace_bytes(c.rows, c.n, which);
      void* bws = dmalloc(bb);
      base[which] = time_gpu(
          s, reps, [&] { colt5::kernels::cuda::sort_baseline(dx, c.rows, c.n, sv, si, bws, s, which); });
      if (bws) CUDA_CHECK(cudaFree(bws));
    }
    CUDA_CHECK(cudaFree(sv));
    CUDA_CHECK(cudaFree(si));
    const double best_base = std::min(base[0], base[1]);
    char altbuf[32];
    if (alt >= 0)
      std::snprintf(altbuf, sizeof(altbuf), "%.4f", alt);
    else
      std::snprintf(altbuf, sizeof(altbuf), "n/a");
    std::printf("%-22s %-7s %-6s %9.4f %10s %12.4f %11.4f %7.1fx %5s\n", shape_name(c).c_str(),
                c.router ? "router" : "randn", path == TopkPath::block ? "block" : "multi", ours, altbuf, base[0],
                base[1], best_base / ours, same ? "yes" : "NO");
    std::fflush(stdout);
    if (ws) CUDA_CHECK(cudaFree(ws));
    CUDA_CHECK(cudaFree(dx));
    CUDA_CHECK(cudaFree(dv));
    CUDA_CHECK(cudaFree(di));
  }
  CUDA_CHECK(cudaStreamDestroy(s));
  std::printf("speedup = fastest CUB full sort / ours.  other-path = the path automatic did not pick.\n");
  return failures;
}
#endif

void run_cpu(const std::vector<Case>& cases, int reps) {
  std::printf("\nCPU: kernels::cpu::topk, %d threads, median of %d reps (ms)\n", colt5::get_num_threads(), reps);
  std::printf("%-22s %-7s %10s\n", "shape", "data", "ms");
  for (const Case& c : cases) {
    const auto x = make_input(c, uint64_t(c.rows * 131 + c.n + c.k));
    std::vector<float> v(size_t(c.rows * c.k));
    std::vector<int64_t> i(size_t(c.rows * c.k));
    colt5::kernels::cpu::topk<float>(x.data(), c.rows, c.n, c.k, v.data(), i.data());  // warm-up
    std::vector<double> t;
    for (int r = 0; r < reps; ++r) {
      const auto a = std::chrono::steady_clock::now();
      colt5::kernels::cpu::topk<float>(x.data(), c.rows, c.n, c.k, v.data(), i.data());
      t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - a).count());
    }
    std::printf("%-22s %-7s %10.3f\n", shape_name(c).c_str(), c.router ? "router" : "randn", median(t));
    std::fflush(stdout);
  }
}

}  // namespace

int bench_topk_kernels(int argc, char** argv) {
  int reps = 30, cpu_reps = 5;
  (void)reps;  // unused without CUDA
  bool cpu = true, gpu = true, baselines = true;
  int only = -1;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--reps" && i + 1 < argc) {
      reps = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--cpu-reps" && i + 1 < argc) {
      cpu_reps = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--no-cpu") {
      cpu = false;
    } else if (a == "--no-gpu") {
      gpu = false;
    } else if (a == "--no-baseline") {
      baselines = false;
    } else if (a == "--case" && i + 1 < argc) {
      only = std::atoi(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: %s [--reps N] [--cpu-reps N] [--no-cpu] [--no-gpu] [--case I] [--no-baseline]\n",
                   argv[0]);
      return 2;
    }
  }
  const int64_t M = int64_t(1) << 20;
  std::vector<Case> gpu_cases = {
      {1, M, 4096, false},     {2, 131072, 1024, false}, {4096, 8192, 256, false}, {16, 8192, 1024, false},
      {126, 8192, 1024, false}, {1, M, 4096, true},      {4096, 8192, 256, true},  {16, 8192, 1024, true},
      {16, 65536, 512, false},  {1, M, 16384, false},
  };
  const std::vector<Case> cpu_cases = {
      {16, 8192, 1024, false}, {2, 131072, 1024, false}, {1, M, 4096, false}, {4096, 8192, 256, false},
      {16, 8192, 1024, true},
  };
  if (only >= 0 && only < int(gpu_cases.size())) gpu_cases = {gpu_cases[size_t(only)]};
  int failures = 0;
  try {
    if (gpu) {
#ifdef COLT5_WITH_CUDA
      int count = 0;
      if (cudaGetDeviceCount(&count) == cudaSuccess && count > 0)
        failures += run_gpu(gpu_cases, reps, baselines);
      else
        std::printf("GPU: no CUDA device visible; GPU part skipped\n");
#else
      std::printf("GPU: built without CUDA; GPU part skipped\n");
#endif
    }
    if (cpu) run_cpu(cpu_cases, cpu_reps);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench topk: %s\n", e.what());
    return 1;
  }
  if (failures) std::fprintf(stderr, "bench topk: %d shape(s) where GPU and CPU differ\n", failures);
  return failures ? 1 : 0;
}
