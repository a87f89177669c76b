// CPU / GPU parity of ConditionalRoutedAutoregressiveAttention,
// ConditionalRoutedCrossAttention, ConditionalRoutedImageAttention and
// ConditionalRoutedViT: twin modules from one seed (one moved to the GPU), the
// same f32 inputs, forward compared, then one random output gradient
// backpropagated on both and every parameter's gradient (by state-dict name)
// and the input's compared. Runs only with a GPU.
//
// Error metric: ||gpu - cpu|| / ||cpu|| per tensor, no NaN / inf. Tolerances
// (f32 both sides): every layer here runs an attention kernel on TF32 tensor
// cores (local attention has no switch; heavy / self attention default to
// TF32): forward 5e-3, gradients 2e-2. Soft router settings (eps 0.3) keep the
// selection away from rounding-level ties so both devices pick the same tokens.
//
// Also: the autoregressive layer's forward + backward peak GPU memory at the
// package's README settings (2 x 8192 x 512, window 128, 32 query / 1024
// key-value heavy tokens, 2 kv routes) must stay under 1 GB (package: 8.5 GB).
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "colt5.h"
#include "gpu/layer_parity.h"

using namespace colt5;
using namespace colt5::layer_parity;

TEST_CASE("gpu layers parity2: ConditionalRoutedAutoregressiveAttention") {
  for (int64_t N : {64, 75}) {
    auto [mc, mg] = twins<ConditionalRoutedAutoregressiveAttention>(10, [&](Generator& g) {
      return std::make_shared<ConditionalRoutedAutoregressiveAttention>(
          ConditionalRoutedAutoregressiveAttentionConfig{.dim = 32, .num_heavy_tokens_q = 4, .num_heavy_tokens_kv = 12,
                                                         .num_routed_kv = 2, .light_dim_head = 16, .light_heads = 2,
                                                         .light_window_size = 16, .heavy_dim_head = 16,
                                                         .heavy_heads = 4, .router_kwargs = kSoft,
                                                         .multiply_queries_by_score = true, .rotary_emb = true},
          g);
    });
    parity<ConditionalRoutedAutoregressiveAttention>(
        "autoregressive N=" + std::to_string(N), *mc, *mg, rnd({2, N, 32}, 11), Tensor(),
        [](ConditionalRoutedAutoregressiveAttention& m, const Tensor& x, const Tensor&) { return m.forward(x); },
        kFwdTf32, kBwdTf32);
  }
}

TEST_CASE("gpu layers parity2: ConditionalRoutedCrossAttention (routed, blocks, unrouted)") {
  for (bool blocks : {false, true}) {
    auto [mc, mg] = twins<ConditionalRoutedCrossAttention>(20, [&](Generator& g) {
      ConditionalRoutedCrossAttentionConfig c{.dim = 32, .num_tokens_q = 8, .num_tokens_kv = 16, .dim_head = 16,
                                              .heads = 4, .router_kwargs = kSoft, .kv_routing_tokens = 2};
      if (blocks) c.route_block_size = 32;
      return std::make_shared<ConditionalRoutedCrossAttention>(c, g);
    });
    Tensor ctx = rnd({2, 100, 32}, 21), cmask = rmask(2, 100, 0.8, 22);
    for (int64_t ntq : {8, 40}) {
      parity<ConditionalRoutedCrossAttention>(
          std::string("cross blocks=") + (blocks ? "1" : "0") + " ntq=" + std::to_string(ntq), *mc, *mg,
          rnd({2, 40, 32}, 23), Tensor(),
          [&](ConditionalRoutedCrossAttention& m, const Tensor& x, const Tensor&) {
            const Device d = x.device();
            return m.forward(x, ctx.to(d), {}, cmask.to(d), {.num_tokens_q = ntq});
          },
          kFwdTf32, kBwdTf32);
      mc->zero_grad();
      mg->zero_grad();
    }
  }
}

TEST_CASE("gpu layers parity2: ConditionalRoutedImageAttention (per patch, global, channel_first)") {
  for (bool global : {false, true}) {
    auto [mc, mg] = twins<ConditionalRoutedImageAttention>(30, [&](Generator& g) {
      return std::make_shared<ConditionalRoutedImageAttention>(
          ConditionalRoutedImageAttentionConfig{.dim = 32, .num_heavy_tokens_q = 6, .num_heavy_tokens_kv = 10,
                                                .num_routed_kv = 2, .light_dim_head = 16, .light_heads = 2,
                                                .light_window_size = 4, .heavy_dim_head = 16, .heavy_heads = 4,
                                                .router_kwargs = kSoft, .channel_first = true,
                                                .global_routing = global},
          g);
    });
    parity<ConditionalRoutedImageAttention>(
        std::string("image global=") + (global ? "1" : "0"), *mc, *mg, rnd({2, 32, 8, 12}, 31), Tensor(),
        [](ConditionalRoutedImageAttention& m, const Tensor& x, const Tensor&) { return m.forward(x); }, kFwdTf32,
        kBwdTf32);
  }
}

TEST_CASE("gpu layers parity2: ConditionalRoutedViT") {
  auto [mc, mg] = twins<ConditionalRoutedViT>(40, [&](Generator& g) {
    return std::make_shared<ConditionalRoutedViT>(
        ConditionalRoutedViTConfig{.image_size = 16, .patch_size = 2, .num_classes = 10, .dim = 32, .depth = 2,
                                   .attn_num_heavy_tokens_q = 8, .attn_num_heavy_tokens_kv = 12,
                                   .attn_light_dim_head = 16, .attn_light_heads = 2, .attn_light_window_size = 4,
                                   .attn_heavy_dim_head = 16, .attn_heavy_heads = 2, .ff_num_heavy_tokens = 24,
                                   .router_kwargs = kSoft, .router_kwargs_has_eps = true},
        g);
  });
  parity<ConditionalRoutedViT>(
      "vit", *mc, *mg, rnd({2, 3, 16, 16}, 41), Tensor(),
      [](ConditionalRoutedViT& m, const Tensor& x, const Tensor&) { return m.forward(x); }, kFwdTf32, kBwdTf32);
}

TEST_CASE("gpu layers parity2: autoregressive attention memory at the README settings (< 1 GB)") {
  Generator gen(50);
  ConditionalRoutedAutoregressiveAttention a({.dim = 512, .num_heavy_tokens_q = 32, .num_heavy_tokens_kv = 1024,
                                              .num_routed_kv = 2, .light_dim_head = 64, .light_heads = 8,
                                              .light_window_size = 128, .heavy_window_size = 128,
                                              .heavy_dim_head = 64, .heavy_heads = 8},
                                             gen);
  a.to(kGpu);
  Tensor x = rnd({2, 8192, 512}, 51).to(kGpu).requires_grad_();
  const int64_t before = memory_stats(kGpu).current_bytes;
  reset_peak_memory(kGpu);
  {
    Tensor y = a.forward(x);
    sum(y).backward();
  }
  const int64_t peak = memory_stats(kGpu).peak_bytes - before;
  MESSAGE("autoregressive 2x8192x512 (README settings) forward+backward peak: " << peak / 1.0e6
                                                                                  << " MB above the inputs/params");
  CHECK(peak < (int64_t(1) << 30));
  CHECK(x.grad().defined());
}
