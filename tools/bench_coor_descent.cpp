// Op-level benchmark of coordinate descent: the fused op and the reference
// written with primitive ops, on the same inputs and device, forward and
// forward+backward (gradient w.r.t. the scores), medians of repeated runs.
// Shapes and settings are those of issue 4: router defaults (n_iters 20,
// eps 0.03, eps_init 4, eps_decay 0.7) with 1/16 of each row masked, and the
// paper setting (n_iters 50, eps 1) at 2x32768.
#include "tools/bench_coor_descent.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "colt5.h"

namespace {

using namespace colt5;

struct Case {
  const char* setting;
  int64_t rows, n;
  bool router;
  double gpu_target_ms, cpu_target_ms;
};

double median_ms(Device dev, int runs, const std::function<void()>& f) {
  for (int i = 0; i < 3; ++i) f();
  device_synchronize(dev);
  std::vector<double> t;
  for (int i = 0; i < runs; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    f();
    device_synchronize(dev);
    t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace

int bench_coor_descent(int argc, char** argv) {
  std::string device = "all";
  int runs = 20;
  bool with_reference = true;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--device" && i + 1 < argc) device = argv[++i];
    else if (a == "--runs" && i + 1 < argc) runs = std::max(1, std::atoi(argv[++i]));
    else if (a == "--no-reference") with_reference = false;
    else {
      std::fprintf(stderr, "usage: colt5 bench coor-descent [--device cpu|cuda|all] [--runs N] [--no-reference]\n");
      return 2;
    }
  }
  const Case cases[] = {
      {"router", 2, 8192, true, 0, 1.0},    {"router", 16, 8192, true, 0.25, 0}, {"router", 2, 32768, true, 0.35, 0},
      {"router", 126, 8192, true, 0.5, 0},  {"router", 2, 131072, true, 0.8, 0}, {"router", 1, 1048576, true, 2.5, 0},
      {"paper", 2, 32768, false, 0, 0},
  };
  std::vector<Device> devices;
  if (device == "cpu" || device == "all") devices.push_back(Device::cpu());
  if ((device == "cuda" || device == "all") && cuda_available()) devices.push_back(Device::cuda(0));
  if (device == "cuda" && !cuda_available()) {
    std::fprintf(stderr, "colt5 bench coor-descent: no CUDA device available\n");
    return 1;
  }
  std::printf("coor_descent op: fused vs primitive-op reference, f32, medians of %d runs (times in ms)\n", runs);
  std::printf("%-6s %-7s %-12s %10s %12s %10s %12s %8s %8s\n", "device", "setting", "rows x n", "fused fwd",
              "fused f+b", "ref fwd", "ref f+b", "speedup", "target");
  for (Device dev : devices) {
    for (const Case& c : cases) {
      // CPU: the long rows are many seconds in the reference; keep them to the fused op.
      bool ref = with_reference && (dev.is_cuda() || c.rows * c.n <= 300000);
      Generator g(42);
      Options o{.dtype = DType::f32, .device = dev};
      Tensor s = randn({c.rows, c.n}, g, o);
      Tensor mask = ne(randint(0, 16, {c.rows, c.n}, g, {.dtype = DType::i64, .device = dev}), 0.0);
      double k = static_cast<double>(c.n) / 8.0 * 9.0 / 8.0;
      Tensor dout = randn({c.rows, c.n}, g, o);
      CoorDescentOptions co = c.router ? CoorDescentOptions{.n_iters = 20, .eps = 0.03, .eps_init = 4, .eps_decay = 0.7}
                                       : CoorDescentOptions{.n_iters = 50, .eps = 1.0};
      auto fwd = [&](bool reference) {
        CoorDescentOptions x = co;
        x.reference = reference;
        return [&, x] {
          NoGradGuard ng;
          coor_descent(s, k, mask, x);
        };
      };
      auto fb = [&](bool reference) {
        CoorDescentOptions x = co;
        x.reference = reference;
        return [&, x] {
          Tensor leaf = s.detach().requires_grad_();
          coor_descent(leaf, k, mask, x).backward(dout);
        };
      };
      int r = dev.is_cpu() ? std::max(3, runs / 4) : runs;
      double ff = median_ms(dev, r, fwd(false)), ffb = median_ms(dev, r, fb(false));
      double rf = ref ? median_ms(dev, std::max(3, r / 4), fwd(true)) : 0;
      double rfb = ref ? median_ms(dev, std::max(3, r / 4), fb(true)) : 0;
      double target = dev.is_cpu() ? c.cpu_target_ms : c.gpu_target_ms;
      char shape[32], tgt[16], ref_f[16], ref_fb[16], sp[16];
      std::snprintf(shape, sizeof shape, "%lldx%lld", (long long)c.rows, (long long)c.n);
      std::snprintf(tgt, sizeof tgt, target > 0 ? "<=%.2f" : "-", target);
      std::snprintf(ref_f, sizeof ref_f, ref ? "%.3f" : "-", rf);
      std::snprintf(ref_fb, sizeof ref_fb, ref ? "%.3f" : "-", rfb);
      std::snprintf(sp, sizeof sp, ref ? "%.1fx" : "-", rfb / ffb);
      std::printf("%-6s %-7s %-12s %10.3f %12.3f %10s %12s %8s %8s\n", dev.str().c_str(), c.setting, shape, ff, ffb,
                  ref_f, ref_fb, sp, tgt);
    }
  }
  return 0;
}
