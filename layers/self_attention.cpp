#include "layers/self_attention.h"

#include "ops/attention.h"

namespace colt5 {

SelfAttention::SelfAttention(const SelfAttentionConfig& config, Generator& gen) : cfg_(config) {
  const char* who = "SelfAttention";
  COLT5_CHECK(cfg_.dim > 0, who, ": dim must be positive, got ", cfg_.dim);
  COLT5_CHECK(cfg_.dim_head > 0 && cfg_.heads > 0, who, ": dim_head and heads must be positive, got ", cfg_.dim_head,
              " and ", cfg_.heads);
  const int64_t inner = cfg_.dim_head * cfg_.heads;
  if (cfg_.prenorm) norm = register_module("norm", std::make_shared<RMSNorm>(cfg_.dim));
  to_qkv = register_module("to_qkv", std::make_shared<Linear>(cfg_.dim, inner * 3, false, gen));
  to_out = register_module("to_out", std::make_shared<Linear>(inner, cfg_.dim, false, gen));
}

Tensor SelfAttention::forward(const Tensor& x0) const {
  COLT5_CHECK(x0.defined() && x0.dim() == 3 && x0.size(2) == cfg_.dim, "SelfAttention: x must be (batch, seq, ",
              cfg_.dim, "), got ", x0.defined() ? shape_str(x0.shape()) : std::string("an undefined tensor"));
  const int64_t B = x0.size(0), N = x0.size(1), h = cfg_.heads, dh = cfg_.dim_head;
  Tensor x = norm ? norm->forward(x0) : x0;
  Tensor qkv = to_qkv->forward(x).view({B, N, 3, h, dh});
  auto head = [&](int i) { return qkv.select(2, i).permute({0, 2, 1, 3}); };  // (B, h, N, dh)
  AttentionOptions ao;
  ao.allow_tf32 = cfg_.allow_tf32;
  ao.fused = cfg_.fused;
  Tensor out = attention(head(0), head(1), head(2), Tensor(), ao);
  return to_out->forward(out.permute({0, 2, 1, 3}).reshape({B, N, h * dh}));
}

}  // namespace colt5
