// CPU cross-entropy kernels (semantics in the header).
#include "kernels/cpu/loss.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "engine/error.h"
#include "engine/parallel.h"
#include "kernels/cpu/softmax.h"  // row_max_sumexp, Acc, kLineGrain

namespace colt5::kernels::cpu {
namespace {

void check_targets(const int64_t* target, int64_t rows, int64_t C, int64_t ignore_index) {
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t t = target[r];
    COLT5_CHECK(t == ignore_index || (t >= 0 && t < C), "cross_entropy: target value ", t, " (row ", r,
                ") is out of range for C = ", C, " classes (expected 0..", C - 1, " or ignore_index ", ignore_index,
                ")");
  }
}

template <class T>
void ce_forward(T* losses, T* lse, const T* x, const int64_t* target, int64_t rows, int64_t C, int64_t ignore) {
  check_targets(target, rows, C, ignore);
  const T ninf = -std::numeric_limits<T>::infinity();
  parallel_for(0, rows, std::max<int64_t>(1, kLineGrain / std::max<int64_t>(C, 1)), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const T* xr = x + r * C;
      T m;
      Acc<T> s;
      row_max_sumexp(xr, C, m, s);
      const T l = m == ninf ? ninf : static_cast<T>(static_cast<Acc<T>>(m) + std::log(s));
      lse[r] = l;
      const int64_t t = target[r];
      if (t == ignore) losses[r] = 0;
      else if (xr[t] == ninf) losses[r] = std::numeric_limits<T>::infinity();
      else losses[r] = l - xr[t];
    }
  });
}

template <class T>
void ce_backward(T* dx, const T* dl, const T* x, const T* lse, const int64_t* target, int64_t rows, int64_t C,
                 int64_t ignore) {
  const T ninf = -std::numeric_limits<T>::infinity();
  parallel_for(0, rows, std::max<int64_t>(1, kLineGrain / std::max<int64_t>(C, 1)), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      T* dr = dx + r * C;
      const T* xr = x + r * C;
      const int64_t t = target[r];
      if (t == ignore) {
        std::fill(dr, dr + C, T(0));
        continue;
      }
      const T d = dl[r], l = lse[r];
      if (l == ninf) {
        std::fill(dr, dr + C, T(0));
      } else {
        for (int64_t c = 0; c < C; ++c) dr[c] = d * vexp(xr[c] - l);
      }
      if (t >= 0 && t < C) dr[t] -= d;
    }
  });
}

}  // namespace

void cross_entropy_forward(float* losses, float* lse, const float* logits, const int64_t* target, int64_t rows,
                           int64_t C, int64_t ignore_index) {
  ce_forward(losses, lse, logits, target, rows, C, ignore_index);
}
void cross_entropy_forward(double* losses, double* lse, const double* logits, const int64_t* target, int64_t rows,
                           int64_t C, int64_t ignore_index) {
  ce_forward(losses, lse, logits, target, rows, C, ignore_index);
}
void cross_entropy_backward(float* dlogits, const float* dlosses, const float* logits, const float* lse,
                            const int64_t* target, int64_t rows, int64_t C, int64_t ignore_index) {
  ce_backward(dlogits, dlosses, logits, lse, target, rows, C, ignore_index);
}
void cross_entropy_backward(double* dlogits, const double* dlosses, const double* logits, const double* lse,
                            const int64_t* target, int64_t rows, int64_t C, int64_t ignore_index) {
  ce_backward(dlogits, dlosses, logits, lse, target, rows, C, ignore_index);
}

}  // namespace colt5::kernels::cpu
