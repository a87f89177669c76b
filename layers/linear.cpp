#include "layers/linear.h"

#include "ops/matmul.h"

namespace colt5 {

Linear::Linear(int64_t in_features, int64_t out_features, bool has_bias, Generator& gen)
    : in_(in_features), out_(out_features) {
  COLT5_CHECK(in_features > 0 && out_features > 0, "Linear: sizes must be positive, got in ", in_features, ", out ",
              out_features);
  register_parameter("weight", weight, empty({out_features, in_features}));
  if (has_bias) register_parameter("bias", bias, empty({out_features}));
  init_linear_uniform(weight, bias, gen);
}

Tensor Linear::forward(const Tensor& x) const {
  COLT5_CHECK(x.dim() >= 1 && x.size(-1) == in_, "Linear: input's last dim must be ", in_, ", got shape ",
              shape_str(x.shape()));
  return linear(x, weight, bias);
}

}  // namespace colt5
