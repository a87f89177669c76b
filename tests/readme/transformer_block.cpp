// README, "Using the layers from C++": ConditionalRoutedTransformerBlock on
// 32768 tokens with a mask, forward and backward. Check: output shape, and the
// backward reached every parameter with finite gradients.
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

  // both attention and feed-forward with residual: the complete transformer block;
  // a stack of these would constitute the encoder of CoLT5
  ConditionalRoutedTransformerBlock block(
      {.dim = 512,
       .num_heavy_attn_tokens_q = 1024,
       .num_heavy_attn_tokens_kv = 1024,
       .num_heavy_ff_tokens = 1024,
       .light_dim_head = 64,
       .light_heads = 8,
       .light_window_size = 128,
       .heavy_dim_head = 64,
       .heavy_heads = 8,
       .light_ff_mult = 0.5,
       .heavy_ff_mult = 4},
      gen);
  block.to(device);

  Tensor block_out = block(tokens, mask);  // (2, 32768, 512)
  std::printf("transformer block: %s, %lld parameters\n", shape_str(block_out.shape()).c_str(),
              static_cast<long long>(block.num_parameters()));

  mean(block_out * block_out).backward();  // gradients in every parameter's .grad()
  // README:end

  bool ok = readme::check_output("block_out", block_out, {2, n, 512}, device);
  for (const auto& [name, p] : block.named_parameters()) {
    if (!ok) break;
    if (!p.grad().defined()) ok = readme::fail(name + " has no gradient");
    else ok = readme::check_output(name.c_str(), p.grad(), p.shape(), device);
  }
  return ok ? 0 : 1;
}
