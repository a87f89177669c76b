#include "layers/layer_norm.h"

#include "ops/norm.h"

namespace colt5 {

LayerNorm::LayerNorm(int64_t dim, double eps) : dim_(dim), eps_(eps) {
  COLT5_CHECK(dim > 0, "LayerNorm: dim must be positive, got ", dim);
  COLT5_CHECK(eps > 0, "LayerNorm: eps must be positive, got ", eps);
  register_parameter("weight", weight, ones({dim}));
  register_parameter("bias", bias, zeros({dim}));
}

Tensor LayerNorm::forward(const Tensor& x) const {
  COLT5_CHECK(x.defined() && x.dim() >= 1 && x.size(-1) == dim_, "LayerNorm: input's last dim must be ", dim_,
              ", got shape ", x.defined() ? shape_str(x.shape()) : std::string("(undefined)"));
  return layer_norm(x, weight, bias, eps_);
}

}  // namespace colt5
