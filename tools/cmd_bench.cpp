// colt5 bench NAME [options]: the benchmarks. Each prints a table of medians
// measured side by side in one run.
//
// colt5 bench all [--only NAME,NAME...] [--json FILE]: every registered
// benchmark (or the named ones) with its default options, one after the
// other. With --json the file gets, per benchmark, its name, exit code,
// seconds, and the text it printed on stdout (the tables as printed);
// benchmarks that produce rows of their own (modules) add them as JSON rows.
// Output is copied from stdout through a pipe while it is printed, so the
// benchmarks themselves are unchanged.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <exception>
#include <fstream>
#include <iostream>
#include <map>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "engine/info.h"
#include "engine/json.h"
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
#ifdef COLT5_HAVE_BENCH_MODULES
#include "tools/bench_modules.h"
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
  m["attention"] = {bench_flash_attention_kernels, "attention table of issue 5: our fused flash and local kernels, unfused reference, cuDNN (bf16/f16), targets"};
#endif
#ifdef COLT5_HAVE_BENCH_MODULES
  m["modules"] = {bench_modules, "CoLT5 blocks (causal and non-causal), fwd and fwd+bwd, CPU and GPU"};
#endif
  return m;
}

std::string g_name;
std::vector<std::string> g_args;

int call_bench(const std::string& name, BenchFn fn, const std::vector<std::string>& extra) {
  std::vector<std::string> args{"colt5-bench-" + name};
  args.insert(args.end(), extra.begin(), extra.end());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  return fn(static_cast<int>(args.size()), argv.data());
}

// Copies everything written to file descriptor 1 (printf, std::cout) into a
// string while still printing it, from construction to finish().
class StdoutTee {
 public:
  StdoutTee() {
    std::fflush(stdout);
    std::cout.flush();
    int fds[2];
    if (pipe(fds) != 0) throw std::runtime_error("colt5 bench all: pipe() failed");
    read_fd_ = fds[0];
    saved_fd_ = dup(1);
    dup2(fds[1], 1);
    close(fds[1]);
    reader_ = std::thread([this] {
      char buf[4096];
      ssize_t n;
      while ((n = read(read_fd_, buf, sizeof buf)) > 0) {
        captured_.append(buf, static_cast<size_t>(n));
        for (ssize_t off = 0; off < n;) {
          const ssize_t w = write(saved_fd_, buf + off, static_cast<size_t>(n - off));
          if (w <= 0) break;
          off += w;
        }
      }
    });
  }
  ~StdoutTee() { finish(); }
  StdoutTee(const StdoutTee&) = delete;
  StdoutTee& operator=(const StdoutTee&) = delete;
  // Restores stdout (the pipe's last writer closes, the reader sees EOF) and returns the text.
  const std::string& finish() {
    if (saved_fd_ < 0) return captured_;
    std::fflush(stdout);
    std::cout.flush();
    dup2(saved_fd_, 1);
    reader_.join();
    close(read_fd_);
    close(saved_fd_);
    saved_fd_ = -1;
    return captured_;
  }

 private:
  int read_fd_ = -1, saved_fd_ = -1;
  std::thread reader_;
  std::string captured_;
};

int run_all(const std::map<std::string, std::pair<BenchFn, const char*>>& m) {
  std::string json_path;
  std::vector<std::string> only;
  for (size_t i = 0; i < g_args.size(); ++i) {
    if (g_args[i] == "--json" && i + 1 < g_args.size()) json_path = g_args[++i];
    else if (g_args[i] == "--only" && i + 1 < g_args.size()) {
      const std::string list = g_args[++i];
      for (size_t a = 0; a <= list.size();) {
        size_t b = list.find(',', a);
        if (b == std::string::npos) b = list.size();
        if (b > a) only.push_back(list.substr(a, b - a));
        a = b + 1;
      }
      for (const std::string& n : only)
        if (!m.count(n)) {
          std::fprintf(stderr, "colt5 bench all: unknown benchmark '%s' in --only (colt5 bench list)\n", n.c_str());
          return 2;
        }
    } else {
      std::fprintf(stderr,
                   "colt5 bench all: unknown or incomplete option '%s' (usage: colt5 bench all [--only NAME,...] "
                   "[--json FILE]; each benchmark runs with its defaults, run one by name to pass it options)\n",
                   g_args[i].c_str());
      return 2;
    }
  }
  std::ofstream out;
  if (!json_path.empty()) {
    out.open(json_path);
    if (!out) {
      std::fprintf(stderr, "colt5 bench all: cannot write '%s'\n", json_path.c_str());
      return 1;
    }
  }
  colt5::Json list = colt5::Json::array();
  int failed = 0, ran = 0;
  for (const auto& [name, entry] : m) {
    if (!only.empty() && std::find(only.begin(), only.end(), name) == only.end()) continue;
    ++ran;
    std::printf("\n=== colt5 bench %s: %s\n", name.c_str(), entry.second);
    colt5::Json item = colt5::Json::object();
    item.set("name", name);
    item.set("description", entry.second);
    int rc = 1;
    std::string error;
    const auto t0 = std::chrono::steady_clock::now();
    std::string text;
    {
      StdoutTee tee;
      try {
#ifdef COLT5_HAVE_BENCH_MODULES
        if (name == "modules") {
          colt5::Json rows = colt5::tools::run_module_benchmarks({});
          rc = 0;
          for (const colt5::Json& r : rows.as_array())
            if (!r.at("error").is_null()) rc = 1;
          item.set("rows", std::move(rows));
        } else
#endif
          rc = call_bench(name, entry.first, {});
      } catch (const std::exception& e) {
        error = e.what();
        std::printf("error: %s\n", e.what());
      }
      text = tee.finish();
    }
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (rc != 0) ++failed;
    item.set("exit_code", rc);
    item.set("seconds", secs);
    item.set("error", error.empty() ? colt5::Json() : colt5::Json(error));
    item.set("output", text);
    list.push_back(std::move(item));
  }
  std::printf("\n%d benchmarks run, %d failed\n", ran, failed);
  if (!json_path.empty()) {
    colt5::Json doc = colt5::Json::object();
    doc.set("build", colt5::build_config());
    doc.set("benchmarks", std::move(list));
    out << doc.dump(2) << "\n";
    out.close();
    if (!out) {
      std::fprintf(stderr, "colt5 bench all: writing '%s' failed\n", json_path.c_str());
      return 1;
    }
    std::printf("wrote %s\n", json_path.c_str());
  }
  return failed ? 1 : 0;
}

int run_bench() {
  auto m = benches();
  if (g_name.empty() || g_name == "list") {
    std::printf("benchmarks:\n");
    for (auto& [k, v] : m) std::printf("  %-20s %s\n", k.c_str(), v.second);
    std::printf("  %-20s %s\n", "all", "every benchmark above with its defaults [--only NAME,...] [--json FILE]");
    return g_name.empty() ? 1 : 0;
  }
  if (g_name == "all") return run_all(m);
  auto it = m.find(g_name);
  if (it == m.end()) {
    std::fprintf(stderr, "colt5 bench: unknown benchmark '%s' (colt5 bench list)\n", g_name.c_str());
    return 2;
  }
  return call_bench(g_name, it->second.first, g_args);
}

}  // namespace

void add_bench_command(CLI::App& app) {
  CLI::App* sub = app.add_subcommand("bench", "Run a benchmark (colt5 bench list)");
  sub->add_option("name", g_name, "benchmark name, 'all' (every benchmark; --json FILE), or 'list'");
  sub->allow_extras();
  command_table().push_back({sub, [sub] {
                               g_args = sub->remaining();
                               return run_bench();
                             }});
}

}  // namespace colt5::tools
