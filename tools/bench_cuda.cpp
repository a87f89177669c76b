// colt5 bench cuda [--reps N] [--rows R]  (see bench_cuda.h)
// Inputs are random (never zeros), generated once; every figure is the median
// of N timed runs after 3 warm-ups, each run bracketed by its own event pair.
// Bytes count each input read once and each output written once.
//
// Notes (H100 80GB HBM3, 132 SMs, CUDA 13.0; medians of 20):
//   ceilings: cudaMemcpy d2d 2960 GB/s (read + write); cuBLAS f32 4096^3
//   51.7 TFLOP/s (TF32 off), 403 TFLOP/s (TF32 on).
//   add 2^26 f32: 3011-3015 GB/s (16-byte loads, 2 vectors in flight per
//   thread): at the copy ceiling. softmax rows of 8192: 2784 GB/s forward
//   (row in registers), backward 2938 GB/s. sum (8192, 8192) over dim 0:
//   1109 GB/s with one load per loop trip, 2674 GB/s with 8 loads in flight.
//   Tried and dropped: a 2-D grid for strided maps (no division per element):
//   (8192, 8192) + (8192) fell from 2091 to 988 GB/s (one row segment per
//   block) and 1605 GB/s (blocks looping over rows); transposed + plain stayed
//   ~1060-1300 GB/s. A 4-deep unroll of the inner reduction and 1024 split
//   jobs lowered 2^26 -> 1 from 2412 to 2239 GB/s: reverted.
//   Open: layer_norm forward 1753 GB/s (three passes over the row; a
//   register-resident row like softmax's would reach ~2800).
#include "tools/bench_cuda.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "colt5.h"

#ifdef COLT5_WITH_CUDA
#include <cuda_runtime.h>

#include "engine/cuda/check.h"
#include "engine/cuda/cublas.h"
#include "engine/cuda/memory.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/softmax.h"
#endif

#ifndef COLT5_WITH_CUDA

int bench_cuda(int, char**) {
  std::printf("colt5 bench cuda: unavailable: this build of colt5 has no CUDA backend (configure with "
              "-DCOLT5_CUDA=ON on a machine with nvcc)\n");
  return 1;
}

#else

namespace {

using namespace colt5;

struct Timer {
  cudaStream_t s;
  int reps;
  // Median milliseconds of fn over reps runs (after 3 warm-ups).
  double median_ms(const std::function<void()>& fn) const {
    for (int i = 0; i < 3; ++i) fn();
    CUDA_CHECK(cudaStreamSynchronize(s));
    std::vector<cudaEvent_t> ev(2 * reps);
    for (auto& e : ev) CUDA_CHECK(cudaEventCreate(&e));
    for (int i = 0; i < reps; ++i) {
      CUDA_CHECK(cudaEventRecord(ev[2 * i], s));
      fn();
      CUDA_CHECK(cudaEventRecord(ev[2 * i + 1], s));
    }
    CUDA_CHECK(cudaStreamSynchronize(s));
    std::vector<double> t(reps);
    for (int i = 0; i < reps; ++i) {
      float ms = 0;
      CUDA_CHECK(cudaEventElapsedTime(&ms, ev[2 * i], ev[2 * i + 1]));
      t[i] = ms;
    }
    for (auto& e : ev) CUDA_CHECK(cudaEventDestroy(e));
    std::sort(t.begin(), t.end());
    return reps % 2 ? t[reps / 2] : 0.5 * (t[reps / 2 - 1] + t[reps / 2]);
  }
};

struct Row {
  std::string what;
  double ms;
  std::string rate;
};

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), f, v);
  return buf;
}

}  // namespace

int bench_cuda(int argc, char** argv) {
  int reps = 20;
  int64_t softmax_rows = 4096;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--reps") && i + 1 < argc) reps = std::max(1, std::atoi(argv[++i]));
    else if (!std::strcmp(argv[i], "--rows") && i + 1 < argc) softmax_rows = std::max(1, std::atoi(argv[++i]));
    else {
      std::fprintf(stderr, "usage: colt5 bench cuda [--reps N] [--rows R]\n");
      return 2;
    }
  }
  if (!cuda_available()) {
    std::printf("colt5 bench cuda: no CUDA device visible\n");
    return 1;
  }
  const Device gpu = Device::cuda(0);
  const cudaDeviceProp& prop = cuda::device_properties(0);
  std::printf("device: %s, %d SMs, %.0f MiB L2\n", prop.name, prop.multiProcessorCount, prop.l2CacheSize / 1048576.0);
  Timer timer{cuda::current_stream(0), reps};
  std::vector<Row> rows;
  Generator gen(1234);

  {  // GEMM
    const int64_t n = 4096;
    Tensor a = randn({n, n}, gen, {.device = gpu}), b = randn({n, n}, gen, {.device = gpu});
    Tensor c = empty({n, n}, {.device = gpu});
    const float* A = a.data<float>();
    const float* B = b.data<float>();
    float* C = c.data<float>();
    auto gemm = [&] { kernels::cuda::gemm(false, false, n, n, n, 1.0f, A, n, B, n, 0.0f, C, n, 0); };
    const double flops = 2.0 * n * n * n;
    for (bool tf32 : {false, true}) {
      cuda::set_allow_tf32(tf32);
      const double ms = timer.median_ms(gemm);
      rows.push_back({std::string("gemm f32 4096^3, TF32 ") + (tf32 ? "on" : "off"), ms,
                      fmt("%.1f TFLOP/s", flops / (ms * 1e-3) / 1e12)});
    }
    cuda::set_allow_tf32(false);
  }

  double copy_gbs = 0, add_gbs = 0;
  {  // elementwise add vs device-to-device copy
    const int64_t n = int64_t{1} << 26;
    Tensor a = randn({n}, gen, {.device = gpu}), b = randn({n}, gen, {.device = gpu});
    Tensor dst = empty({n}, {.device = gpu});
    const double bytes = 4.0 * n;
    double ms = timer.median_ms([&] {
      CUDA_CHECK(cudaMemcpyAsync(dst.data_ptr(), a.data_ptr(), bytes, cudaMemcpyDeviceToDevice, timer.s));
    });
    copy_gbs = 2 * bytes / (ms * 1e-3) / 1e9;
    rows.push_back({"copy d2d 2^26 f32 (cudaMemcpy)", ms, fmt("%.0f GB/s", copy_gbs)});
    ms = timer.median_ms([&] { dst.copy_(b); });
    rows.push_back({"copy_ 2^26 f32 (engine)", ms, fmt("%.0f GB/s", 2 * bytes / (ms * 1e-3) / 1e9)});
    ms = timer.median_ms([&] { Tensor c = add(a, b); });
    add_gbs = 3 * bytes / (ms * 1e-3) / 1e9;
    rows.push_back({"add 2^26 f32 (engine op)", ms, fmt("%.0f GB/s", add_gbs)});
    Tensor s = scalar_tensor(0.5, {.device = gpu});
    ms = timer.median_ms([&] { Tensor c = add(a, s); });
    rows.push_back({"add 2^26 f32 + scalar tensor", ms, fmt("%.0f GB/s", 2 * bytes / (ms * 1e-3) / 1e9)});
    Tensor a2 = a.view({8192, 8192}), row = randn({8192}, gen, {.device = gpu});
    ms = timer.median_ms([&] { Tensor c = add(a2, row); });
    rows.push_back({"add (8192,8192) + (8192) broadcast", ms, fmt("%.0f GB/s", 2 * bytes / (ms * 1e-3) / 1e9)});
    ms = timer.median_ms([&] { Tensor c = add(a2.t(), a2); });
    rows.push_back({"add (8192,8192)^T + (8192,8192)", ms, fmt("%.0f GB/s", 3 * bytes / (ms * 1e-3) / 1e9)});
    ms = timer.median_ms([&] { Tensor c = sum(a); });
    rows.push_back({"sum 2^26 f32 -> 1", ms, fmt("%.0f GB/s", bytes / (ms * 1e-3) / 1e9)});
    ms = timer.median_ms([&] { Tensor c = sum(a2, 0); });
    rows.push_back({"sum (8192,8192) over dim 0", ms, fmt("%.0f GB/s", bytes / (ms * 1e-3) / 1e9)});
    ms = timer.median_ms([&] { Tensor c = sum(a2, 1); });
    rows.push_back({"sum (8192,8192) over dim 1", ms, fmt("%.0f GB/s", bytes / (ms * 1e-3) / 1e9)});
  }

  {  // softmax over rows of 8192
    const int64_t n = 8192, r = softmax_rows;
    Tensor x = randn({r, n}, gen, {.device = gpu});
    Tensor dy = randn({r, n}, gen, {.device = gpu});
    const double bytes = 4.0 * r * n;
    Tensor y = softmax(x, -1);
    double ms = timer.median_ms([&] { Tensor o = softmax(x, -1); });
    rows.push_back({"softmax fwd (" + std::to_string(r) + ", 8192) f32", ms,
                    fmt("%.0f GB/s", 2 * bytes / (ms * 1e-3) / 1e9)});
    ms = timer.median_ms([&] { Tensor o = log_softmax(x, -1); });
    rows.push_back({"log_softmax fwd (" + std::to_string(r) + ", 8192) f32", ms,
                    fmt("%.0f GB/s", 2 * bytes / (ms * 1e-3) / 1e9)});
    Tensor dx = empty({r, n}, {.device = gpu});
    ms = timer.median_ms([&] {
      kernels::cuda::softmax_backward(dx.data<float>(), dy.data<float>(), y.data<float>(), r, n, 1, 0);
    });
    rows.push_back({"softmax bwd (" + std::to_string(r) + ", 8192) f32 kernel", ms,
                    fmt("%.0f GB/s", 3 * bytes / (ms * 1e-3) / 1e9)});
    Tensor w = randn({n}, gen, {.device = gpu});
    ms = timer.median_ms([&] { Tensor o = layer_norm(x, w, w); });
    rows.push_back({"layer_norm fwd (" + std::to_string(r) + ", 8192) f32", ms,
                    fmt("%.0f GB/s", 2 * bytes / (ms * 1e-3) / 1e9)});
  }

  const std::string head = "benchmark (median of " + std::to_string(reps) + " runs)";
  std::printf("\n%-44s %10s  %s\n", head.c_str(), "ms", "rate");
  for (const Row& r : rows) std::printf("%-44s %10.4f  %s\n", r.what.c_str(), r.ms, r.rate.c_str());
  std::printf("\nadd / copy bandwidth: %.1f%% (target >= 80%%)\n", 100.0 * add_gbs / copy_gbs);
  const MemoryStats ms = memory_stats(gpu);
  std::printf("memory: current %.1f MiB, peak %.1f MiB, cached %.1f MiB, cudaMalloc calls %lld\n",
              ms.current_bytes / 1048576.0, ms.peak_bytes / 1048576.0, ms.cached_bytes / 1048576.0,
              static_cast<long long>(ms.driver_allocs));
  return 0;
}

#endif
