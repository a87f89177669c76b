// LocalMHA (SPEC §3.2), the light branch of ConditionalRoutedAttention: the
// `local-attention` package's LocalMHA with prenorm, without rotary
// embeddings (CoLT5 passes use_rotary_pos_emb = False).
//
//   LocalMHA attn({.dim = 512, .window_size = 64, .dim_head = 64, .heads = 8, .prenorm = true,
//                  .look_backward = 1, .look_forward = 1}, gen);
//   Tensor y = attn.forward(x /*(B, N, 512)*/, mask /*(B, N) or {}*/);
//
// Parameters (state-dict keys): norm.weight, norm.bias (LayerNorm, only with
// prenorm), to_qkv.weight (3 h dh, D), to_out.weight (D, h dh); q, k, v are
// the three thirds of to_qkv's output, each split into heads as (h dh).
// The sequence need not be a multiple of the window: the op never attends to
// positions past N (the package attends to its zero padding when no mask is
// given; SPEC §3.2 fix). A query with no visible key outputs zeros.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>

#include "layers/layer_norm.h"
#include "layers/linear.h"
#include "layers/module.h"

namespace colt5 {

struct LocalMHAConfig {
  int64_t dim = 0;
  int64_t window_size = 0;
  int64_t dim_head = 64;
  int64_t heads = 8;
  bool causal = false;
  bool prenorm = false;
  std::optional<bool> exact_windowsize{};  // the package's default: true
  int look_backward = 1;
  std::optional<int> look_forward{};       // the package's default: 0 if causal else 1
  bool fused = true;                     // fused kernel; false: the primitive-op reference (same math)
};

class LocalMHA : public Module {
 public:
  // Throws on dim/window/heads/dim_head <= 0, look_* < 0, causal with look_forward > 0.
  explicit LocalMHA(const LocalMHAConfig& config, Generator& gen = default_generator());

  // x (B, N, D), mask bool (B, N) or undefined -> (B, N, D)
  Tensor forward(const Tensor& x, const Tensor& mask = {}) const;
  Tensor operator()(const Tensor& x, const Tensor& mask = {}) const { return forward(x, mask); }

  const LocalMHAConfig& config() const { return cfg_; }

  std::shared_ptr<LayerNorm> norm;  // null without prenorm
  std::shared_ptr<Linear> to_qkv, to_out;

 private:
  LocalMHAConfig cfg_;
};

}  // namespace colt5
