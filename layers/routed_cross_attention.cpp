#include "layers/routed_cross_attention.h"

#include "layers/routed_feed_forward.h"  // layer_router_config
#include "layers/routed_heavy_branch.h"
#include "ops/elementwise.h"
#include "ops/routing.h"

namespace colt5 {

ConditionalRoutedCrossAttention::ConditionalRoutedCrossAttention(const ConditionalRoutedCrossAttentionConfig& config,
                                                                 Generator& gen)
    : cfg_(config) {
  const char* who = "ConditionalRoutedCrossAttention";
  const auto& c = cfg_;
  COLT5_CHECK(c.dim > 0, who, ": dim must be positive, got ", c.dim);
  COLT5_CHECK(c.num_tokens_q >= 1 && c.num_tokens_kv >= 1, who, ": num_tokens_q and num_tokens_kv must be >= 1, got ",
              c.num_tokens_q, " and ", c.num_tokens_kv);
  COLT5_CHECK(c.kv_routing_tokens >= 1, who, ": kv_routing_tokens must be >= 1, got ", c.kv_routing_tokens);
  COLT5_CHECK(c.heads > 0 && c.dim_head > 0, who, ": heads and dim_head must be positive");
  COLT5_CHECK(c.heads % c.kv_routing_tokens == 0, who, ": heads (", c.heads, ") must be divisible by kv_routing_tokens (",
              c.kv_routing_tokens, "): each key / value route gets its own heads");
  COLT5_CHECK(!c.router_kwargs.route_block_size, who,
              ": pass route_block_size to the layer, not in router_kwargs (the package gives it to the kv router only)");
  COLT5_CHECK(!c.route_block_size || *c.route_block_size >= 1, who, ": route_block_size must be >= 1, got ",
              c.route_block_size.value_or(0));
  RouterConfig q_rc = layer_router_config(c.router_kwargs, c.router_straight_through, 1, c.use_triton, who);
  RouterConfig kv_rc =
      layer_router_config(c.router_kwargs, c.router_straight_through, c.kv_routing_tokens, c.use_triton, who);
  kv_rc.route_block_size = c.route_block_size;

  // The package's construction order: null_q_token, q_router, kv_router, heavy_attn
  // (the checks above keep this layer's own field names).
  const RoutedHeavyBranchConfig heavy{.dim = c.dim,
                                      .num_heavy_tokens_q = c.num_tokens_q,
                                      .num_heavy_tokens_kv = c.num_tokens_kv,
                                      .num_routed_kv = c.kv_routing_tokens,
                                      .heavy_dim_head = c.dim_head,
                                      .heavy_heads = c.heads,
                                      .multiply_keys_by_score = c.multiply_keys_by_score,
                                      .use_null_q_tokens = c.use_null_q_tokens,
                                      .use_flash_attn = c.use_flash_attn};
  register_routed_heavy_branch(*this, heavy, q_rc, kv_rc, gen, null_q_token, q_router, kv_router, heavy_attn);
}

Tensor ConditionalRoutedCrossAttention::forward(const Tensor& x, const Tensor& context, const Tensor& mask,
                                                const Tensor& context_mask, const RoutedCrossAttentionCall& call) const {
  const char* who = "ConditionalRoutedCrossAttention";
  const auto& c = cfg_;
  COLT5_CHECK(x.defined() && x.dim() == 3 && x.size(2) == c.dim, who, ": x must be (batch, seq, ", c.dim, "), got ",
              x.defined() ? shape_str(x.shape()) : std::string("an undefined tensor"));
  COLT5_CHECK(context.defined() && context.dim() == 3 && context.size(0) == x.size(0) && context.size(2) == c.dim, who,
              ": context must be (", x.size(0), ", Nk, ", c.dim, "), got ",
              context.defined() ? shape_str(context.shape()) : std::string("an undefined tensor"));
  const int64_t B = x.size(0), Nq = x.size(1), Nk = context.size(1), D = c.dim;
  const int64_t ntq = call.num_tokens_q.value_or(c.num_tokens_q);
  const int64_t ntkv = call.num_tokens_kv.value_or(c.num_tokens_kv);
  if (context_mask.defined())
    COLT5_CHECK(context_mask.dtype() == DType::b8 && context_mask.shape() == Shape({B, Nk}), who,
                ": context_mask must be bool (", B, ", ", Nk, "), got ", shape_str(context_mask.shape()));

  RouterReturn rq = q_router->forward(x, ntq, mask, call.route);  // no routing when Nq <= ntq
  AttentionCall ac;
  if (Nk > ntkv) {
    RouterReturn rkv = kv_router->forward(context, ntkv, context_mask, call.route);
    ac.context = rkv.routed_tokens;
    ac.mask = rkv.routed_mask;
    ac.scores_kv = rkv.scores;
  } else {  // the whole context, as is (the package passes no scores)
    ac.context = context;
    ac.mask = context_mask;
  }
  Tensor out = heavy_attn->forward(rq.routed_tokens, ac);
  if (!rq.routed()) return out;
  Tensor base = null_q_token.defined() ? null_q_token.view({1, 1, D}).expand({B, Nq, D}) : zeros_like(x);
  return route_back_scaled(base, out, rq.indices, rq.scores);
}

}  // namespace colt5
