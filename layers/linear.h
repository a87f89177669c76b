// Linear(in, out, bias): y = x W^T + b (SPEC §3), PyTorch's nn.Linear.
// Parameters: weight (out, in), bias (out) when `bias`; both uniform in ±1/sqrt(in).
#pragma once
#include "layers/module.h"

namespace colt5 {

class Linear : public Module {
 public:
  Linear(int64_t in_features, int64_t out_features, bool bias = true, Generator& gen = default_generator());

  // x (..., in) -> (..., out)
  Tensor forward(const Tensor& x) const;
  Tensor operator()(const Tensor& x) const { return forward(x); }

  int64_t in_features() const { return in_; }
  int64_t out_features() const { return out_; }

  Tensor weight;  // (out, in)
  Tensor bias;    // (out) or undefined

 private:
  int64_t in_, out_;
};

}  // namespace colt5
