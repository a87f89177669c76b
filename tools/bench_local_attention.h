// `colt5 bench local_attention`: fused local (windowed) attention (SPEC §3.2)
// on the GPU beside the unfused reference (local_attention_reference: pad,
// gather neighbourhoods, matmul + masked softmax + matmul) on the same device,
// for the two forms CoLT5 uses:
//   non-causal exact, window 64, look 1/1, 2x8x32768x64 (target fwd+bwd <= 3 ms)
//   causal, window 128, look back 1, 2x8x8192x64
// in f32 (TF32) and bf16. Prints fwd, bwd and fwd+bwd milliseconds (medians,
// CUDA events), TFLOP/s counted as attended pairs x 4d flops (x3.5 for
// fwd+bwd), the time per attended pair beside two yardsticks (target within
// 1.5x): the dense flash kernel's on 2x8x8192x8192x64 f32 ("x dense") and
// the same local kernels' with every key in the band at the heavy shape's
// size, 2x8x1024x64 with window = N ("x band"); the op (tensors + autograd) and
// the reference. Options: [--iters N] [--only TEXT] [--no-reference]
// [--no-dense] [--variants]. Without CUDA it prints a note and returns 0.
#pragma once
#include <cstdint>
#include <string>

#include "engine/dtype.h"

int bench_local_attention(int argc, char** argv);

// One shape of that benchmark, also run by `colt5 bench attention`
// (tools/bench_flash_attention_kernels.cpp) for its table. CUDA builds only.
struct LocalAttentionBenchSpec {
  const char* name;  // e.g. "non-causal exact w=64 look 1/1 2x8x32768x64"
  int64_t B, H, N, d;
  int64_t window;
  int look_backward, look_forward;
  bool causal, exact;
  colt5::DType dtype;
  double target_ms;  // fwd+bwd, 0 = none
};
struct LocalAttentionBenchResult {
  std::string name;  // spec name + dtype
  double pairs = 0;  // attended (query, key) pairs, B*H included; FLOPs fwd = 4 d pairs, fwd+bwd 3.5x
  int64_t d = 64;
  double queries = 0;                   // B * H * N
  double fwd = 0, bwd = 0, fb = 0;      // the kernels alone (ms, medians of CUDA-event timings)
  double op_fwd = 0, op_fb = 0;         // the op (tensors + autograd)
  double ref_fwd = 0, ref_fb = 0;       // the unfused reference op (0 when not run)
  double err[4] = {-1, -1, -1, -1};     // fused vs reference rel L2: out, dq, dk, dv
  double target = 0;
};
// Times the kernels, the op and (when `reference`) the unfused reference on
// GPU 0, printing one progress line per measurement.
LocalAttentionBenchResult bench_local_attention_shape(const LocalAttentionBenchSpec& spec, int iters, bool reference,
                                                      bool variants = false);
