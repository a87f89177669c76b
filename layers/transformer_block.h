// ConditionalRoutedTransformerBlock (SPEC §4):
//   x = conditional_attn(x, mask) + x
//   x = conditional_ff(x, mask) + x
//
//   ConditionalRoutedTransformerBlock block({.dim = 512, .num_heavy_attn_tokens_q = 32,
//                                            .num_heavy_attn_tokens_kv = 1024, .num_heavy_ff_tokens = 1024}, gen);
//   Tensor y = block.forward(x /*(B, N, 512)*/, mask);
//
// State-dict keys: conditional_ff.* (ConditionalRoutedFeedForward) then
// conditional_attn.* (ConditionalRoutedAttention), the package's construction
// order. has_light_attn and rotary_emb are passed to the attention (package
// defaults: true, false).
#pragma once
#include <cstdint>
#include <memory>
#include <optional>

#include "layers/module.h"
#include "layers/routed_attention.h"
#include "layers/routed_feed_forward.h"

namespace colt5 {

struct ConditionalRoutedTransformerBlockConfig {
  int64_t dim = 0;
  int64_t num_heavy_attn_tokens_q = 0;
  int64_t num_heavy_attn_tokens_kv = 0;
  int64_t num_routed_kv = 1;
  int64_t num_heavy_ff_tokens = 0;
  int64_t light_dim_head = 64;
  int64_t light_heads = 8;
  int64_t light_window_size = 128;
  int64_t heavy_dim_head = 64;
  int64_t heavy_heads = 8;
  double light_ff_mult = 0.5;
  double heavy_ff_mult = 4;
  bool router_straight_through = true;
  RouterConfig router_kwargs = {};
  bool multiply_keys_by_score = false;
  bool multiply_queries_by_score = false;
  bool use_triton = false;
  bool use_null_q_tokens = true;
  bool use_flash_attn = false;
  bool has_light_attn = true;
  bool rotary_emb = false;
};

struct TransformerBlockCall {
  std::optional<int64_t> num_heavy_attn_tokens_q{}, num_heavy_attn_tokens_kv{}, num_heavy_ff_tokens{};
  RouteOptions route{};  // random_route etc. (every router)
};

class ConditionalRoutedTransformerBlock : public Module {
 public:
  explicit ConditionalRoutedTransformerBlock(const ConditionalRoutedTransformerBlockConfig& config,
                                             Generator& gen = default_generator());

  // x (B, N, D), mask bool (B, N) or undefined -> (B, N, D)
  Tensor forward(const Tensor& x, const Tensor& mask = {}, const TransformerBlockCall& call = {}) const;
  Tensor operator()(const Tensor& x, const Tensor& mask = {}, const TransformerBlockCall& call = {}) const {
    return forward(x, mask, call);
  }

  const ConditionalRoutedTransformerBlockConfig& config() const { return cfg_; }

  std::shared_ptr<ConditionalRoutedFeedForward> conditional_ff;
  std::shared_ptr<ConditionalRoutedAttention> conditional_attn;

 private:
  ConditionalRoutedTransformerBlockConfig cfg_;
};

}  // namespace colt5
