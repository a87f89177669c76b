#include "layers/rms_norm.h"

#include "ops/norm.h"

namespace colt5 {

RMSNorm::RMSNorm(int64_t dim) : dim_(dim) {
  COLT5_CHECK(dim > 0, "RMSNorm: dim must be positive, got ", dim);
  register_parameter("gamma", gamma, ones({dim}));
}

Tensor RMSNorm::forward(const Tensor& x) const {
  COLT5_CHECK(x.dim() >= 1 && x.size(-1) == dim_, "RMSNorm: input's last dim must be ", dim_, ", got shape ",
              shape_str(x.shape()));
  return rms_norm(x, gamma, 1e-12);
}

}  // namespace colt5
