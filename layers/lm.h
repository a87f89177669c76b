// CoLT5 causal language model for `colt5 train`: token embedding, `depth`
// blocks of (causal routed attention + routed feed-forward, each residual),
// final RMSNorm and a linear output head.
//
//   ColT5LM lm({.vocab_size = 81, .dim = 64, .depth = 2}, gen);
//   Tensor logits = lm.forward(tokens /*i64 (B, N)*/);  // (B, N, vocab)
//
// Parameters (state-dict keys): token_emb.weight (V, D), layers.{i}.attn.*,
// layers.{i}.ff.*, norm.gamma, to_logits.weight (V, D).
//
// Attention: CausalRoutedAttention below, SPEC §4's
// ConditionalRoutedAutoregressiveAttention: causal local light attention plus,
// for every window i >= 1 of heavy_window tokens, heavy attention of
// num_heavy_tokens_q queries routed within the window over num_heavy_tokens_kv
// key/values routed from windows 0 .. i-1 (window 0 gets no heavy output). The
// heavy outputs times the query scores are scattered into null_q_token.
//
// light_only: the blocks keep only the light branches (causal LocalMHA and the
// light feed-forward): the control that cannot see past its local window.
// random_route (a call option): the routers draw random scores (SPEC §2.5),
// the package's negative control.
//
// The routed feed-forward routes over the whole sequence like the package's
// (its choice of tokens depends on later tokens' router scores; each token's
// own output does not use later tokens' values).
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "layers/feed_forward.h"
#include "layers/linear.h"
#include "layers/local_mha.h"
#include "layers/module.h"
#include "layers/rms_norm.h"
#include "layers/routed_attention.h"
#include "layers/routed_feed_forward.h"
#include "layers/router.h"

namespace colt5 {

struct ColT5LMConfig {
  int64_t vocab_size = 0;
  int64_t dim = 64;
  int64_t depth = 2;
  int64_t light_heads = 4, light_dim_head = 16;
  int64_t heavy_heads = 4, heavy_dim_head = 16;
  int64_t light_window_size = 64;   // causal: each token sees this many previous tokens (and itself)
  int64_t heavy_window_size = 64;   // the windows whose queries are routed
  int64_t num_heavy_tokens_q = 8;   // per window
  int64_t num_heavy_tokens_kv = 16; // from all previous windows
  int64_t num_heavy_ff_tokens = 32; // per sequence
  double light_ff_mult = 0.5, heavy_ff_mult = 4.0;
  double router_eps = 0.03;         // coordinate-descent eps (router_kwargs.eps)
  int router_iters = 20;
  bool light_only = false;
};

// Where the routers looked, for one forward (filled when LMCall::trace is set).
struct LayerTrace {
  Tensor q_indices;   // i64 (B, nw - 1, nq): query positions picked in each window >= 1 (global positions)
  Tensor kv_indices;  // i64 (B, nw - 1, nkv): key/value positions picked for each window >= 1
  Tensor ff_indices;  // i64 (B, n_ff): tokens the heavy feed-forward picked
};

struct LMCall {
  RouteOptions route{};                    // random_route + its generator
  std::vector<LayerTrace>* trace = nullptr;  // per layer, when given
};

struct CausalRoutedAttentionConfig {
  int64_t dim = 0;
  int64_t num_heavy_tokens_q = 8, num_heavy_tokens_kv = 16;
  int64_t light_dim_head = 64, light_heads = 8, light_window_size = 128;
  int64_t heavy_window_size = 128;
  int64_t heavy_dim_head = 64, heavy_heads = 8;
  RouterConfig router_kwargs = {};
  bool use_null_q_tokens = true;
};

// SPEC §4 ConditionalRoutedAutoregressiveAttention (see the top of this file).
// Params: light_attn.* (LocalMHA, causal), null_q_token (D), q_router.*, kv_router.*, heavy_attn.*.
class CausalRoutedAttention : public Module {
 public:
  explicit CausalRoutedAttention(const CausalRoutedAttentionConfig& config, Generator& gen = default_generator());
  // x (B, N, D) -> (B, N, D)
  Tensor forward(const Tensor& x, const RouteOptions& route = {}, LayerTrace* trace = nullptr) const;
  const CausalRoutedAttentionConfig& config() const { return cfg_; }

  std::shared_ptr<LocalMHA> light_attn;
  Tensor null_q_token;  // (D)
  std::shared_ptr<CoordinateDescentRouter> q_router, kv_router;
  std::shared_ptr<Attention> heavy_attn;

 private:
  CausalRoutedAttentionConfig cfg_;
};

class ColT5LM : public Module {
 public:
  explicit ColT5LM(const ColT5LMConfig& config, Generator& gen = default_generator());
  // tokens i64 (B, N) on the model's device -> logits (B, N, vocab)
  Tensor forward(const Tensor& tokens, const LMCall& call = {}) const;
  const ColT5LMConfig& config() const { return cfg_; }

  std::shared_ptr<ModuleList> layers;
  std::shared_ptr<RMSNorm> norm;
  std::shared_ptr<Linear> to_logits;

 private:
  ColT5LMConfig cfg_;
};

}  // namespace colt5
