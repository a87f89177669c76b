// colt5 bench modules: whole CoLT5 blocks, forward and forward+backward.
//
//   causal block:     x = ConditionalRoutedAutoregressiveAttention(x) + x
//                     x = ConditionalRoutedFeedForward(x) + x
//   non-causal block: ConditionalRoutedTransformerBlock (ConditionalRoutedAttention
//                     + ConditionalRoutedFeedForward, each residual)
//
// with the package README's settings: dim 512, light 8 heads x 64, light window
// 128 (also the heavy window of the causal block), heavy 8 heads x 64, 32
// heavy query tokens (per window in the causal block) and 1024 heavy key/value
// tokens over 2 kv routes, feed-forward with 1024 heavy tokens (light x0.5,
// heavy x4), router defaults (coordinate descent n_iters 20, eps 0.03,
// eps_init 4, eps_decay 0.7), f32, TF32 off unless --tf32.
// Shapes (B x N x 512): GPU 2x8192 and 2x32768; CPU 1x2048 and 1x8192. GPU
// rows also time the autoregressive attention layer alone ("causal attention
// alone", no residual), whose 2x8192 forward+backward peak is issue 6's
// under-1-GB target.
//
// Times are medians over --runs runs after warm-up, taken on the host clock
// with device_synchronize after each run (so launch overhead counts). Forward
// runs under no_grad (inference); forward+backward runs in training mode
// with the input requiring grad and a random output gradient (parameter
// gradients dropped before each run). tokens/s = B*N / time. Peak GPU memory
// is the allocator's peak of live tensors (engine memory_stats, weights and
// input included) during one forward / one forward+backward after warm-up.
//
// Options: --device cpu|cuda|all (default all: CPU rows, and GPU rows when a
// GPU is visible), --runs N (default 5 on the CPU, 10 on the GPU), --only TEXT
// (rows whose "module shape" contains TEXT), --tf32, --json FILE (the rows as
// a JSON document).
#pragma once
#include <string>
#include <vector>

#include "engine/json.h"

namespace colt5::tools {

struct ModuleBenchOptions {
  std::string device = "all";  // cpu | cuda | all
  int runs = 0;                // 0: 5 on the CPU, 10 on the GPU
  std::string only;            // substring filter on "module shape"
  bool tf32 = false;
};

// Runs the rows, printing the table as it goes; returns the rows as a JSON
// array of objects (device, module, shape, B, N, dim, runs, fwd_ms, fwd_bwd_ms,
// fwd_tokens_per_s, fwd_bwd_tokens_per_s, fwd_peak_bytes, fwd_bwd_peak_bytes
// (GPU rows; null on the CPU), error (null, or the message when the row threw)).
Json run_module_benchmarks(const ModuleBenchOptions& options);

}  // namespace colt5::tools

// `colt5 bench modules [--device cpu|cuda|all] [--runs N] [--only TEXT] [--tf32] [--json FILE]`
int bench_modules(int argc, char** argv);
