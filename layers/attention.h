// Heavy attention (SPEC §3.1), the package's `Attention`: full attention of
// (routed) queries over (routed) key/values, with a learned null key/value per
// head, key/value routes splitting the heads, and the router's scores
// multiplied into the values (and optionally keys / queries).
//
//   Attention heavy({.dim = 512, .dim_head = 64, .heads = 8}, gen);
//   Tensor y = heavy.forward(q_tokens /*(B, Nq, D)*/, {.context = kv_tokens /*(B, R, Nk, D)*/,
//                                                      .mask = kv_mask /*(B, R, Nk)*/,
//                                                      .scores_kv = kv_scores /*(B, R, Nk)*/});
//
// Parameters (state-dict keys, PyTorch order): null_kv (2, h, dh) standard
// normal, norm.gamma (RMSNorm), to_q.weight (h dh, D), to_kv.weight
// (2 h dh, D), to_out.weight (D, h dh); no biases.
//
// to_kv's row layout (the package's rearrange '(r h d) i'): row
// (r * hr + j) * 2 dh + c is route r, head j of that route (hr = h / R heads per
// route), channel c; c < dh is a key channel, c >= dh a value channel. Route
// r's heads see only route r's context. With R = 1 the keys and values of
// each head are interleaved in blocks of dh rows (not [all keys; all values]).
//
// Steps: x, context RMS-normalised (the same norm); q = x W_q^T split into
// heads, q *= scores_q; k, v per route as above; v *= scores_kv (and k with
// multiply_keys_by_score); rotary on q and k at the given positions; heads of
// all routes merged; one null key/value per head prepended (never masked, so
// no query row is fully masked); mask (B, Nk) broadcast over heads or
// (B, R, Nk) per route; softmax(q k^T dh^-0.5) v; heads merged; to_out.
#pragma once
#include <cstdint>
#include <memory>

#include "layers/linear.h"
#include "layers/module.h"
#include "layers/rms_norm.h"

namespace colt5 {

struct AttentionConfig {
  int64_t dim = 0;
  int64_t dim_head = 64;
  int64_t heads = 8;
  bool multiply_keys_by_score = false;
  bool use_flash = false;  // the package's flag; accepted (the fused kernel is used unless `fused` is false)
  bool fused = true;       // false: unfused attention (same math)
  bool allow_tf32 = true;  // f32 matmuls on tensor cores (GPU)
};

// Call arguments besides the queries' tokens x (B, Nq, D). Undefined = absent.
struct AttentionCall {
  Tensor context{};          // (B, Nk, D) or (B, R, Nk, D); absent: self-attention over x
  Tensor mask{};             // bool (B, Nk) or (B, R, Nk); true = keep
  Tensor scores_kv{};        // (B, Nk) or (B, R, Nk): multiplies v (and k with multiply_keys_by_score)
  Tensor scores_q{};         // (B, Nq): multiplies q
  // Rotary embedding (SPEC §3): all three or none.
  Tensor rotary_inv_freq{};  // (dh / 2)
  Tensor q_positions{};      // i64 (Nq) or (B, Nq): the queries' positions in the original sequence
  Tensor k_positions{};      // i64 (Nk), (B, Nk) or (B, R, Nk)
};

class Attention : public Module {
 public:
  // Throws on dim/dim_head/heads <= 0.
  explicit Attention(const AttentionConfig& config, Generator& gen = default_generator());

  // x (B, Nq, D) -> (B, Nq, D). Throws when heads are not divisible by the
  // context's routes, and on any shape mismatch.
  Tensor forward(const Tensor& x, const AttentionCall& call = {}) const;
  Tensor operator()(const Tensor& x, const AttentionCall& call = {}) const { return forward(x, call); }

  const AttentionConfig& config() const { return cfg_; }

  Tensor null_kv;  // (2, h, dh)
  std::shared_ptr<RMSNorm> norm;
  std::shared_ptr<Linear> to_q, to_kv, to_out;

 private:
  AttentionConfig cfg_;
};

}  // namespace colt5
