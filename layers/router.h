// CoordinateDescentRouter (SPEC §2): picks `num_tokens` tokens per route with a
// soft top-k (coordinate descent, SPEC §1) over the scores <x, routing_token>,
// then a hard top-k; returns the indices, their normalised scores, the routed
// tokens and their mask.
//
//   CoordinateDescentRouter router(512, {.num_routing_tokens = 2}, gen);
//   RouterReturn r = router.forward(x /*(B, N, D)*/, 64, mask /*(B, N) or {}*/);
//   // r.indices (B, 2, 64) i64, r.scores (B, 2, 64), r.routed_tokens (B, 2, 64, D), r.routed_mask (B, 2, 64)
//
// Shapes. "Route dim" = num_routing_tokens > 1 or keep_one_route_dim; with it
// indices/scores/routed_mask are (B, R, n) and routed_tokens (B, R, n, D),
// without it (B, n) and (B, n, D).
//
// Deviations from the package (all bug fixes or determinism, SPEC §2):
// - routed_tokens / routed_mask are gathered per (batch, route) from the
//   original x / mask; the package gathers from a batch-repeated copy, which
//   mixes batches when B > 1 and R > 1, and fails in the block path.
// - block routing (route_block_size) returns global indices into x and gathers
//   from x with them; learned routing tokens are repeated per block.
// - hard top-k ties go to the lower index (deterministic on every device).
// - straight-through scores are computed as (s - stop_grad(s)) + 1: exactly
//   1 in value (the package's s + stop_grad(1 - s) can be 1 +- 1 ulp), same
//   gradient.
// - random_route works without a mask (the package needs one) and draws from
//   the Generator in RouteOptions (default_generator() when none).
// - the coordinate descent is skipped under random_route (its result is
//   discarded there anyway).
#pragma once
#include <cstdint>
#include <optional>

#include "layers/module.h"

namespace colt5 {

// The package's constructor keyword arguments (router_kwargs), same names and
// defaults. `use_triton` / `triton_checkpoint_segments` are accepted and mean
// nothing more than "use the fused coordinate-descent kernel" (always used).
struct RouterConfig {
  int n_iters = 20;
  double fetch_k_ratio = 9.0 / 8.0;  // >= 1
  double eps = 0.03;
  double eps_decay = 0.7;            // in (0, 1]
  std::optional<double> eps_init = 4.0;  // nullopt: the package's None (start at eps)
  int64_t num_routing_tokens = 1;
  bool learned_routing_tokens = false;   // no routing_token parameter; tokens passed to the call
  bool cosine_sim_routing = false;
  double cosine_sim_scale = 8.0;
  std::optional<int64_t> route_block_size{};  // nullopt: the package's None
  bool straight_through = true;
  bool use_triton = false;
  std::optional<int> triton_checkpoint_segments{};
};

// Call arguments besides x, num_tokens and mask.
struct RouteOptions {
  bool random_route = false;      // negative control: standard normal scores instead of coordinate descent
  Tensor routing_tokens{};          // (B, D) or (B, R, D); required iff learned_routing_tokens
  bool keep_one_route_dim = false;
  Generator* generator = nullptr;  // for random_route; default_generator() when null
};

struct RouterReturn {
  Tensor indices{};        // i64 (B, [R,] n); undefined when no routing happened
  Tensor scores{};         // (B, [R,] n), x's dtype
  Tensor routed_tokens{};  // (B, [R,] n, D)
  Tensor routed_mask{};    // bool (B, [R,] n); undefined without a mask
  bool routed() const { return indices.defined(); }
};

class CoordinateDescentRouter : public Module {
 public:
  // Throws on an invalid configuration (dim <= 0, fetch_k_ratio < 1, n_iters < 1,
  // eps <= 0, eps_decay outside (0, 1], num_routing_tokens < 1, route_block_size < 1, ...).
  explicit CoordinateDescentRouter(int64_t dim, const RouterConfig& config = {}, Generator& gen = default_generator());

  // x (B, N, D); num_tokens >= 1; mask bool (B, N) or undefined.
  // N <= num_tokens: no routing (indices undefined, scores ones, routed_tokens = x
  // (expanded over routes with the route dim), routed_mask = mask (likewise)).
  RouterReturn forward(const Tensor& x, int64_t num_tokens, const Tensor& mask = {},
                       const RouteOptions& opt = {}) const;
  RouterReturn operator()(const Tensor& x, int64_t num_tokens, const Tensor& mask = {},
                          const RouteOptions& opt = {}) const {
    return forward(x, num_tokens, mask, opt);
  }

  const RouterConfig& config() const { return cfg_; }
  int64_t dim() const { return dim_; }
  int64_t num_routing_tokens() const { return cfg_.num_routing_tokens; }

  Tensor routing_token;  // (R, D), standard normal; undefined with learned_routing_tokens

 private:
  int64_t dim_;
  RouterConfig cfg_;
};

// Checks a RouterConfig (throws with a message naming `who`); shared by the layers.
void check_router_config(const RouterConfig& cfg, const char* who);

}  // namespace colt5
