// README, "Using the layers from C++": ConditionalRoutedViT on 256 x 256
// images. Check: logits shape and finite values.
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
  (void)small;  // the ViT runs at the README's size everywhere (1.4 s on 2 CPU cores)

  // README:begin
  ConditionalRoutedViT vit(
      {.image_size = 256,
       .patch_size = 32,
       .num_classes = 1000,
       .dim = 1024,
       .depth = 6,
       .attn_num_heavy_tokens_q = 16,   // routed queries of the heavy attention
       .attn_num_heavy_tokens_kv = 16,  // routed key / values of the heavy attention
       .attn_light_dim_head = 32,
       .attn_light_heads = 4,
       .attn_light_window_size = 4,     // light branch: windows of 4 x 4 patches
       .attn_heavy_dim_head = 64,
       .attn_heavy_heads = 8,
       .ff_num_heavy_tokens = 16,       // tokens routed to the heavy feed-forward
       .ff_light_mult = 2,
       .ff_heavy_mult = 4},
      gen);
  vit.to(device);

  Tensor images = randn({1, 3, 256, 256}, gen, {.device = device});
  Tensor logits = vit(images);  // (1, 1000)
  std::printf("ViT: %s\n", shape_str(logits.shape()).c_str());
  // README:end

  bool ok = readme::check_output("logits", logits, {1, 1000}, device);
  return ok ? 0 : 1;
}
