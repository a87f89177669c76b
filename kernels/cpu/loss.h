// Cross-entropy over the last dim of contiguous rows: pointer-level CPU
// kernels (no tensors, no autograd), with the log-softmax fused in. The
// readable reference for kernels/cuda/loss.h.
//
// Shapes: logits, dlogits (rows, C) contiguous; target (rows) int64;
// losses, dlosses, lse (rows).
//
// Semantics, for row r with t = target[r]:
//   lse[r]    = log sum_c exp(logits[r, c])        (saved for the backward;
//               -inf for a row that is entirely -inf)
//   losses[r] = lse[r] - logits[r, t]               (-log softmax(logits)[t])
//             = 0    when t == ignore_index
//             = +inf when logits[r, t] == -inf      (a masked target; never NaN)
//   A target that is neither ignore_index nor in [0, C) throws colt5::Error
//   naming cross_entropy, the value, its row and C (checked before any work).
//   The reduction (mean over non-ignored rows, sum) is the caller's.
//
// Backward (written, never accumulated into):
//   dlogits[r, c] = dlosses[r] * (exp(logits[r, c] - lse[r]) - [c == t]),
//   0 on ignored rows; a row with lse = -inf has softmax 0 there.
//
// One online pass per row for max and sum (kernels/cpu/softmax.h), sums of
// f32 in f64; rows spread over the thread pool, each row by one thread.
#pragma once
#include <cstdint>

namespace colt5::kernels::cpu {

void cross_entropy_forward(float* losses, float* lse, const float* logits, const int64_t* target, int64_t rows,
                           int64_t C, int64_t ignore_index);
void cross_entropy_forward(double* losses, double* lse, const double* logits, const int64_t* target, int64_t rows,
                           int64_t C, int64_t ignore_index);
void cross_entropy_backward(float* dlogits, const float* dlosses, const float* logits, const float* lse,
                            const int64_t* target, int64_t rows, int64_t C, int64_t ignore_index);
void cross_entropy_backward(double* dlogits, const double* dlosses, const double* logits, const double* lse,
                            const int64_t* target, int64_t rows, int64_t C, int64_t ignore_index);

}  // namespace colt5::kernels::cpu
