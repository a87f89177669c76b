#include "layers/routed_attention.h"

#include "layers/routed_feed_forward.h"  // layer_router_config
#include "layers/routed_heavy_branch.h"
#include "ops/elementwise.h"
#include "ops/routing.h"
#include "ops/rotary.h"

namespace colt5 {

RotaryEmbedding::RotaryEmbedding(int64_t dim, double theta) : dim_(dim) {
  COLT5_CHECK(dim > 0 && dim % 2 == 0, "RotaryEmbedding: dim must be positive and even, got ", dim);
  COLT5_CHECK(theta == 10000.0, "RotaryEmbedding: only theta = 10000 is supported (the package's default), got ",
              theta);
  register_buffer("inv_freq", inv_freq, rotary_inv_freq(dim));
}

ConditionalRoutedAttention::ConditionalRoutedAttention(const ConditionalRoutedAttentionConfig& config, Generator& gen)
    : cfg_(config) {
  const char* who = "ConditionalRoutedAttention";
  const auto& c = cfg_;
  const RoutedHeavyBranchConfig heavy = routed_heavy_branch_config(c);
  check_routed_heavy_branch_config(heavy, who);
  if (c.has_light_attn) {
    COLT5_CHECK(c.light_heads > 0 && c.light_dim_head > 0, who, ": light_heads and light_dim_head must be positive");
    COLT5_CHECK(c.light_window_size >= 2, who, ": light_window_size must be >= 2 (the local window is ",
                "light_window_size / 2), got ", c.light_window_size);
  }
  COLT5_CHECK(!c.rotary_emb || c.heavy_dim_head % 2 == 0, who,
              ": rotary_emb needs an even heavy_dim_head, got ", c.heavy_dim_head);
  RouterConfig q_rc = layer_router_config(c.router_kwargs, c.router_straight_through, 1, c.use_triton, who);
  RouterConfig kv_rc =
      layer_router_config(c.router_kwargs, c.router_straight_through, c.num_routed_kv, c.use_triton, who);

  // The package's construction order: light_attn, null_q_token, q_router, kv_router, heavy_attn, rotary_emb.
  if (c.has_light_attn) {
    light_attn = register_module("light_attn", std::make_shared<LocalMHA>(
                                                   LocalMHAConfig{.dim = c.dim,
                                                                  .window_size = c.light_window_size / 2,
                                                                  .dim_head = c.light_dim_head,
                                                                  .heads = c.light_heads,
                                                                  .causal = false,
                                                                  .prenorm = true,
                                                                  .exact_windowsize = true,
                                                                  .look_backward = 1,
                                                                  .look_forward = 1},
                                                   gen));
  }
  register_routed_heavy_branch(*this, heavy, q_rc, kv_rc, gen, null_q_token, q_router, kv_router, heavy_attn);
  if (c.rotary_emb) rotary_emb = register_module("rotary_emb", std::make_shared<RotaryEmbedding>(c.heavy_dim_head));
}

Tensor ConditionalRoutedAttention::forward(const Tensor& x, const Tensor& mask, const RoutedAttentionCall& call) const {
  const auto& c = cfg_;
  COLT5_CHECK(x.defined() && x.dim() == 3 && x.size(2) == c.dim, "ConditionalRoutedAttention: x must be (batch, seq, ",
              c.dim, "), got ", x.defined() ? shape_str(x.shape()) : std::string("an undefined tensor"));
  const int64_t B = x.size(0), N = x.size(1), D = c.dim;
  const int64_t ntq = call.num_heavy_tokens_q.value_or(c.num_heavy_tokens_q);
  const int64_t ntkv = call.num_heavy_tokens_kv.value_or(c.num_heavy_tokens_kv);

  // light local attention sees every token in a limited window
  Tensor light = light_attn ? light_attn->forward(x, mask) : Tensor();

  // route queries (one route) and key/values (num_routed_kv routes)
  RouterReturn rq = q_router->forward(x, ntq, mask, call.route);
  RouterReturn rkv = kv_router->forward(x, ntkv, mask, call.route);
  if (call.picks) *call.picks = {rq.indices, rkv.indices};

  // heavy attention of the routed queries over the routed key/values
  AttentionCall ac;
  ac.context = rkv.routed_tokens;
  ac.mask = rkv.routed_mask;
  ac.scores_kv = rkv.scores;
  if (c.multiply_queries_by_score) ac.scores_q = rq.scores;
  if (rotary_emb) {
    Tensor all = arange(N, {.dtype = DType::i64, .device = x.device()});
    ac.rotary_inv_freq = rotary_emb->inv_freq;
    ac.q_positions = rq.routed() ? rq.indices : all;
    ac.k_positions = rkv.routed() ? rkv.indices : all;
  }
  Tensor routed_out = heavy_attn->forward(rq.routed_tokens, ac);  // (B, nq, D)

  // times the query scores, scattered into null_q_token (or zeros) at the routed positions
  Tensor heavy;
  if (rq.routed()) {
    Tensor base = null_q_token.defined() ? null_q_token.view({1, 1, D}).expand({B, N, D}) : zeros_like(x);
    heavy = route_back_scaled(base, routed_out, rq.indices, rq.scores);
  } else {
    heavy = routed_out;  // scores are ones
  }
  return light.defined() ? light + heavy : heavy;
}

}  // namespace colt5
