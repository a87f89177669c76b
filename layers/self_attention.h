// SelfAttention (SPEC §3.3), the light branch of the image attention: full,
// non-causal self-attention without a mask, optional RMSNorm prenorm.
//
//   SelfAttention attn({.dim = 256, .dim_head = 32, .heads = 4, .prenorm = true}, gen);
//   Tensor y = attn.forward(x /*(B, N, 256)*/);
//
// Parameters (state-dict keys): norm.gamma (only with prenorm), to_qkv.weight
// (3 h dh, D), to_out.weight (D, h dh); q, k, v are the three thirds of
// to_qkv's output, each split into heads as (h dh).
#pragma once
#include <cstdint>
#include <memory>

#include "layers/linear.h"
#include "layers/module.h"
#include "layers/rms_norm.h"

namespace colt5 {

struct SelfAttentionConfig {
  int64_t dim = 0;
  int64_t dim_head = 64;
  int64_t heads = 8;
  bool use_flash = false;  // the package's flag; accepted (the fused kernel is used unless `fused` is false)
  bool prenorm = false;
  bool fused = true;
  bool allow_tf32 = true;
};

class SelfAttention : public Module {
 public:
  explicit SelfAttention(const SelfAttentionConfig& config, Generator& gen = default_generator());

  // x (B, N, D) -> (B, N, D)
  Tensor forward(const Tensor& x) const;
  Tensor operator()(const Tensor& x) const { return forward(x); }

  const SelfAttentionConfig& config() const { return cfg_; }

  std::shared_ptr<RMSNorm> norm;  // null without prenorm
  std::shared_ptr<Linear> to_qkv, to_out;

 private:
  SelfAttentionConfig cfg_;
};

}  // namespace colt5
