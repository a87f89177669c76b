// Activation checkpointing: trade recomputation for memory.
//
//   Tensor y = checkpoint([&](const std::vector<Tensor>& in) { return f(in[0], in[1]); }, {a, b});
//
// The forward runs `fn` with recording off, so none of the tensors it makes
// internally are kept for the backward: only `inputs` (and y) are. The
// backward runs `fn` again on detached copies of the inputs with recording on,
// back-propagates the incoming gradient through that recomputation, and hands
// the inputs' gradients to the outer graph. Peak memory of a chain of
// checkpointed pieces is one piece's intermediates instead of all of them.
//
// Contract for `fn`: it must compute the same thing both times (no random
// draws, no dependence on mutable state) and read only its `inputs` and leaf
// tensors (parameters: their gradients accumulate directly during the
// recomputation's backward). A non-leaf tensor captured from the outer graph
// would be back-propagated through twice; pass it as an input instead.
#pragma once
#include <functional>
#include <vector>

#include "engine/tensor.h"

namespace colt5 {

using CheckpointFn = std::function<Tensor(const std::vector<Tensor>&)>;

Tensor checkpoint(const CheckpointFn& fn, const std::vector<Tensor>& inputs);

}  // namespace colt5
