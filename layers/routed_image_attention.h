// ConditionalRoutedImageAttention (SPEC §4): CoLT5 attention over an image
// feature map. The image is cut into w x w patches (w = light_window_size);
// the light branch is SelfAttention (RMSNorm prenorm) inside each patch; the
// routers and the heavy attention also work per patch (each patch is one batch
// row), as the package computes, so its weights carry over. With
// global_routing (our option, what the package's README describes) the routers
// and the heavy attention see the whole image (H W tokens, row-major) instead.
//
//   ConditionalRoutedImageAttention attn({.dim = 32, .num_heavy_tokens_q = 8, .num_heavy_tokens_kv = 16,
//                                         .light_window_size = 8}, gen);
//   Tensor y = attn.forward(fmap /*(B, 32, 32, 32): (B, H, W, D)*/);
//
// Parameters (state-dict keys, PyTorch order): null_q_token (D)
// [use_null_q_tokens], light_attn.{norm.gamma, to_qkv.weight, to_out.weight},
// q_router.routing_token (1, D), kv_router.routing_token (num_routed_kv, D),
// heavy_attn.{null_kv, norm.gamma, to_q.weight, to_kv.weight, to_out.weight}.
//
// When no routing happens (tokens per row <= num_heavy_tokens_q) the heavy
// output is used as is (no null_q_token), like ConditionalRoutedAttention.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>

#include "layers/attention.h"
#include "layers/module.h"
#include "layers/routed_attention.h"  // RoutedAttentionCall
#include "layers/router.h"
#include "layers/self_attention.h"

namespace colt5 {

struct ConditionalRoutedImageAttentionConfig {
  int64_t dim = 0;
  int64_t num_heavy_tokens_q = 0;
  int64_t num_heavy_tokens_kv = 0;
  int64_t num_routed_kv = 1;
  int64_t light_dim_head = 64;
  int64_t light_heads = 8;
  int64_t light_window_size = 128;  // the patch side w
  int64_t heavy_dim_head = 64;
  int64_t heavy_heads = 8;          // must be divisible by num_routed_kv
  bool router_straight_through = true;
  RouterConfig router_kwargs = {};  // num_routing_tokens must stay 1; no learned tokens
  bool multiply_keys_by_score = false;
  bool multiply_queries_by_score = false;
  bool use_triton = false;          // accepted
  bool use_null_q_tokens = true;
  bool use_flash_attn = false;      // accepted
  bool channel_first = false;       // input / output (B, D, H, W) instead of (B, H, W, D)
  bool global_routing = false;      // ours: route over the whole image instead of per patch
};

class ConditionalRoutedImageAttention : public Module {
 public:
  explicit ConditionalRoutedImageAttention(const ConditionalRoutedImageAttentionConfig& config,
                                           Generator& gen = default_generator());
  // x (B, H, W, D) (or (B, D, H, W) with channel_first), H and W multiples of
  // light_window_size (throws otherwise); mask bool (B, H, W) or undefined
  // (used by the routers and as the heavy key mask) -> x's shape.
  Tensor forward(const Tensor& x, const Tensor& mask = {}, const RoutedAttentionCall& call = {}) const;
  Tensor operator()(const Tensor& x, const Tensor& mask = {}, const RoutedAttentionCall& call = {}) const {
    return forward(x, mask, call);
  }
  const ConditionalRoutedImageAttentionConfig& config() const { return cfg_; }

  Tensor null_q_token;  // (D); undefined without use_null_q_tokens
  std::shared_ptr<SelfAttention> light_attn;
  std::shared_ptr<CoordinateDescentRouter> q_router, kv_router;
  std::shared_ptr<Attention> heavy_attn;

 private:
  ConditionalRoutedImageAttentionConfig cfg_;
};

// (B, H, W, D) -> (B Hn Wn, w w, D), patch rows in (Hn, Wn) order, tokens row-major inside a patch.
Tensor image_to_patches(const Tensor& x, int64_t w);
// The inverse: (B Hn Wn, w w, D) -> (B, H, W, D).
Tensor patches_to_image(const Tensor& p, int64_t B, int64_t H, int64_t W, int64_t w);

}  // namespace colt5
