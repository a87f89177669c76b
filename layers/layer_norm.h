// LayerNorm(dim) as SPEC §3 (PyTorch's nn.LayerNorm(dim)): eps 1e-5,
// parameters weight (dim, ones) and bias (dim, zeros). Used as the prenorm of
// LocalMHA (keys norm.weight, norm.bias).
#pragma once
#include "layers/module.h"

namespace colt5 {

class LayerNorm : public Module {
 public:
  explicit LayerNorm(int64_t dim, double eps = 1e-5);

  // x (..., dim) -> same shape
  Tensor forward(const Tensor& x) const;
  Tensor operator()(const Tensor& x) const { return forward(x); }

  int64_t dim() const { return dim_; }

  Tensor weight;  // (dim)
  Tensor bias;    // (dim)

 private:
  int64_t dim_;
  double eps_;
};

}  // namespace colt5
