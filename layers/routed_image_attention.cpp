#include "layers/routed_image_attention.h"

#include "layers/routed_feed_forward.h"  // layer_router_config
#include "layers/routed_heavy_branch.h"
#include "ops/elementwise.h"
#include "ops/routing.h"

namespace colt5 {

Tensor image_to_patches(const Tensor& x, int64_t w) {
  const int64_t B = x.size(0), H = x.size(1), W = x.size(2), D = x.size(3), hn = H / w, wn = W / w;
  return x.reshape({B, hn, w, wn, w, D}).permute({0, 1, 3, 2, 4, 5}).reshape({B * hn * wn, w * w, D});
}

Tensor patches_to_image(const Tensor& p, int64_t B, int64_t H, int64_t W, int64_t w) {
  const int64_t D = p.size(-1), hn = H / w, wn = W / w;
  return p.reshape({B, hn, wn, w, w, D}).permute({0, 1, 3, 2, 4, 5}).reshape({B, H, W, D});
}

ConditionalRoutedImageAttention::ConditionalRoutedImageAttention(const ConditionalRoutedImageAttentionConfig& config,
                                                                 Generator& gen)
    : cfg_(config) {
  const char* who = "ConditionalRoutedImageAttention";
  const auto& c = cfg_;
  const RoutedHeavyBranchConfig heavy = routed_heavy_branch_config(c);
  check_routed_heavy_branch_config(heavy, who);
  COLT5_CHECK(c.light_heads > 0 && c.light_dim_head > 0, who, ": light_heads and light_dim_head must be positive");
  COLT5_CHECK(c.light_window_size >= 1, who, ": light_window_size (the patch side) must be >= 1, got ",
              c.light_window_size);
  RouterConfig q_rc = layer_router_config(c.router_kwargs, c.router_straight_through, 1, c.use_triton, who);
  RouterConfig kv_rc =
      layer_router_config(c.router_kwargs, c.router_straight_through, c.num_routed_kv, c.use_triton, who);

  // The package's construction order: light_attn, null_q_token, q_router, kv_router, heavy_attn.
  light_attn = register_module("light_attn", std::make_shared<SelfAttention>(
                                                 SelfAttentionConfig{.dim = c.dim,
                                                                     .dim_head = c.light_dim_head,
                                                                     .heads = c.light_heads,
                                                                     .prenorm = true},
                                                 gen));
  register_routed_heavy_branch(*this, heavy, q_rc, kv_rc, gen, null_q_token, q_router, kv_router, heavy_attn);
}

Tensor ConditionalRoutedImageAttention::forward(const Tensor& x0, const Tensor& mask0,
                                                const RoutedAttentionCall& call) const {
  const char* who = "ConditionalRoutedImageAttention";
  const auto& c = cfg_;
  COLT5_CHECK(x0.defined() && x0.dim() == 4, who, ": x must be (batch, height, width, ", c.dim, ")",
              c.channel_first ? " or, with channel_first, (batch, dim, height, width)" : "", ", got ",
              x0.defined() ? shape_str(x0.shape()) : std::string("an undefined tensor"));
  Tensor x = c.channel_first ? x0.permute({0, 2, 3, 1}) : x0;  // (B, H, W, D)
  COLT5_CHECK(x.size(3) == c.dim, who, ": the feature dim of x is ", x.size(3), ", the layer was built for ", c.dim,
              c.channel_first ? " (channel_first: x is (batch, dim, height, width))" : "");
  const int64_t B = x.size(0), H = x.size(1), W = x.size(2), D = c.dim, w = c.light_window_size;
  COLT5_CHECK(H % w == 0 && W % w == 0, who, ": height and width (", H, ", ", W,
              ") must be multiples of light_window_size (", w, ")");
  if (mask0.defined())
    COLT5_CHECK(mask0.dtype() == DType::b8 && mask0.shape() == Shape({B, H, W}), who, ": mask must be bool (", B, ", ",
                H, ", ", W, "), got ", shape_str(mask0.shape()));
  const int64_t ntq = call.num_heavy_tokens_q.value_or(c.num_heavy_tokens_q);
  const int64_t ntkv = call.num_heavy_tokens_kv.value_or(c.num_heavy_tokens_kv);

  // light branch: full self-attention inside each w x w patch
  Tensor patches = image_to_patches(x, w);  // (B Hn Wn, w w, D)
  Tensor light = patches_to_image(light_attn->forward(patches), B, H, W, w);

  // heavy branch rows: the patches (the package) or the whole image (global_routing)
  Tensor rows = c.global_routing ? x.reshape({B, H * W, D}) : patches;
  Tensor mask;
  if (mask0.defined())
    mask = c.global_routing ? mask0.reshape({B, H * W})
                            : image_to_patches(mask0.unsqueeze(-1), w).squeeze(-1);
  RouterReturn rq = q_router->forward(rows, ntq, mask, call.route);
  RouterReturn rkv = kv_router->forward(rows, ntkv, mask, call.route);
  AttentionCall ac;
  ac.context = rkv.routed_tokens;
  ac.mask = rkv.routed_mask;
  ac.scores_kv = rkv.scores;
  if (c.multiply_queries_by_score) ac.scores_q = rq.scores;
  Tensor out = heavy_attn->forward(rq.routed_tokens, ac);
  Tensor heavy;
  if (rq.routed()) {
    Tensor base = null_q_token.defined() ? null_q_token.view({1, 1, D}).expand(rows.shape()) : zeros_like(rows);
    heavy = route_back_scaled(base, out, rq.indices, rq.scores);
  } else {
    heavy = out;
  }
  heavy = c.global_routing ? heavy.reshape({B, H, W, D}) : patches_to_image(heavy, B, H, W, w);
  Tensor y = light + heavy;
  return c.channel_first ? y.permute({0, 3, 1, 2}).contiguous() : y;
}

}  // namespace colt5
