// The heavy branch that the routed attention layers (ConditionalRoutedAttention,
// ConditionalRoutedAutoregressiveAttention, ConditionalRoutedImageAttention;
// ConditionalRoutedCrossAttention uses the registration only, its checks name
// its own fields) set up alike: the checks of its sizes and the registration, in the package's
// order, of null_q_token [use_null_q_tokens], q_router, kv_router and
// heavy_attn. Each layer registers its own light_attn before and its own
// extras (rotary_emb) after, so the state-dict keys keep the package's order.
//
//   const RoutedHeavyBranchConfig heavy = routed_heavy_branch_config(cfg_);
//   check_routed_heavy_branch_config(heavy, who);
//   ... the layer's own checks, q_rc / kv_rc, light_attn ...
//   register_routed_heavy_branch(*this, heavy, q_rc, kv_rc, gen, null_q_token, q_router, kv_router, heavy_attn);
#pragma once
#include <cstdint>
#include <memory>

#include "layers/attention.h"
#include "layers/module.h"
#include "layers/router.h"

namespace colt5 {

// The fields of a routed attention layer's config that its heavy branch is built from.
struct RoutedHeavyBranchConfig {
  int64_t dim = 0;
  int64_t num_heavy_tokens_q = 0;
  int64_t num_heavy_tokens_kv = 0;
  int64_t num_routed_kv = 1;
  int64_t heavy_dim_head = 64;
  int64_t heavy_heads = 8;
  bool multiply_keys_by_score = false;
  bool use_null_q_tokens = true;
  bool use_flash_attn = false;
};

// Those fields, read by name from any layer config that has them.
template <class LayerConfig>
RoutedHeavyBranchConfig routed_heavy_branch_config(const LayerConfig& c) {
  return {.dim = c.dim,
          .num_heavy_tokens_q = c.num_heavy_tokens_q,
          .num_heavy_tokens_kv = c.num_heavy_tokens_kv,
          .num_routed_kv = c.num_routed_kv,
          .heavy_dim_head = c.heavy_dim_head,
          .heavy_heads = c.heavy_heads,
          .multiply_keys_by_score = c.multiply_keys_by_score,
          .use_null_q_tokens = c.use_null_q_tokens,
          .use_flash_attn = c.use_flash_attn};
}

// Throws a colt5::Error starting with `who` (the layer's name) unless dim > 0,
// both numbers of heavy tokens >= 1, num_routed_kv >= 1, heavy_heads and
// heavy_dim_head > 0, and heavy_heads divisible by num_routed_kv.
void check_routed_heavy_branch_config(const RoutedHeavyBranchConfig& c, const char* who);

// Registers on `layer`, in this order: null_q_token (dim), normal init, when
// c.use_null_q_tokens; q_router (q_rc); kv_router (kv_rc); heavy_attn. The
// members are the layer's slots (register_parameter keeps a pointer to
// null_q_token).
void register_routed_heavy_branch(Module& layer, const RoutedHeavyBranchConfig& c, const RouterConfig& q_rc,
                                  const RouterConfig& kv_rc, Generator& gen, Tensor& null_q_token,
                                  std::shared_ptr<CoordinateDescentRouter>& q_router,
                                  std::shared_ptr<CoordinateDescentRouter>& kv_router,
                                  std::shared_ptr<Attention>& heavy_attn);

}  // namespace colt5
