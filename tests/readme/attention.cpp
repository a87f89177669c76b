// README, "Using the layers from C++": ConditionalRoutedAttention on 32768
// tokens with a mask. Check: the heavy branch is scattered into null_q_token,
// so output - light branch is null_q_token at exactly N - 1024 positions per row.
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
  const int64_t n = small ? 2048 : 32768;
  Tensor tokens = randn({2, n, 512}, gen, {.device = device});
  Tensor mask = ones({2, n}, {.dtype = DType::b8, .device = device});

  ConditionalRoutedAttention attn(
      {.dim = 512,
       .num_heavy_tokens_q = 1024,   // heavy branch receives only 1024 routed tokens of 32768
       .num_heavy_tokens_kv = 1024,  // heavy branch receives only 1024 routed tokens of 32768
       .light_dim_head = 64,         // attention head dimension of light branch
       .light_heads = 8,             // number of attention heads for light branch
       .light_window_size = 128,     // local attention receptive field for light
       .heavy_dim_head = 64,         // attention head dimension of heavy branch
       .heavy_heads = 8},            // number of attention heads for heavy branch
      gen);
  attn.to(device);

  Tensor attn_out = attn(tokens, mask);  // (2, 32768, 512): light and heavy branch summed
  std::printf("attention: %s\n", shape_str(attn_out.shape()).c_str());
  // README:end

  NoGradGuard no_grad;
  Tensor heavy = attn_out - attn.light_attn->forward(tokens, mask);
  bool ok = readme::check_output("attn_out", attn_out, {2, n, 512}, device) &&
            readme::check_counts("positions with null_q_token",
                                 readme::rows_equal(heavy, attn.null_q_token, 1e-4), n - 1024);
  return ok ? 0 : 1;
}
