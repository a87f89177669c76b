// colt5 bench NAME [options]: the benchmarks. Each prints a table of medians
// measured side by side in one run.
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "tools/commands.h"

// CMake defines COLT5_HAVE_BENCH_<NAME> for each tools/bench_<name>.cpp it builds.
#ifdef COLT5_HAVE_BENCH_MATMUL
#include "tools/bench_matmul.h"
#endif
#ifdef COLT5_HAVE_BENCH_CUDA
#include "tools/bench_cuda.h"
#endif
#ifdef COLT5_HAVE_BENCH_COOR_DESCENT_KERNELS
#include "tools/bench_coor_descent_kernels.h"
#endif
#ifdef COLT5_HAVE_BENCH_COOR_DESCENT
#include "tools/bench_coor_descent.h"
#endif
#ifdef COLT5_HAVE_BENCH_LOCAL_ATTENTION
#include "tools/bench_local_attention.h"
#endif
#ifdef COLT5_HAVE_BENCH_TOPK_KERNELS
#include "tools/bench_topk_kernels.h"
#endif
#ifdef COLT5_HAVE_BENCH_FLASH_ATTENTION_KERNELS
#include "tools/bench_flash_attention_kernels.h"
#endif

namespace colt5::tools {
namespace {

using BenchFn = int (*)(int, char**);

std::map<std::string, std::pair<BenchFn, const char*>> benches() {
  std::map<std::string, std::pair<BenchFn, const char*>> m;
#ifdef COLT5_HAVE_BENCH_MATMUL
  m["matmul"] = {bench_matmul, "CPU matmul GFLOP/s (engine matmul; OpenBLAS and built-in GEMM side by side)"};
#endif
#ifdef COLT5_HAVE_BENCH_CUDA
  m["cuda"] = {bench_cuda, "GPU: cuBLAS GEMM TFLOP/s, elementwise add vs copy GB/s, softmax GB/s"};
#endif
#ifdef COLT5_HAVE_BENCH_COOR_DESCENT_KERNELS
  m["coor-descent-kernels"] = {bench_coor_descent_kernels, "coordinate descent kernels alone (CPU and GPU), fwd and fwd+bwd"};
#endif
#ifdef COLT5_HAVE_BENCH_COOR_DESCENT
  m["coor-descent"] = {bench_coor_descent, "coordinate descent op: fused vs primitive-op reference, same device"};
#endif
#ifdef COLT5_HAVE_BENCH_LOCAL_ATTENTION
  m["local-attention"] = {bench_local_attention, "fused local windowed attention vs reference"};
#endif
#ifdef COLT5_HAVE_BENCH_TOPK_KERNELS
  m["topk"] = {bench_topk_kernels, "hard top-k, CPU and GPU"};
#endif
#ifdef COLT5_HAVE_BENCH_FLASH_ATTENTION_KERNELS
  m["attention"] = {bench_flash_attention_kernels, "fused flash attention vs unfused reference"};
#endif
  return m;
}

std::string g_name;
std::vector<std::string> g_args;

int run_bench() {
  auto m = benches();
  if (g_name.empty() || g_name == "list") {
    std::printf("benchmarks:\n");
    for (auto& [k, v] : m) std::printf("  %-14s %s\n", k.c_str(), v.second);
    return g_name.empty() ? 1 : 0;
  }
  auto it = m.find(g_name);
  if (it == m.end()) {
    std::fprintf(stderr, "colt5 bench: unknown benchmark '%s' (colt5 bench list)\n", g_name.c_str());
    return 2;
  }
  std::vector<std::string> args{"colt5-bench-" + g_name};
  args.insert(args.end(), g_args.begin(), g_args.end());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  return it->second.first(static_cast<int>(args.size()), argv.data());
}

}  // namespace

void add_bench_command(CLI::App& app) {
  CLI::App* sub = app.add_subcommand("bench", "Run a benchmark (colt5 bench list)");
  sub->add_option("name", g_name, "benchmark name, or 'list'");
  sub->allow_extras();
  command_table().push_back({sub, [sub] {
                               g_args = sub->remaining();
                               return run_bench();
                             }});
}

}  // namespace colt5::tools
