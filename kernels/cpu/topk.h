// Hard top-k over the last dim of contiguous rows (CPU, pointer level: no
// tensors, no autograd). The readable reference for kernels/cuda/topk.cu.
//
// Order (identical on CPU and GPU, SPEC §2 step 6):
//   - larger value first; ties go to the LOWER index;
//   - -0.0 and +0.0 are equal (a tie, broken by index);
//   - NaN ranks below every number, -inf included; all NaNs tie with each other
//     (so NaNs are only selected when fewer than k non-NaN entries exist, and
//     then in index order);
//   - the returned values are the input's own bits (x[row, indices[j]]), so a
//     -0.0 or a NaN payload comes back unchanged.
// Implementation: order-preserving integer keys (the IEEE bits with the sign
// flipped, NaN mapped to the lowest key, -0 folded onto +0), a radix
// histogram over the top bits to find the candidates, nth_element on
// (key desc, index asc) among them, then a sort of the k winners.
#pragma once
#include <cstdint>

namespace colt5::kernels::cpu {

// x (rows, n) contiguous; writes values (rows, k) and indices (rows, k) (int64),
// each row sorted descending, ties -> lower index. Requires 0 <= k <= n
// (throws colt5::Error otherwise). Rows are spread over the thread pool.
template <class T>
void topk(const T* x, int64_t rows, int64_t n, int64_t k, T* values, int64_t* indices);

extern template void topk<float>(const float*, int64_t, int64_t, int64_t, float*, int64_t*);
extern template void topk<double>(const double*, int64_t, int64_t, int64_t, double*, int64_t*);

}  // namespace colt5::kernels::cpu
