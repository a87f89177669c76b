// ConditionalRoutedCrossAttention (SPEC §4, the working version): queries x
// routed when Nq > num_tokens_q, the context routed when Nk > num_tokens_kv
// (with kv_routing_tokens routes, each owning heavy_heads / kv_routing_tokens
// heads; optionally in blocks of route_block_size with global indices,
// gathered from the original context), heavy attention of the routed queries
// over the routed context; when the queries were routed the output times
// their scores is scattered into null_q_token, otherwise the heavy output is
// returned as is.
//
//   ConditionalRoutedCrossAttention xattn({.dim = 512, .num_tokens_q = 512, .num_tokens_kv = 1024,
//                                          .kv_routing_tokens = 2, .route_block_size = 131072}, gen);
//   Tensor y = xattn.forward(x /*(1, 1024, 512)*/, memories /*(1, 1048576, 512)*/, x_mask, memories_mask);
//
// Parameters (state-dict keys, PyTorch order): null_q_token (D)
// [use_null_q_tokens], q_router.routing_token (1, D), kv_router.routing_token
// (kv_routing_tokens, D), heavy_attn.{null_kv, norm.gamma, to_q.weight,
// to_kv.weight, to_out.weight}.
//
// Package bug fixed (SPEC §4): its forward refers to an undefined name and
// always fails; this is the behaviour its README describes.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>

#include "layers/attention.h"
#include "layers/module.h"
#include "layers/router.h"

namespace colt5 {

struct ConditionalRoutedCrossAttentionConfig {
  int64_t dim = 0;
  int64_t num_tokens_q = 0;
  int64_t num_tokens_kv = 0;
  int64_t num_sets_kv = 1;          // accepted (unused by the package too)
  int64_t dim_head = 64;
  int64_t heads = 8;                // must be divisible by kv_routing_tokens
  bool router_straight_through = true;
  RouterConfig router_kwargs = {};  // num_routing_tokens must stay 1; no learned tokens
  int64_t kv_routing_tokens = 1;
  bool multiply_keys_by_score = false;
  bool use_triton = false;          // accepted
  bool use_null_q_tokens = true;
  bool use_flash_attn = false;      // accepted
  std::optional<int64_t> route_block_size{};  // the kv router's blocks (router_kwargs.route_block_size must be unset)
};

struct RoutedCrossAttentionCall {
  std::optional<int64_t> num_tokens_q{};   // default: the configured ones
  std::optional<int64_t> num_tokens_kv{};
  RouteOptions route{};                    // random_route etc. (both routers)
};

class ConditionalRoutedCrossAttention : public Module {
 public:
  explicit ConditionalRoutedCrossAttention(const ConditionalRoutedCrossAttentionConfig& config,
                                           Generator& gen = default_generator());
  // x (B, Nq, D), context (B, Nk, D), mask bool (B, Nq) or undefined (used to
  // route the queries), context_mask bool (B, Nk) or undefined -> (B, Nq, D)
  Tensor forward(const Tensor& x, const Tensor& context, const Tensor& mask = {}, const Tensor& context_mask = {},
                 const RoutedCrossAttentionCall& call = {}) const;
  Tensor operator()(const Tensor& x, const Tensor& context, const Tensor& mask = {}, const Tensor& context_mask = {},
                    const RoutedCrossAttentionCall& call = {}) const {
    return forward(x, context, mask, context_mask, call);
  }
  const ConditionalRoutedCrossAttentionConfig& config() const { return cfg_; }

  Tensor null_q_token;  // (D); undefined without use_null_q_tokens
  std::shared_ptr<CoordinateDescentRouter> q_router, kv_router;
  std::shared_ptr<Attention> heavy_attn;

 private:
  ConditionalRoutedCrossAttentionConfig cfg_;
};

}  // namespace colt5
