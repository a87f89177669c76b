#include "engine/checkpoint.h"

#include "engine/autograd.h"
#include "engine/error.h"

namespace colt5 {

namespace {
struct GradModeRestore {
  bool prev;
  explicit GradModeRestore(bool on) : prev(grad_enabled()) { set_grad_enabled(on); }
  ~GradModeRestore() { set_grad_enabled(prev); }
};
}  // namespace

Tensor checkpoint(const CheckpointFn& fn, const std::vector<Tensor>& inputs) {
  COLT5_CHECK(static_cast<bool>(fn), "checkpoint: no function given");
  if (!needs_grad(inputs)) return fn(inputs);
  Tensor out;
  {
    NoGradGuard ng;
    out = fn(inputs);
  }
  COLT5_CHECK(out.defined(), "checkpoint: the function returned an undefined tensor");
  std::vector<Tensor> kept;
  std::vector<bool> wants;
  kept.reserve(inputs.size());
  for (const Tensor& t : inputs) {
    kept.push_back(t.defined() ? t.detach() : Tensor());
    wants.push_back(t.defined() && t.requires_grad());
  }
  record(
      out, "checkpoint", inputs,
      [fn, kept, wants](const Tensor& g) {
        GradModeRestore on(true);
        std::vector<Tensor> leaves(kept.size());
        for (size_t i = 0; i < kept.size(); ++i) {
          if (!kept[i].defined()) continue;
          leaves[i] = wants[i] ? kept[i].detach().requires_grad_() : kept[i];
        }
        Tensor y = fn(leaves);
        COLT5_CHECK(y.defined() && y.shape() == g.shape(), "checkpoint: the recomputation returned shape ",
                    y.defined() ? shape_str(y.shape()) : std::string("(undefined)"), ", the forward gave ",
                    shape_str(g.shape()), " (the function must compute the same thing twice)");
        if (y.requires_grad()) y.backward(g);
        std::vector<Tensor> grads(kept.size());
        for (size_t i = 0; i < kept.size(); ++i)
          if (wants[i]) grads[i] = leaves[i].grad();
        return grads;
      },
      inputs);
  return out;
}

}  // namespace colt5
