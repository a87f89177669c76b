// colt5 info: build configuration, devices, threads, and a small
// forward/backward demo on every available device.
#include <chrono>
#include <cstdio>

#include "colt5.h"
#include "tools/commands.h"

namespace colt5::tools {
namespace {

void demo(Device dev) {
  // A two-layer perceptron on random data: loss, gradient norms, and an f64
  // gradient check of the same network on the CPU.
  Generator g(0);
  Options o{.dtype = DType::f32, .device = dev};
  Tensor x = randn({64, 32}, g, o);
  Tensor w1 = (randn({32, 64}, g, o) * 0.2).detach().requires_grad_();
  Tensor w2 = (randn({64, 1}, g, o) * 0.2).detach().requires_grad_();
  Tensor y = sin(sum(x, 1, true));  // a target the network can fit
  auto t0 = std::chrono::steady_clock::now();
  Tensor h = gelu(matmul(x, w1));
  Tensor pred = matmul(h, w2);
  Tensor loss = mean(pow(pred - y, 2.0));
  loss.backward();
  double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  std::printf("  %-7s loss %.6f  |dL/dw1| %.6f  |dL/dw2| %.6f  (forward+backward %.2f ms)\n", dev.str().c_str(),
              loss.item<double>(), std::sqrt(sum(w1.grad() * w1.grad()).item<double>()),
              std::sqrt(sum(w2.grad() * w2.grad()).item<double>()), ms);
}

int run_info() {
  std::printf("colt5 engine\n");
  std::printf("  build:   %s\n", build_config().c_str());
  std::printf("  CPU:     %d threads (COLT5_NUM_THREADS to change), matmul via %s\n", get_num_threads(),
              blas_compiled() ? "OpenBLAS" : "built-in blocked GEMM");
  if (!cuda_compiled()) {
    std::printf("  CUDA:    not compiled in\n");
  } else {
    std::printf("  CUDA:    compiled in, %d device(s) visible\n", cuda_device_count());
  }
  std::printf("demo: two-layer perceptron, forward and backward\n");
  demo(Device::cpu());
  if (cuda_available()) demo(Device::cuda(0));
  // The same network in f64, checked against finite differences.
  Generator g(1);
  Tensor x = randn({4, 3}, g, {.dtype = DType::f64});
  Tensor w1 = randn({3, 5}, g, {.dtype = DType::f64, .requires_grad = true});
  Tensor w2 = randn({5, 1}, g, {.dtype = DType::f64, .requires_grad = true});
  GradcheckResult r = gradcheck(
      [&](const std::vector<Tensor>& v) { return matmul(gelu(matmul(x, v[0])), v[1]); }, {w1, w2});
  std::printf("  gradcheck (f64, finite differences): %s (max abs error %.2e)\n", r.ok ? "ok" : r.message.c_str(),
              r.max_abs_err);
  return r.ok ? 0 : 1;
}

}  // namespace

void add_info_command(CLI::App& app) {
  CLI::App* sub = app.add_subcommand("info", "Print the build configuration and run a forward/backward demo");
  command_table().push_back({sub, run_info});
}

}  // namespace colt5::tools
