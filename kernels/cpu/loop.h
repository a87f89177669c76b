// The CPU elementwise loop: walks a Geometry in parallel chunks and calls
// inner(offsets[N], count, inner_strides[N]) for runs along the innermost dim.
// When every inner stride is 1 the body is a plain contiguous loop the
// compiler vectorises.
#pragma once
#include <algorithm>

#include "engine/parallel.h"
#include "engine/strided.h"

namespace colt5::kernels::cpu {

constexpr int64_t kElementwiseGrain = 32768;

template <int N, class F>
void strided_loop(const Geometry<N>& g, F&& inner) {
  if (g.numel == 0) return;
  if (g.ndim == 0) {
    int64_t off[N] = {};
    int64_t st[N] = {};
    inner(off, int64_t{1}, st);
    return;
  }
  const int nd = g.ndim;
  const int64_t last = g.shape[nd - 1];
  int64_t ist[N];
  for (int k = 0; k < N; ++k) ist[k] = g.strides[k][nd - 1];
  parallel_for(0, g.numel, kElementwiseGrain, [&](int64_t b, int64_t e) {
    int64_t idx[kMaxDims];
    int64_t rem = b;
    for (int d = nd - 1; d >= 0; --d) {
      idx[d] = rem % g.shape[d];
      rem /= g.shape[d];
    }
    int64_t i = b;
    while (i < e) {
      int64_t off[N];
      for (int k = 0; k < N; ++k) {
        int64_t o = 0;
        for (int d = 0; d < nd; ++d) o += idx[d] * g.strides[k][d];
        off[k] = o;
      }
      int64_t cnt = std::min(last - idx[nd - 1], e - i);
      inner(off, cnt, ist);
      i += cnt;
      idx[nd - 1] += cnt;
      for (int d = nd - 1; d > 0 && idx[d] >= g.shape[d]; --d) {
        idx[d] = 0;
        ++idx[d - 1];
      }
    }
  });
}

}  // namespace colt5::kernels::cpu
