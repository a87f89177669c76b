// README, "Using the layers from C++": ConditionalRoutedAutoregressiveAttention
// on 8192 tokens (windows of 128). Check: shape, and causality across
// windows: changing the last token changes no output of the windows before its
// own (inside a window, which queries get routed depends on the whole window).
#include "readme_check.h"

// README:begin
#include <colt5.h>

#include <cstdio>
#include <cstdlib>

using namespace colt5;

int main() {
  // The GPU when there is one. On the CPU, COLT5_README_SMALL=1 (ctest sets it) shrinks the sizes.
  const Device device = cuda_available() ? Device::cuda() : Device::cpu();
  const bool small = device.is_cpu() && std::getenv("COLT5_README_SMALL") != nullptr;
  Generator gen(0);
// README:end

  // README:begin
  const int64_t n = small ? 2048 : 8192;
  Tensor tokens = randn({2, n, 512}, gen, {.device = device});

  ConditionalRoutedAutoregressiveAttention attn(
      {.dim = 512,
       .num_heavy_tokens_q = 32,     // 32 of the 128 queries of each window
       .num_heavy_tokens_kv = 1024,  // 1024 key / values from the windows before
       .num_routed_kv = 2,           // 2 routed sets of key / values, 4 heads each
       .light_dim_head = 64,
       .light_heads = 8,
       .light_window_size = 128,     // causal local attention of the light branch
       .heavy_window_size = 128,     // the windows of the routed heavy attention
       .heavy_dim_head = 64,
       .heavy_heads = 8},
      gen);
  attn.to(device);

  Tensor attn_out = attn(tokens) + tokens;  // (2, 8192, 512): with residual (prenorm is included)
  std::printf("autoregressive attention: %s\n", shape_str(attn_out.shape()).c_str());
  // README:end

  NoGradGuard no_grad;
  Tensor changed = tokens.clone();
  changed.narrow(1, n - 1, 1).fill_(3.0);
  Tensor changed_out = attn(changed) + changed;
  Tensor before = changed_out.narrow(1, 0, n - 128) - attn_out.narrow(1, 0, n - 128);
  bool ok = readme::check_output("attn_out", attn_out, {2, n, 512}, device) &&
            readme::check_counts("unchanged outputs before the last window",
                                 readme::rows_equal(before, zeros({512}), 1e-4), n - 128);
  Tensor last = changed_out.narrow(1, n - 1, 1) - attn_out.narrow(1, n - 1, 1);
  ok = ok && readme::check_counts("unchanged outputs at the changed token",
                                  readme::rows_equal(last, zeros({512}), 1e-4), 0);
  return ok ? 0 : 1;
}
