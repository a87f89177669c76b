#include "layers/routed_feed_forward.h"

#include "ops/elementwise.h"
#include "ops/routing.h"

namespace colt5 {

RouterConfig layer_router_config(const RouterConfig& kwargs, bool straight_through, int64_t num_routing_tokens,
                                 bool use_triton, const char* who) {
  COLT5_CHECK(kwargs.num_routing_tokens == 1, who,
              ": router_kwargs.num_routing_tokens must be left at 1 (the number of key / value routes is the layer's "
              "num_routed_kv / kv_routing_tokens), got ",
              kwargs.num_routing_tokens);
  COLT5_CHECK(!kwargs.learned_routing_tokens, who,
              ": router_kwargs.learned_routing_tokens is not supported by the layers (they pass no routing tokens)");
  RouterConfig c = kwargs;
  c.straight_through = straight_through;
  c.num_routing_tokens = num_routing_tokens;
  c.use_triton = c.use_triton || use_triton;
  check_router_config(c, who);
  return c;
}

ConditionalRoutedFeedForward::ConditionalRoutedFeedForward(const ConditionalRoutedFeedForwardConfig& config,
                                                           Generator& gen)
    : cfg_(config) {
  const char* who = "ConditionalRoutedFeedForward";
  COLT5_CHECK(cfg_.dim > 0, who, ": dim must be positive, got ", cfg_.dim);
  COLT5_CHECK(cfg_.num_heavy_tokens >= 1, who, ": num_heavy_tokens must be >= 1, got ", cfg_.num_heavy_tokens);
  RouterConfig rc = layer_router_config(cfg_.router_kwargs, cfg_.router_straight_through, 1, cfg_.use_triton, who);
  router = register_module("router", std::make_shared<CoordinateDescentRouter>(cfg_.dim, rc, gen));
  light_ff = register_module("light_ff", std::make_shared<FeedForward>(cfg_.dim, cfg_.light_ff_mult, gen));
  heavy_ff = register_module("heavy_ff", std::make_shared<FeedForward>(cfg_.dim, cfg_.heavy_ff_mult, gen));
}

Tensor ConditionalRoutedFeedForward::forward(const Tensor& x, const Tensor& mask,
                                             const RoutedFeedForwardCall& call) const {
  COLT5_CHECK(x.defined() && x.dim() == 3 && x.size(2) == cfg_.dim, "ConditionalRoutedFeedForward: x must be (batch, seq, ",
              cfg_.dim, "), got ", x.defined() ? shape_str(x.shape()) : std::string("an undefined tensor"));
  const int64_t nt = call.num_heavy_tokens.value_or(cfg_.num_heavy_tokens);
  Tensor light = light_ff->forward(x);
  RouterReturn r = router->forward(x, nt, mask, call.route);
  if (call.picked) *call.picked = r.indices;
  Tensor heavy = heavy_ff->forward(r.routed_tokens);  // (B, n, D)
  if (!r.routed()) return light + heavy;              // scores are ones
  // zeros with heavy * scores written at the routed positions
  return light + route_back_scaled(zeros_like(x), heavy, r.indices, r.scores);
}

}  // namespace colt5
