// Tape autograd.
//
// Every differentiable op that sees an input requiring grad records a Node:
// the op's name, one Edge per input (to the input's own Node, or to the input
// itself when it is a leaf), and a backward closure holding what the op saved.
// Nodes get increasing sequence numbers as they are recorded: that is the
// tape, and it is already a topological order. backward() collects the nodes
// reachable from the output and walks them in reverse tape order. Gradients
// always accumulate (+=). A gradient whose shape differs from its input's
// (because the op broadcast the input) is summed back to the input's shape
// here, once, so backward rules never un-broadcast by hand.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace colt5 {

struct Edge {
  std::shared_ptr<Node> node;        // input produced by an op
  std::shared_ptr<TensorImpl> leaf;  // or: input is a leaf requiring grad
  Shape shape;                       // the input's shape (for un-broadcasting)
  DType dtype = DType::f32;
  bool active() const { return node || leaf; }
};

// Saved tensors are checked against in-place modification at backward time.
struct SavedVersion {
  StoragePtr storage;
  uint64_t version;
};

struct Node {
  std::string name;
  uint64_t seq = 0;
  std::vector<Edge> inputs;
  // grad of the output -> one gradient per input (undefined = none)
  std::function<std::vector<Tensor>(const Tensor&)> backward;
  std::vector<SavedVersion> saved;
  void release() {
    backward = nullptr;
    inputs.clear();
    saved.clear();
  }
};

// ---- grad mode
bool grad_enabled();
void set_grad_enabled(bool on);
struct NoGradGuard {
  bool prev;
  NoGradGuard() : prev(grad_enabled()) { set_grad_enabled(false); }
  ~NoGradGuard() { set_grad_enabled(prev); }
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;
};

// True when grad mode is on and any input requires grad.
bool needs_grad(std::initializer_list<const Tensor*> inputs);
bool needs_grad(const std::vector<Tensor>& inputs);

// Records `out` as produced by op `name` from `inputs`. `saved` lists tensors
// the closure keeps for backward (their storage versions are checked).
// Call only when needs_grad(inputs). The closure must not capture `out`
// itself (use out.detach()), which would keep the graph alive in a cycle.
void record(Tensor& out, const char* name, const std::vector<Tensor>& inputs,
            std::function<std::vector<Tensor>(const Tensor&)> backward,
            const std::vector<Tensor>& saved = {});

// Runs the backward pass from `root` with output gradient `grad`.
void run_backward(const Tensor& root, const Tensor& grad, bool retain_graph);

// Sums g over broadcast dims so that it has `shape`.
Tensor sum_to(const Tensor& g, const Shape& shape);

// Marks an in-place write to t's storage (bumps its version).
void bump_version(const Tensor& t);

// ---- gradient check
struct GradcheckOptions {
  double eps = 1e-6;
  double atol = 1e-7;
  double rtol = 1e-5;
};
struct GradcheckResult {
  bool ok = true;
  std::string message;  // on failure: which input, which element, analytic vs numeric
  double max_abs_err = 0;
};
// fn maps the inputs (f64 CPU tensors; those with requires_grad are checked)
// to one output tensor. Compares the analytic vector-Jacobian products for a
// few random output gradients with central finite differences.
GradcheckResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& fn,
                          const std::vector<Tensor>& inputs, GradcheckOptions opt = {});

}  // namespace colt5
