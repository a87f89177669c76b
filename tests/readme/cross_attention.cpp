// README, "Using the layers from C++": ConditionalRoutedCrossAttention of 1024
// tokens over a memory of 1M tokens routed in blocks. Check: the routed
// queries' output is scattered into null_q_token, so exactly 1024 - 512
// output rows are null_q_token.
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
  // mock input: a transformer of 1024 tokens attending to 1 million memories of the past
  const int64_t memory_len = small ? 16384 : 1048576;
  Tensor tokens = randn({1, 1024, 512}, gen, {.device = device});
  Tensor tokens_mask = ones({1, 1024}, {.dtype = DType::b8, .device = device});
  Tensor memories = randn({1, memory_len, 512}, gen, {.device = device});
  Tensor memories_mask = ones({1, memory_len}, {.dtype = DType::b8, .device = device});

  ConditionalRoutedCrossAttention cross_attn(
      {.dim = 512,
       .num_tokens_q = 512,                  // only 512 routed from 1024
       .num_tokens_kv = 1024,                // only 1024 routed from 1 million
       .dim_head = 64,
       .heads = 8,
       .kv_routing_tokens = 2,               // 2 routed sets of key / values, 4 heads each
       .route_block_size = memory_len / 8},  // route in 8 blocks of 131072
      gen);
  cross_attn.to(device);

  Tensor cross_attn_out = cross_attn(tokens, memories, tokens_mask, memories_mask);
  std::printf("cross attention: %s\n", shape_str(cross_attn_out.shape()).c_str());  // (1, 1024, 512)
  // README:end

  bool ok = readme::check_output("cross_attn_out", cross_attn_out, {1, 1024, 512}, device) &&
            readme::check_counts("rows equal to null_q_token",
                                 readme::rows_equal(cross_attn_out, cross_attn.null_q_token, 0.0), 1024 - 512);
  return ok ? 0 : 1;
}
