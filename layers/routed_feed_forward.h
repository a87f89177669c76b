// ConditionalRoutedFeedForward (SPEC §4): a light feed-forward on every token
// plus a heavy feed-forward on the `num_heavy_tokens` tokens the router picks,
// its output times the router's scores scattered back (zeros elsewhere).
//
//   ConditionalRoutedFeedForward ff({.dim = 512, .num_heavy_tokens = 1024}, gen);
//   Tensor y = ff.forward(x /*(B, N, 512)*/, mask /*(B, N) or {}*/);
//
// Parameters (state-dict keys): router.routing_token, light_ff.{0.gamma,
// 1.weight, 1.bias, 3.weight, 3.bias}, heavy_ff.{same}.
// With N <= num_heavy_tokens nothing is routed: out = light_ff(x) + heavy_ff(x).
#pragma once
#include <cstdint>
#include <memory>
#include <optional>

#include "layers/feed_forward.h"
#include "layers/module.h"
#include "layers/router.h"

namespace colt5 {

struct ConditionalRoutedFeedForwardConfig {
  int64_t dim = 0;
  int64_t num_heavy_tokens = 0;
  double light_ff_mult = 0.5;
  double heavy_ff_mult = 4;
  bool router_straight_through = true;  // overrides router_kwargs.straight_through (the package passes it apart)
  RouterConfig router_kwargs = {};      // num_routing_tokens must stay 1, learned_routing_tokens false
  bool use_triton = false;              // accepted
};

struct RoutedFeedForwardCall {
  std::optional<int64_t> num_heavy_tokens{};  // default: the configured one
  RouteOptions route{};                     // random_route etc.
  Tensor* picked = nullptr;                 // when given: the routed positions, i64 (B, n) (undefined: no routing)
};

class ConditionalRoutedFeedForward : public Module {
 public:
  explicit ConditionalRoutedFeedForward(const ConditionalRoutedFeedForwardConfig& config,
                                        Generator& gen = default_generator());

  // x (B, N, D), mask bool (B, N) or undefined -> (B, N, D)
  Tensor forward(const Tensor& x, const Tensor& mask = {}, const RoutedFeedForwardCall& call = {}) const;
  Tensor operator()(const Tensor& x, const Tensor& mask = {}, const RoutedFeedForwardCall& call = {}) const {
    return forward(x, mask, call);
  }

  const ConditionalRoutedFeedForwardConfig& config() const { return cfg_; }

  std::shared_ptr<CoordinateDescentRouter> router;
  std::shared_ptr<FeedForward> light_ff, heavy_ff;

 private:
  ConditionalRoutedFeedForwardConfig cfg_;
};

// The router settings a layer's router gets: router_kwargs with the layer's
// straight-through flag and number of routes; throws (naming `who`) on kwargs
// a layer cannot honour (num_routing_tokens != 1: use the layer's own option;
// learned_routing_tokens: the layers pass no routing tokens).
RouterConfig layer_router_config(const RouterConfig& kwargs, bool straight_through, int64_t num_routing_tokens,
                                 bool use_triton, const char* who);

}  // namespace colt5
