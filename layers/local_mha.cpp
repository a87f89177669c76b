#include "layers/local_mha.h"

#include "ops/local_attention.h"

namespace colt5 {

LocalMHA::LocalMHA(const LocalMHAConfig& config, Generator& gen) : cfg_(config) {
  const char* who = "LocalMHA";
  COLT5_CHECK(cfg_.dim > 0, who, ": dim must be positive, got ", cfg_.dim);
  COLT5_CHECK(cfg_.window_size > 0, who, ": window_size must be positive, got ", cfg_.window_size);
  COLT5_CHECK(cfg_.dim_head > 0 && cfg_.heads > 0, who, ": dim_head and heads must be positive, got ", cfg_.dim_head,
              " and ", cfg_.heads);
  if (!cfg_.exact_windowsize) cfg_.exact_windowsize = true;
  if (!cfg_.look_forward) cfg_.look_forward = cfg_.causal ? 0 : 1;
  COLT5_CHECK(cfg_.look_backward >= 0 && *cfg_.look_forward >= 0, who, ": look_backward and look_forward must be >= 0");
  COLT5_CHECK(!(cfg_.causal && *cfg_.look_forward > 0), who, ": a causal local attention cannot look forward");
  const int64_t inner = cfg_.dim_head * cfg_.heads;
  if (cfg_.prenorm) norm = register_module("norm", std::make_shared<LayerNorm>(cfg_.dim));
  to_qkv = register_module("to_qkv", std::make_shared<Linear>(cfg_.dim, inner * 3, false, gen));
  to_out = register_module("to_out", std::make_shared<Linear>(inner, cfg_.dim, false, gen));
}

Tensor LocalMHA::forward(const Tensor& x0, const Tensor& mask) const {
  COLT5_CHECK(x0.defined() && x0.dim() == 3 && x0.size(2) == cfg_.dim, "LocalMHA: x must be (batch, seq, ", cfg_.dim,
              "), got ", x0.defined() ? shape_str(x0.shape()) : std::string("an undefined tensor"));
  const int64_t B = x0.size(0), N = x0.size(1), h = cfg_.heads, dh = cfg_.dim_head;
  Tensor x = norm ? norm->forward(x0) : x0;
  Tensor qkv = to_qkv->forward(x).view({B, N, 3, h, dh});  // chunk(3) then (h d)
  auto head = [&](int i) { return qkv.select(2, i).permute({0, 2, 1, 3}); };  // (B, h, N, dh), last dim contiguous
  LocalAttentionOptions lo{.window = cfg_.window_size,
                           .look_backward = cfg_.look_backward,
                           .look_forward = *cfg_.look_forward,
                           .causal = cfg_.causal,
                           .exact = *cfg_.exact_windowsize,
                           .scale = 0,
                           .fused = cfg_.fused};
  Tensor out = local_attention(head(0), head(1), head(2), mask, lo);  // (B, h, N, dh)
  return to_out->forward(out.permute({0, 2, 1, 3}).reshape({B, N, h * dh}));
}

}  // namespace colt5
