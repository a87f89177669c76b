// ConditionalRoutedAutoregressiveAttention (SPEC §4): causal light local
// attention plus a heavy branch in windows of W = heavy_window_size. With the
// sequence padded to nw windows, the queries of window i >= 1 are routed within
// their window, their key/values are routed from all tokens of windows
// 0..i-1, heavy attention runs on the routed tokens, its output times the
// query scores is scattered into null_q_token; window 0 gets zeros; the result
// is cropped to N.
//
//   ConditionalRoutedAutoregressiveAttention attn({.dim = 512, .num_heavy_tokens_q = 32,
//                                                  .num_heavy_tokens_kv = 1024, .num_routed_kv = 2,
//                                                  .light_window_size = 128}, gen);
//   Tensor y = attn.forward(x /*(B, N, 512)*/);
//
// Parameters and buffers (state-dict keys, PyTorch order): light_attn.{norm.weight,
// norm.bias, to_qkv.weight, to_out.weight}, null_q_token (D) [use_null_q_tokens],
// q_router.routing_token (1, D), kv_router.routing_token (num_routed_kv, D),
// heavy_attn.{null_kv, norm.gamma, to_q.weight, to_kv.weight, to_out.weight},
// rotary_emb.inv_freq (heavy_dim_head / 2) [rotary_emb].
//
// No per-window copies (the package repeats the whole sequence per window:
// O(N^2 D / W) memory). The router scores <x, routing_token> are the same for
// every window, so they are computed once ((B, R, N_pad)); the per-window
// coordinate-descent rows are a broadcast of them with a prefix mask
// ((B, nw-1, R, N_pad) scalars, no D); the heavy branch normalises and
// projects every token once (keys / values of all heads, (B, N_pad, h dh)
// each) and gathers the routed keys / values straight from those
// projections with the global indices, one route and one chunk of windows at
// a time; each chunk is checkpointed (engine/checkpoint.h), so its gathered
// keys/values are rebuilt in the backward instead of kept. Memory is
// O(N D + nw * num_heavy_tokens_kv * R) plus one chunk (heavy_chunk_bytes).
// The heavy branch computes exactly what heavy_attn.forward computes on the
// routed tokens (SPEC §3.1), with rotary positions the tokens' global positions.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>

#include "layers/attention.h"
#include "layers/local_mha.h"
#include "layers/module.h"
#include "layers/routed_attention.h"  // RotaryEmbedding, RoutedAttentionCall
#include "layers/router.h"

namespace colt5 {

struct ConditionalRoutedAutoregressiveAttentionConfig {
  int64_t dim = 0;
  int64_t num_heavy_tokens_q = 0;   // per window
  int64_t num_heavy_tokens_kv = 0;  // per window, from its past
  int64_t num_routed_kv = 1;
  int64_t light_dim_head = 64;
  int64_t light_heads = 8;
  int64_t light_window_size = 128;  // causal local window (look one window back)
  std::optional<int64_t> heavy_window_size{};  // default: light_window_size
  int64_t heavy_dim_head = 64;
  int64_t heavy_heads = 8;          // must be divisible by num_routed_kv
  bool router_straight_through = true;
  RouterConfig router_kwargs = {};  // num_routing_tokens must stay 1; no learned tokens, no route_block_size
  bool multiply_keys_by_score = false;
  bool multiply_queries_by_score = false;
  bool use_triton = false;          // accepted
  bool use_null_q_tokens = true;
  bool use_flash_attn = false;      // accepted
  bool rotary_emb = false;
  // Ours (not a package argument): the heavy branch runs the windows in chunks
  // whose gathered keys + values take about this many bytes per route, each
  // chunk checkpointed (recomputed in the backward), so no more than one
  // chunk's gathered tokens exist at a time. Results do not depend on it.
  int64_t heavy_chunk_bytes = int64_t(64) << 20;
};

// The light branch's LocalMHA settings: causal local attention in windows of
// light_window_size, each token seeing its own and the previous window (not exact).
LocalMHAConfig autoregressive_light_attn_config(const ConditionalRoutedAutoregressiveAttentionConfig& c);

class ConditionalRoutedAutoregressiveAttention : public Module {
 public:
  // Throws on an invalid configuration (heavy_heads not divisible by num_routed_kv,
  // window sizes < 1, sizes <= 0, router_kwargs with route_block_size, ...).
  explicit ConditionalRoutedAutoregressiveAttention(const ConditionalRoutedAutoregressiveAttentionConfig& config,
                                                    Generator& gen = default_generator());
  // x (B, N, D) -> (B, N, D). call.route.random_route replaces both routers'
  // coordinate descent by noise (negative control).
  Tensor forward(const Tensor& x, const RoutedAttentionCall& call = {}) const;
  Tensor operator()(const Tensor& x, const RoutedAttentionCall& call = {}) const { return forward(x, call); }

  const ConditionalRoutedAutoregressiveAttentionConfig& config() const { return cfg_; }
  int64_t heavy_window_size() const { return cfg_.heavy_window_size.value_or(cfg_.light_window_size); }

  std::shared_ptr<LocalMHA> light_attn;
  Tensor null_q_token;  // (D); undefined without use_null_q_tokens
  std::shared_ptr<CoordinateDescentRouter> q_router, kv_router;
  std::shared_ptr<Attention> heavy_attn;
  std::shared_ptr<RotaryEmbedding> rotary_emb;  // null without rotary_emb

 private:
  ConditionalRoutedAutoregressiveAttentionConfig cfg_;
};

// ---- routing from precomputed scores (the router's steps 3-7 split in two)

// The router's raw scores <x[b, n], routing_token[r]> (cosine-sim variant
// included): x (B, N, D) -> (B, R, N). Needs the router's own routing_token.
Tensor router_token_scores(const CoordinateDescentRouter& router, const Tensor& x);

struct ScoreRouting {
  Tensor indices;  // i64 (..., num_tokens), sorted by score descending, ties to the lower index
  Tensor scores;   // (..., num_tokens): straight-through 1 (0 where masked) or the soft scores
};
// CoordinateDescentRouter steps 4-7 on precomputed scores s (..., n) (any
// strides, e.g. a broadcast of one score row over windows): coordinate descent
// with k = min(num_tokens * fetch_k_ratio, n) (or noise with random_route),
// hard top-k, straight-through. mask bool broadcastable to s, or undefined.
// Requires num_tokens <= n. zero_masked_scores = false leaves the
// straight-through "0 where the picked token is masked" to the caller (who
// may know it without gathering the broadcast mask).
ScoreRouting route_from_scores(const Tensor& s, int64_t num_tokens, const Tensor& mask, const RouterConfig& cfg,
                               const RouteOptions& opt = {}, bool zero_masked_scores = true);

}  // namespace colt5
