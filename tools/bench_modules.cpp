// Module benchmarks: whole CoLT5 blocks, forward and forward+backward, on CPU
// and GPU; see the header for the settings and what is measured.
#include "tools/bench_modules.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "colt5.h"

#ifdef COLT5_WITH_CUDA
#include "engine/cuda/cublas.h"
#include "engine/cuda/memory.h"
#endif

namespace colt5::tools {
namespace {

constexpr int64_t kDim = 512;

// One block under test: its forward as a function of x.
struct Block {
  std::string name;
  std::shared_ptr<Module> module;
  std::function<Tensor(const Tensor&)> forward;
};

// The package README's autoregressive attention settings.
ConditionalRoutedAutoregressiveAttentionConfig causal_attention_config() {
  return {.dim = kDim,
          .num_heavy_tokens_q = 32,
          .num_heavy_tokens_kv = 1024,
          .num_routed_kv = 2,
          .light_dim_head = 64,
          .light_heads = 8,
          .light_window_size = 128,
          .heavy_window_size = 128,
          .heavy_dim_head = 64,
          .heavy_heads = 8};
}

// Causal: x = ConditionalRoutedAutoregressiveAttention(x) + x; x = ConditionalRoutedFeedForward(x) + x.
class CausalBlock : public Module {
 public:
  explicit CausalBlock(Generator& gen) {
    attn = register_module(
        "attn", std::make_shared<ConditionalRoutedAutoregressiveAttention>(causal_attention_config(), gen));
    ff = register_module("ff", std::make_shared<ConditionalRoutedFeedForward>(
                                   ConditionalRoutedFeedForwardConfig{.dim = kDim, .num_heavy_tokens = 1024}, gen));
  }
  Tensor forward(const Tensor& x) const {
    Tensor h = attn->forward(x) + x;
    return ff->forward(h) + h;
  }
  std::shared_ptr<ConditionalRoutedAutoregressiveAttention> attn;
  std::shared_ptr<ConditionalRoutedFeedForward> ff;
};

const char* const kCausalName = "causal block (autoregressive attn + ff)";
const char* const kBlockName = "non-causal block (routed attn + ff)";
const char* const kCausalAttnName = "causal attention alone";

// The autoregressive attention layer alone (GPU rows only): issue 6's memory
// target (2x8192x512 forward+backward under 1 GB of GPU memory) is for it.
Block make_causal_attention(Device dev) {
  Generator gen(1);
  auto m = std::make_shared<ConditionalRoutedAutoregressiveAttention>(causal_attention_config(), gen);
  m->to(dev);
  return {kCausalAttnName, m, [m](const Tensor& x) { return m->forward(x); }};
}

Block make_causal_block(Device dev) {
  Generator gen(1);
  auto m = std::make_shared<CausalBlock>(gen);
  m->to(dev);
  return {kCausalName, m, [m](const Tensor& x) { return m->forward(x); }};
}

Block make_block(Device dev) {
  Generator gen(2);
  auto m = std::make_shared<ConditionalRoutedTransformerBlock>(
      ConditionalRoutedTransformerBlockConfig{.dim = kDim,
                                              .num_heavy_attn_tokens_q = 32,
                                              .num_heavy_attn_tokens_kv = 1024,
                                              .num_routed_kv = 2,
                                              .num_heavy_ff_tokens = 1024,
                                              .light_dim_head = 64,
                                              .light_heads = 8,
                                              .light_window_size = 128,
                                              .heavy_dim_head = 64,
                                              .heavy_heads = 8},
      gen);
  m->to(dev);
  return {kBlockName, m, [m](const Tensor& x) { return m->forward(x); }};
}

// Median of `runs` timed calls after `warmup` untimed ones, each followed by device_synchronize.
double median_ms(Device dev, int warmup, int runs, const std::function<void()>& f) {
  for (int i = 0; i < warmup; ++i) f();
  device_synchronize(dev);
  std::vector<double> t;
  for (int i = 0; i < runs; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    device_synchronize(dev);
    t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t.size() % 2 ? t[t.size() / 2] : 0.5 * (t[t.size() / 2 - 1] + t[t.size() / 2]);
}

// Peak bytes of live GPU tensors during one call of f.
int64_t peak_bytes(Device dev, const std::function<void()>& f) {
  device_synchronize(dev);
  reset_peak_memory(dev);
  f();
  device_synchronize(dev);
  return memory_stats(dev).peak_bytes;
}

std::string fmt(const char* f, double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

void print_header() {
  std::printf("%-6s %-40s %-13s %10s %12s %11s %11s %9s %9s\n", "device", "module", "shape", "fwd ms", "fwd+bwd ms",
              "fwd tok/s", "f+b tok/s", "fwd MiB", "f+b MiB");
}

void print_row(const Json& r) {
  const bool err = !r.at("error").is_null();
  auto num = [&](const char* key, const char* f, double scale = 1.0) {
    const Json& v = r.at(key);
    return v.is_null() ? std::string("-") : fmt(f, v.as_double() * scale);
  };
  std::printf("%-6s %-40s %-13s %10s %12s %11s %11s %9s %9s%s%s\n", r.at("device").as_string().c_str(),
              r.at("module").as_string().c_str(), r.at("shape").as_string().c_str(), num("fwd_ms", "%.2f").c_str(),
              num("fwd_bwd_ms", "%.2f").c_str(), num("fwd_tokens_per_s", "%.0f").c_str(),
              num("fwd_bwd_tokens_per_s", "%.0f").c_str(), num("fwd_peak_bytes", "%.0f", 1.0 / (1 << 20)).c_str(),
              num("fwd_bwd_peak_bytes", "%.0f", 1.0 / (1 << 20)).c_str(), err ? "  error: " : "",
              err ? r.at("error").as_string().c_str() : "");
  std::fflush(stdout);
}

Json measure(Device dev, const Block& block, int64_t B, int64_t N, int runs) {
  const std::string shape = std::to_string(B) + "x" + std::to_string(N) + "x" + std::to_string(kDim);
  Json row = Json::object();
  row.set("device", dev.is_cpu() ? "cpu" : "cuda");
  row.set("module", block.name);
  row.set("shape", shape);
  row.set("B", B);
  row.set("N", N);
  row.set("dim", kDim);
  row.set("runs", runs);
  for (const char* k : {"fwd_ms", "fwd_bwd_ms", "fwd_tokens_per_s", "fwd_bwd_tokens_per_s", "fwd_peak_bytes",
                        "fwd_bwd_peak_bytes", "error"})
    row.set(k, nullptr);
  try {
    Generator g(3);
    const Options o{.dtype = DType::f32, .device = dev};
    Tensor x = randn({B, N, kDim}, g, o), dout = randn({B, N, kDim}, g, o);
    auto fwd = [&] {
      NoGradGuard ng;
      block.forward(x);
    };
    auto fb = [&] {
      block.module->zero_grad();
      Tensor xg = x.detach().requires_grad_();
      block.forward(xg).backward(dout);
    };
    block.module->train(true);
    const int warmup = dev.is_cpu() ? 1 : 2;
    const double tf = median_ms(dev, warmup, runs, fwd);
    row.set("fwd_ms", tf);
    row.set("fwd_tokens_per_s", double(B * N) / (tf * 1e-3));
    const double tfb = median_ms(dev, warmup, runs, fb);
    row.set("fwd_bwd_ms", tfb);
    row.set("fwd_bwd_tokens_per_s", double(B * N) / (tfb * 1e-3));
    if (dev.is_cuda()) {
      block.module->zero_grad();
      row.set("fwd_peak_bytes", peak_bytes(dev, fwd));
      block.module->zero_grad();
      row.set("fwd_bwd_peak_bytes", peak_bytes(dev, fb));
      block.module->zero_grad();
    }
  } catch (const std::exception& e) {
    row.set("error", std::string(e.what()));
  }
  return row;
}

}  // namespace

Json run_module_benchmarks(const ModuleBenchOptions& opt) {
  COLT5_CHECK(opt.device == "cpu" || opt.device == "cuda" || opt.device == "all",
              "bench modules: --device must be cpu, cuda or all, got '", opt.device, "'");
  COLT5_CHECK(opt.runs >= 0, "bench modules: --runs must be >= 1, got ", opt.runs);
  std::vector<Device> devices;
  if (opt.device == "cpu" || opt.device == "all") devices.push_back(Device::cpu());
  if (opt.device == "cuda" || opt.device == "all") {
    if (cuda_available()) devices.push_back(Device::cuda(0));
    else if (opt.device == "cuda")
      throw Error("bench modules: --device cuda but no CUDA device is visible (cuda compiled: " +
                  std::string(cuda_compiled() ? "yes" : "no") + ")");
    else std::printf("(no CUDA device visible: GPU rows skipped)\n");
  }
#ifdef COLT5_WITH_CUDA
  const bool prev_tf32 = cuda::allow_tf32();
  cuda::set_allow_tf32(opt.tf32);
#else
  COLT5_CHECK(!opt.tf32, "bench modules: --tf32 needs a CUDA build");
#endif
  std::printf("CoLT5 blocks, dim 512, f32%s, CPU threads %d; medians (host clock, device synchronised)\n",
              opt.tf32 ? " (TF32 matmuls)" : "", get_num_threads());
  print_header();
  Json rows = Json::array();
  for (Device dev : devices) {
    const std::vector<std::pair<int64_t, int64_t>> shapes =
        dev.is_cpu() ? std::vector<std::pair<int64_t, int64_t>>{{1, 2048}, {1, 8192}}
                     : std::vector<std::pair<int64_t, int64_t>>{{2, 8192}, {2, 32768}};
    const int runs = opt.runs > 0 ? opt.runs : (dev.is_cpu() ? 5 : 10);
    struct Entry {
      const char* name;
      Block (*make)(Device);
      bool gpu_only;
    };
    const Entry blocks[] = {{kCausalName, make_causal_block, false},
                            {kBlockName, make_block, false},
                            {kCausalAttnName, make_causal_attention, true}};
    for (auto [name, make, gpu_only] : blocks) {
      if (gpu_only && dev.is_cpu()) continue;
      std::unique_ptr<Block> block;  // built on first use, shared by the shapes
      for (auto [B, N] : shapes) {
        const std::string shape = std::to_string(B) + "x" + std::to_string(N) + "x" + std::to_string(kDim);
        if (!opt.only.empty() && (std::string(name) + " " + shape).find(opt.only) == std::string::npos) continue;
        if (!block) block = std::make_unique<Block>(make(dev));
        Json row = measure(dev, *block, B, N, runs);
        print_row(row);
        rows.push_back(std::move(row));
      }
    }
  }
#ifdef COLT5_WITH_CUDA
  cuda::set_allow_tf32(prev_tf32);
#endif
  return rows;
}

}  // namespace colt5::tools

int bench_modules(int argc, char** argv) {
  colt5::tools::ModuleBenchOptions opt;
  std::string json_path;
  const char* usage =
      "usage: colt5 bench modules [--device cpu|cuda|all] [--runs N] [--only TEXT] [--tf32] [--json FILE]\n";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--device" && i + 1 < argc) opt.device = argv[++i];
    else if (a == "--runs" && i + 1 < argc) {
      opt.runs = std::atoi(argv[++i]);
      if (opt.runs < 1) {
        std::fprintf(stderr, "colt5 bench modules: --runs must be >= 1, got '%s'\n", argv[i]);
        return 2;
      }
    } else if (a == "--only" && i + 1 < argc) opt.only = argv[++i];
    else if (a == "--tf32") opt.tf32 = true;
    else if (a == "--json" && i + 1 < argc) json_path = argv[++i];
    else if (a == "--help" || a == "-h") {
      std::printf("%s", usage);
      return 0;
    } else {
      std::fprintf(stderr, "colt5 bench modules: unknown or incomplete option '%s'\n%s", a.c_str(), usage);
      return 2;
    }
  }
  if (opt.device != "cpu" && opt.device != "cuda" && opt.device != "all") {
    std::fprintf(stderr, "colt5 bench modules: --device must be cpu, cuda or all, got '%s'\n", opt.device.c_str());
    return 2;
  }
  colt5::Json rows = colt5::tools::run_module_benchmarks(opt);
  int rc = 0;
  for (const colt5::Json& r : rows.as_array())
    if (!r.at("error").is_null()) rc = 1;
  if (!json_path.empty()) {
    colt5::Json doc = colt5::Json::object();
    doc.set("benchmark", "modules");
    doc.set("build", colt5::build_config());
    doc.set("cpu_threads", colt5::get_num_threads());
    doc.set("tf32", opt.tf32);
#ifdef COLT5_WITH_CUDA
    if (colt5::cuda_available()) doc.set("gpu", std::string(colt5::cuda::device_properties(0).name));
#endif
    doc.set("rows", rows);
    std::ofstream f(json_path);
    if (!f) {
      std::fprintf(stderr, "colt5 bench modules: cannot write '%s'\n", json_path.c_str());
      return 1;
    }
    f << doc.dump(2) << "\n";
    std::printf("wrote %s\n", json_path.c_str());
  }
  return rc;
}
