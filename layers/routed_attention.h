// ConditionalRoutedAttention (SPEC §4): light local attention over every
// token plus heavy attention of the routed queries over the routed
// key/values; the heavy output times the query scores is scattered into a base
// that holds the learned null_q_token at every unrouted position.
//
//   ConditionalRoutedAttention attn({.dim = 512, .num_heavy_tokens_q = 32, .num_heavy_tokens_kv = 1024,
//                                    .num_routed_kv = 2, .light_window_size = 128}, gen);
//   Tensor y = attn.forward(x /*(B, N, 512)*/, mask /*(B, N) or {}*/);
//
// Parameters and buffers (state-dict keys, PyTorch order): null_q_token (D)
// [use_null_q_tokens], light_attn.{norm.weight, norm.bias, to_qkv.weight,
// to_out.weight} [has_light_attn], q_router.routing_token (1, D),
// kv_router.routing_token (num_routed_kv, D), heavy_attn.{null_kv,
// norm.gamma, to_q.weight, to_kv.weight, to_out.weight},
// rotary_emb.inv_freq (heavy_dim_head / 2) [rotary_emb].
//
// The light branch is LocalMHA, non-causal, window light_window_size / 2
// (floor), looking one window back and forward, exact window (SPEC §3.2).
// With rotary_emb the heavy queries and keys are rotated at the original
// positions of the routed tokens (0..N-1 when not routed).
// When the queries are not routed (N <= num_heavy_tokens_q) the heavy output is
// used as is (no null_q_token), like the package.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>

#include "layers/attention.h"
#include "layers/local_mha.h"
#include "layers/module.h"
#include "layers/router.h"

namespace colt5 {

// RotaryEmbedding(dim, theta = 10000): buffer inv_freq[i] = 1 / theta^(2i / dim), i < dim / 2
// (persistent, like the package's). dim must be even.
class RotaryEmbedding : public Module {
 public:
  explicit RotaryEmbedding(int64_t dim, double theta = 10000.0);
  int64_t dim() const { return dim_; }
  Tensor inv_freq;  // (dim / 2)

 private:
  int64_t dim_;
};

struct ConditionalRoutedAttentionConfig {
  int64_t dim = 0;
  int64_t num_heavy_tokens_q = 0;
  int64_t num_heavy_tokens_kv = 0;
  int64_t num_routed_kv = 1;
  bool has_light_attn = true;
  int64_t light_dim_head = 64;
  int64_t light_heads = 8;
  int64_t light_window_size = 128;  // the local window is light_window_size / 2 each way
  int64_t heavy_dim_head = 64;
  int64_t heavy_heads = 8;          // must be divisible by num_routed_kv
  bool router_straight_through = true;
  RouterConfig router_kwargs = {};  // num_routing_tokens must stay 1, learned_routing_tokens false
  bool multiply_keys_by_score = false;
  bool multiply_queries_by_score = false;
  bool use_triton = false;          // accepted
  bool use_null_q_tokens = true;
  bool use_flash_attn = false;      // accepted (fused kernels are used)
  bool rotary_emb = false;
};

// The positions the routers picked in one forward (i64, no gradient);
// undefined where that router did not route (fewer tokens than it keeps).
struct RoutedPicks {
  // ConditionalRoutedAttention: (B, n_q). ConditionalRoutedAutoregressiveAttention:
  // (B, nw - 1, n_q), global positions picked in each window >= 1.
  Tensor q_indices;
  // ConditionalRoutedAttention: (B, [R,] n_kv) as its router returns them.
  // ConditionalRoutedAutoregressiveAttention:
  // (B, nw - 1, R * n_kv), the key/value positions each window >= 1 routed (all routes).
  Tensor kv_indices;
};

struct RoutedAttentionCall {
  std::optional<int64_t> num_heavy_tokens_q{};   // default: the configured ones
  std::optional<int64_t> num_heavy_tokens_kv{};
  RouteOptions route{};                        // random_route etc. (both routers)
  RoutedPicks* picks = nullptr;                // when given, filled with what the routers picked
};

class ConditionalRoutedAttention : public Module {
 public:
  // Throws on an invalid configuration (heavy_heads not divisible by
  // num_routed_kv, light_window_size < 2, sizes <= 0, bad router_kwargs, ...).
  explicit ConditionalRoutedAttention(const ConditionalRoutedAttentionConfig& config,
                                      Generator& gen = default_generator());

  // x (B, N, D), mask bool (B, N) or undefined -> (B, N, D)
  Tensor forward(const Tensor& x, const Tensor& mask = {}, const RoutedAttentionCall& call = {}) const;
  Tensor operator()(const Tensor& x, const Tensor& mask = {}, const RoutedAttentionCall& call = {}) const {
    return forward(x, mask, call);
  }

  const ConditionalRoutedAttentionConfig& config() const { return cfg_; }

  Tensor null_q_token;                            // (D); undefined without use_null_q_tokens
  std::shared_ptr<LocalMHA> light_attn;         // null without has_light_attn
  std::shared_ptr<CoordinateDescentRouter> q_router, kv_router;
  std::shared_ptr<Attention> heavy_attn;
  std::shared_ptr<RotaryEmbedding> rotary_emb;  // null without rotary_emb

 private:
  ConditionalRoutedAttentionConfig cfg_;
};

}  // namespace colt5
