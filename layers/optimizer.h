// Training machinery: AdamW, gradient clipping by global norm, and a warmup +
// cosine learning-rate schedule. Parameters are the leaves of a Module (or any
// list of named leaf tensors); updates happen in place under no_grad.
#pragma once
#include <string>
#include <vector>

#include "engine/tensor.h"
#include "layers/module.h"

namespace colt5 {

struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9, beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.01;  // decoupled (Loshchilov & Hutter)
};

// Which parameters get weight decay: matrices (dim >= 2) except norms,
// routing tokens and null tokens/keys/values. Vectors (biases, gains) never.
bool decays(const std::string& name, const Tensor& p);

class AdamW {
 public:
  AdamW(const NamedTensors& params, AdamWOptions opt = {});
  // One update from the parameters' .grad (parameters without a gradient are skipped).
  void step();
  void zero_grad();
  void set_lr(double lr) { opt_.lr = lr; }
  double lr() const { return opt_.lr; }
  int64_t steps() const { return t_; }
  // Optimiser state for checkpoints: "exp_avg.<name>", "exp_avg_sq.<name>" and "step".
  NamedTensors state() const;
  void load_state(const NamedTensors& state);

 private:
  struct Slot {
    std::string name;
    Tensor param, m, v;
    bool decay;
  };
  std::vector<Slot> slots_;
  AdamWOptions opt_;
  int64_t t_ = 0;
};

// Scales all gradients so that their global L2 norm is at most max_norm;
// returns the norm before clipping.
double clip_grad_norm(const NamedTensors& params, double max_norm);

// Linear warmup from 0 to base_lr over warmup steps, then cosine decay to
// min_lr at total steps (constant min_lr after).
double warmup_cosine_lr(int64_t step, int64_t warmup, int64_t total, double base_lr, double min_lr = 0.0);

}  // namespace colt5
