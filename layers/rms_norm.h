// RMSNorm(dim) as SPEC §3 (the colt5-attention package):
//   x / max(||x||_2, 1e-12) * sqrt(dim) * gamma      over the last dim.
// Parameter: gamma (dim), init ones.
#pragma once
#include "layers/module.h"

namespace colt5 {

class RMSNorm : public Module {
 public:
  explicit RMSNorm(int64_t dim);

  // x (..., dim) -> same shape
  Tensor forward(const Tensor& x) const;
  Tensor operator()(const Tensor& x) const { return forward(x); }

  int64_t dim() const { return dim_; }

  Tensor gamma;  // (dim)

 private:
  int64_t dim_;
};

}  // namespace colt5
