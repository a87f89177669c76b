// Benchmark of the coordinate-descent kernels (see bench_coor_descent_kernels.h).
//
// Inputs per shape: scores ~ N(0, 1), 1/16 of each row masked (random
// positions), k = n/8 · 9/8 per row (route n/8 tokens, fetch ratio 9/8),
// dout ~ N(0, 1). Settings: the router defaults (n_iters 20, eps 0.03,
// eps_init 4, eps_decay 0.7) and the CoLT5 paper's (n_iters 50, eps 1).
// GPU times come from CUDA events around the forward and the backward on one
// stream (median of the runs); CPU times from steady_clock.
#include "tools/bench_coor_descent_kernels.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "engine/parallel.h"
#include "kernels/cpu/coor_descent.h"

#ifdef COLT5_WITH_CUDA
#include <cuda_runtime.h>

#include "engine/cuda/check.h"
#include "kernels/cuda/coor_descent.h"
#endif

namespace {

using colt5::kernels::CoorDescentParams;

struct Shape {
  const char* setting;
  int64_t rows, n;
  bool router;          // router defaults, else the paper setting
  double gpu_target_ms;  // fwd+bwd target on the H100 (0: none)
  double cpu_target_ms;  // fwd+bwd target on 2 CPU cores (0: none)
};

const Shape kShapes[] = {
    {"router", 2, 8192, true, 0, 1.0},        {"router", 16, 8192, true, 0.25, 0},
    {"router", 2, 32768, true, 0.35, 0},      {"router", 126, 8192, true, 0.5, 0},
    {"router", 2, 131072, true, 0.8, 0},      {"router", 1, 1048576, true, 2.5, 0},
    {"paper", 2, 32768, false, 0, 0},
};

CoorDescentParams params_for(const Shape& sh) {
  CoorDescentParams p;
  p.rows = sh.rows;
  p.n = sh.n;
  if (sh.router) {
    p.n_iters = 20;
    p.eps = 0.03;
    p.eps_init = 4;
    p.eps_decay = 0.7;
  } else {
    p.n_iters = 50;
    p.eps = 1;
    p.eps_init = 0;
    p.eps_decay = 1;
  }
  return p;
}

struct Inputs {
  std::vector<float> s, k, dout;
  std::vector<uint8_t> mask;
};

Inputs make_inputs(const CoorDescentParams& p, uint32_t seed) {
  Inputs in;
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd;
  std::uniform_int_distribution<int> u16(0, 15);
  const size_t N = size_t(p.rows * p.n);
  in.s.resize(N);
  in.dout.resize(N);
  in.mask.resize(N);
  for (auto& v : in.s) v = nd(rng);
  for (auto& v : in.dout) v = nd(rng);
  for (auto& m : in.mask) m = u16(rng) == 0 ? 0 : 1;
  in.k.assign(size_t(p.rows), float(double(p.n) / 8 * 9 / 8));
  return in;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

std::string shape_str(const Shape& sh) { return std::to_string(sh.rows) + "x" + std::to_string(sh.n); }

std::string verdict(double ms, double target) {
  if (target <= 0) return "";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%s %.2f", ms <= target ? "meets <=" : "MISSES <=", target);
  return buf;
}

void bench_cpu(int runs, int warmup) {
  std::printf("\nCPU (%d threads), f32, median of %d runs after %d warm-up\n", colt5::get_num_threads(), runs, warmup);
  std::printf("%-7s %-12s %10s %12s  %s\n", "setting", "rows x n", "fwd ms", "fwd+bwd ms", "target (2 cores)");
  for (const Shape& sh : kShapes) {
    const CoorDescentParams p = params_for(sh);
    const Inputs in = make_inputs(p, 1);
    const size_t N = size_t(p.rows * p.n);
    std::vector<float> out(N), ds(N), dk(size_t(p.rows)), saved(size_t(colt5::kernels::coor_descent_saved_size(p)));
    std::vector<double> tf, tt;
    for (int it = 0; it < warmup + runs; ++it) {
      const auto t0 = std::chrono::steady_clock::now();
      colt5::kernels::cpu::coor_descent_forward<float>(p, in.s.data(), in.mask.data(), in.k.data(), out.data(),
                                                       saved.data());
      const auto t1 = std::chrono::steady_clock::now();
      colt5::kernels::cpu::coor_descent_backward<float>(p, in.s.data(), in.mask.data(), in.k.data(), out.data(),
                                                        saved.data(), in.dout.data(), ds.data(), dk.data());
      const auto t2 = std::chrono::steady_clock::now();
      if (it >= warmup) {
        tf.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
        tt.push_back(std::chrono::duration<double, std::milli>(t2 - t0).count());
      }
    }
    const double f = median(tf), t = median(tt);
    std::printf("%-7s %-12s %10.3f %12.3f  %s\n", sh.setting, shape_str(sh).c_str(), f, t,
                verdict(t, sh.cpu_target_ms).c_str());
  }
}

#ifdef COLT5_WITH_CUDA
bool gpu_present() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return n > 0;
}

void bench_gpu(int runs, int warmup) {
  namespace kc = colt5::kernels::cuda;
  cudaDeviceProp prop{};
  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
  std::printf("\nGPU %s (%d SMs), f32, CUDA events, median of %d runs after >= %d warm-up runs and >= 200 ms\n",
              prop.name, prop.multiProcessorCount, runs, warmup);
  std::printf("%-7s %-12s %10s %12s  %-20s %s\n", "setting", "rows x n", "fwd ms", "fwd+bwd ms", "target (H100)",
              "forward plan");
  cudaStream_t stream;
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cudaEvent_t e0, e1, e2;
  CUDA_CHECK(cudaEventCreate(&e0));
  CUDA_CHECK(cudaEventCreate(&e1));
  CUDA_CHECK(cudaEventCreate(&e2));
  for (const Shape& sh : kShapes) {
    const CoorDescentParams p = params_for(sh);
    const Inputs in = make_inputs(p, 1);
    const size_t N = size_t(p.rows * p.n);
    const size_t W = size_t(colt5::kernels::coor_descent_saved_size(p));
    const size_t wsb = kc::coor_descent_workspace_bytes(p);
    float *s, *k, *dout, *out, *ds, *dk, *saved;
    uint8_t* mask;
    void* ws = nullptr;
    CUDA_CHECK(cudaMalloc(&s, N * 4));
    CUDA_CHECK(cudaMalloc(&dout, N * 4));
    CUDA_CHECK(cudaMalloc(&out, N * 4));
    CUDA_CHECK(cudaMalloc(&ds, N * 4));
    CUDA_CHECK(cudaMalloc(&mask, N));
    CUDA_CHECK(cudaMalloc(&k, size_t(p.rows) * 4));
    CUDA_CHECK(cudaMalloc(&dk, size_t(p.rows) * 4));
    CUDA_CHECK(cudaMalloc(&saved, W * 4));
    if (wsb) CUDA_CHECK(cudaMalloc(&ws, wsb));
    CUDA_CHECK(cudaMemcpy(s, in.s.data(), N * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(dout, in.dout.data(), N * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(mask, in.mask.data(), N, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(k, in.k.data(), size_t(p.rows) * 4, cudaMemcpyHostToDevice));
    // Warm-up: at least `warmup` runs and 200 ms, so that the clocks have left idle.
    const auto w0 = std::chrono::steady_clock::now();
    for (int it = 0; it < warmup || std::chrono::steady_clock::now() - w0 < std::chrono::milliseconds(200); ++it) {
      kc::coor_descent_forward(p, s, mask, k, out, saved, ws, stream);
      kc::coor_descent_backward(p, s, mask, k, out, saved, dout, ds, dk, ws, stream);
      CUDA_CHECK(cudaStreamSynchronize(stream));
    }
    std::vector<double> tf, tt;
    for (int it = 0; it < runs; ++it) {
      CUDA_CHECK(cudaEventRecord(e0, stream));
      kc::coor_descent_forward(p, s, mask, k, out, saved, ws, stream);
      CUDA_CHECK(cudaEventRecord(e1, stream));
      kc::coor_descent_backward(p, s, mask, k, out, saved, dout, ds, dk, ws, stream);
      CUDA_CHECK(cudaEventRecord(e2, stream));
      CUDA_CHECK(cudaEventSynchronize(e2));
      float a = 0, b = 0;
      CUDA_CHECK(cudaEventElapsedTime(&a, e0, e1));
      CUDA_CHECK(cudaEventElapsedTime(&b, e0, e2));
      tf.push_back(a);
      tt.push_back(b);
    }
    CUDA_CHECK(cudaGetLastError());
    const double f = median(tf), t = median(tt);
    std::printf("%-7s %-12s %10.4f %12.4f  %-20s %s\n", sh.setting, shape_str(sh).c_str(), f, t,
                verdict(t, sh.gpu_target_ms).c_str(), kc::coor_descent_plan(p).c_str());
    for (void* ptr : {(void*)s, (void*)dout, (void*)out, (void*)ds, (void*)mask, (void*)k, (void*)dk, (void*)saved, ws})
      if (ptr) CUDA_CHECK(cudaFree(ptr));
  }
  CUDA_CHECK(cudaEventDestroy(e0));
  CUDA_CHECK(cudaEventDestroy(e1));
  CUDA_CHECK(cudaEventDestroy(e2));
  CUDA_CHECK(cudaStreamDestroy(stream));
}
#endif

}  // namespace

int bench_coor_descent_kernels(int argc, char** argv) {
  std::string device = "all";
  int runs = 30, warmup = 5;
  for (int i = 0; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
    if (a == "--device") {
      const char* v = next();
      if (!v) return 2;
      device = v;
    } else if (a == "--runs") {
      const char* v = next();
      if (!v) return 2;
      runs = std::max(20, std::atoi(v));
    } else if (a == "--warmup") {
      const char* v = next();
      if (!v) return 2;
      warmup = std::max(0, std::atoi(v));
    } else if (a == "--threads") {
      const char* v = next();
      if (!v) return 2;
      colt5::set_num_threads(std::max(1, std::atoi(v)));
    } else if (a == "--help" || a == "-h") {
      std::printf("bench coor-descent-kernels [--device cpu|cuda|all] [--runs N>=20] [--warmup N] [--threads N]\n");
      return 0;
    } else if (i > 0 || a.rfind("--", 0) == 0) {
      std::fprintf(stderr, "bench coor-descent-kernels: unknown option %s\n", a.c_str());
      return 2;
    }
  }
  if (device != "cpu" && device != "cuda" && device != "all") {
    std::fprintf(stderr, "bench coor-descent-kernels: --device must be cpu, cuda or all\n");
    return 2;
  }
  std::printf("coordinate descent kernels: router = n_iters 20, eps 0.03, eps_init 4, eps_decay 0.7; "
              "paper = n_iters 50, eps 1; 1/16 of each row masked; k = n/8 * 9/8\n");
#ifdef COLT5_WITH_CUDA
  if (device != "cpu") {
    if (gpu_present())
      bench_gpu(runs, warmup);
    else
      std::printf("\nGPU: none visible, skipped\n");
  }
#else
  if (device == "cuda") std::printf("\nGPU: this build has no CUDA, skipped\n");
#endif
  if (device != "cuda") bench_cpu(runs, warmup);
  return 0;
}
