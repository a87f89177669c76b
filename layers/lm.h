// CoLT5 causal language model for `colt5 train`: token embedding, `depth`
// blocks of (ConditionalRoutedAutoregressiveAttention + ConditionalRoutedFeedForward,
// each residual), final RMSNorm and a linear output head.
//
//   ColT5LM lm({.vocab_size = 81, .dim = 64, .depth = 2}, gen);
//   Tensor logits = lm.forward(tokens /*i64 (B, N)*/);  // (B, N, vocab)
//
// Parameters (state-dict keys): token_emb.weight (V, D), layers.{i}.attn.*
// (ConditionalRoutedAutoregressiveAttention's keys: light_attn.*, null_q_token,
// q_router.routing_token, kv_router.routing_token, heavy_attn.*,
// rotary_emb.inv_freq with rotary), layers.{i}.ff.* (ConditionalRoutedFeedForward's
// keys: router.routing_token, light_ff.*, heavy_ff.*), norm.gamma,
// to_logits.weight (V, D).
//
// Attention (SPEC §4): causal local light attention (LocalMHA, window
// light_window_size, looking one window back) plus, for every window i >= 1 of
// heavy_window_size tokens, heavy attention of num_heavy_tokens_q queries
// routed in the window over num_heavy_tokens_kv key/values routed from
// windows 0 .. i-1 (window 0 gets no heavy output).
//
// light_only: the blocks keep only the light branches (the same causal
// LocalMHA and the light feed-forward): the control that cannot see further
// back than light_reach() tokens.
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

#include "layers/linear.h"
#include "layers/module.h"
#include "layers/rms_norm.h"
#include "layers/router.h"

namespace colt5 {

struct ColT5LMConfig {
  int64_t vocab_size = 0;
  int64_t dim = 64;
  int64_t depth = 2;
  int64_t light_heads = 4, light_dim_head = 16;
  int64_t heavy_heads = 8, heavy_dim_head = 16;  // heavy_heads divisible by num_routed_kv
  int64_t light_window_size = 64;   // causal: each token sees its window and the previous one
  int64_t heavy_window_size = 64;   // the windows whose queries are routed
  int64_t num_heavy_tokens_q = 8;   // per window
  int64_t num_heavy_tokens_kv = 8;  // per window and key/value route, from all earlier windows
  int64_t num_routed_kv = 4;        // key/value routes (each with its own routing token and heavy heads)
  int64_t num_heavy_ff_tokens = 32; // per sequence
  double light_ff_mult = 0.5, heavy_ff_mult = 4.0;
  double router_eps = 0.03;         // coordinate-descent eps (router_kwargs.eps)
  int router_iters = 20;
  bool rotary = false;              // rotary positions in the heavy attention
  bool light_only = false;
};

// How far back the light branches alone carry information: a causal LocalMHA
// token sees its own window and the previous one, so one layer reaches back to
// the start of the previous window and each further layer one more window:
// no output depends on a token more than light_reach(c) positions earlier (the
// last position of a window depends on the one exactly that far back).
inline int64_t light_reach(const ColT5LMConfig& c) { return (c.depth + 1) * c.light_window_size - 1; }

// Where the routers looked, for one forward (filled when LMCall::trace is set).
struct LayerTrace {
  Tensor q_indices;   // i64 (B, nw - 1, nq): query positions picked in each window >= 1 (global positions)
  Tensor kv_indices;  // i64 (B, nw - 1, R * nkv): key/value positions picked for each window >= 1 (all routes)
  Tensor ff_indices;  // i64 (B, n_ff): tokens the heavy feed-forward picked
};

struct LMCall {
  RouteOptions route{};                      // random_route + its generator
  std::vector<LayerTrace>* trace = nullptr;  // per layer, when given
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
