// FeedForward(dim, mult) as SPEC §3 (the package's nn.Sequential):
//   RMSNorm -> Linear(dim, int(dim * mult), bias) -> GELU (exact) -> Linear(., dim, bias)
// The children are named by their position in that Sequential, so the
// state-dict keys are exactly the package's: 0.gamma, 1.weight, 1.bias,
// 3.weight, 3.bias (the GELU at position 2 has no parameters).
#pragma once
#include <memory>

#include "layers/linear.h"
#include "layers/module.h"
#include "layers/rms_norm.h"

namespace colt5 {

class FeedForward : public Module {
 public:
  // mult > 0 with int(dim * mult) >= 1 (Python's int(): truncation).
  FeedForward(int64_t dim, double mult = 4.0, Generator& gen = default_generator());

  // x (..., dim) -> (..., dim)
  Tensor forward(const Tensor& x) const;
  Tensor operator()(const Tensor& x) const { return forward(x); }

  int64_t dim() const { return dim_; }
  int64_t hidden_dim() const { return hidden_; }

  std::shared_ptr<RMSNorm> norm;      // "0"
  std::shared_ptr<Linear> proj_in;    // "1": (hidden, dim) + bias
  std::shared_ptr<Linear> proj_out;   // "3": (dim, hidden) + bias

 private:
  int64_t dim_, hidden_;
};

}  // namespace colt5
