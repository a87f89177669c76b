#include "layers/transformer_block.h"

#include "ops/elementwise.h"

namespace colt5 {

ConditionalRoutedTransformerBlock::ConditionalRoutedTransformerBlock(
    const ConditionalRoutedTransformerBlockConfig& config, Generator& gen)
    : cfg_(config) {
  const auto& c = cfg_;
  conditional_ff = register_module(
      "conditional_ff", std::make_shared<ConditionalRoutedFeedForward>(
                            ConditionalRoutedFeedForwardConfig{.dim = c.dim,
                                                               .num_heavy_tokens = c.num_heavy_ff_tokens,
                                                               .light_ff_mult = c.light_ff_mult,
                                                               .heavy_ff_mult = c.heavy_ff_mult,
                                                               .router_straight_through = c.router_straight_through,
                                                               .router_kwargs = c.router_kwargs,
                                                               .use_triton = c.use_triton},
                            gen));
  conditional_attn = register_module(
      "conditional_attn",
      std::make_shared<ConditionalRoutedAttention>(
          ConditionalRoutedAttentionConfig{.dim = c.dim,
                                           .num_heavy_tokens_q = c.num_heavy_attn_tokens_q,
                                           .num_heavy_tokens_kv = c.num_heavy_attn_tokens_kv,
                                           .num_routed_kv = c.num_routed_kv,
                                           .has_light_attn = c.has_light_attn,
                                           .light_dim_head = c.light_dim_head,
                                           .light_heads = c.light_heads,
                                           .light_window_size = c.light_window_size,
                                           .heavy_dim_head = c.heavy_dim_head,
                                           .heavy_heads = c.heavy_heads,
                                           .router_straight_through = c.router_straight_through,
                                           .router_kwargs = c.router_kwargs,
                                           .multiply_keys_by_score = c.multiply_keys_by_score,
                                           .multiply_queries_by_score = c.multiply_queries_by_score,
                                           .use_triton = c.use_triton,
                                           .use_null_q_tokens = c.use_null_q_tokens,
                                           .use_flash_attn = c.use_flash_attn,
                                           .rotary_emb = c.rotary_emb},
          gen));
}

Tensor ConditionalRoutedTransformerBlock::forward(const Tensor& x, const Tensor& mask,
                                                  const TransformerBlockCall& call) const {
  Tensor h = conditional_attn->forward(x, mask,
                                       {.num_heavy_tokens_q = call.num_heavy_attn_tokens_q,
                                        .num_heavy_tokens_kv = call.num_heavy_attn_tokens_kv,
                                        .route = call.route}) +
             x;
  return conditional_ff->forward(h, mask, {.num_heavy_tokens = call.num_heavy_ff_tokens, .route = call.route}) + h;
}

}  // namespace colt5
