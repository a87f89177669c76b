#include "layers/routed_heavy_branch.h"

namespace colt5 {

void check_routed_heavy_branch_config(const RoutedHeavyBranchConfig& c, const char* who) {
  COLT5_CHECK(c.dim > 0, who, ": dim must be positive, got ", c.dim);
  COLT5_CHECK(c.num_heavy_tokens_q >= 1 && c.num_heavy_tokens_kv >= 1, who,
              ": num_heavy_tokens_q and num_heavy_tokens_kv must be >= 1, got ", c.num_heavy_tokens_q, " and ",
              c.num_heavy_tokens_kv);
  COLT5_CHECK(c.num_routed_kv >= 1, who, ": num_routed_kv must be >= 1, got ", c.num_routed_kv);
  COLT5_CHECK(c.heavy_heads > 0 && c.heavy_dim_head > 0, who, ": heavy_heads and heavy_dim_head must be positive");
  COLT5_CHECK(c.heavy_heads % c.num_routed_kv == 0, who, ": heavy_heads (", c.heavy_heads,
              ") must be divisible by num_routed_kv (", c.num_routed_kv, "): each key / value route gets its own heads");
}

void register_routed_heavy_branch(Module& layer, const RoutedHeavyBranchConfig& c, const RouterConfig& q_rc,
                                  const RouterConfig& kv_rc, Generator& gen, Tensor& null_q_token,
                                  std::shared_ptr<CoordinateDescentRouter>& q_router,
                                  std::shared_ptr<CoordinateDescentRouter>& kv_router,
                                  std::shared_ptr<Attention>& heavy_attn) {
  if (c.use_null_q_tokens) {
    layer.register_parameter("null_q_token", null_q_token, empty({c.dim}));
    init_normal(null_q_token, gen);
  }
  q_router = layer.register_module("q_router", std::make_shared<CoordinateDescentRouter>(c.dim, q_rc, gen));
  kv_router = layer.register_module("kv_router", std::make_shared<CoordinateDescentRouter>(c.dim, kv_rc, gen));
  const AttentionConfig heavy_cfg{.dim = c.dim,
                                   .dim_head = c.heavy_dim_head,
                                   .heads = c.heavy_heads,
                                   .multiply_keys_by_score = c.multiply_keys_by_score,
                                   .use_flash = c.use_flash_attn};
  heavy_attn = layer.register_module("heavy_attn", std::make_shared<Attention>(heavy_cfg, gen));
}

}  // namespace colt5
