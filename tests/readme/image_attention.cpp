// README, "Using the layers from C++": ConditionalRoutedImageAttention on a
// 256 x 256 feature map (channel first), routing over the whole image.
// Check: shape and finite values.
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
  // an image feature map too large for attention: 256 * 256 == 65536 tokens
  const int64_t side = small ? 64 : 256;
  Tensor fmap = randn({1, 32, side, side}, gen, {.device = device});

  ConditionalRoutedImageAttention attn(
      {.dim = 32,
       .num_heavy_tokens_q = 1024,   // heavy branch receives only 1024 routed tokens of 65536
       .num_heavy_tokens_kv = 1024,  // heavy branch receives only 1024 routed tokens of 65536
       .light_dim_head = 64,
       .light_heads = 8,
       .light_window_size = 32,      // light branch: attention inside 32 x 32 patches
       .heavy_dim_head = 64,
       .heavy_heads = 8,
       .channel_first = true,        // (batch, dim, height, width)
       .global_routing = true},      // route over the whole image, not per patch
      gen);
  attn.to(device);

  Tensor out = attn(fmap);  // (1, 32, 256, 256)
  std::printf("image attention: %s\n", shape_str(out.shape()).c_str());
  // README:end

  bool ok = readme::check_output("out", out, {1, 32, side, side}, device);
  return ok ? 0 : 1;
}
