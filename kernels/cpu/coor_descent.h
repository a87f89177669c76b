// Coordinate descent (SPEC §1), pointer level: fused forward and exact backward
// on the CPU. No tensors, no autograd: the op layer calls these. The CUDA
// versions (kernels/cuda/coor_descent.h) take the same parameters and write
// the same `saved` layout, so a forward on one device and a backward on the
// other agree.
//
// Shapes: rows of length n, contiguous, row-major.
//   s    (rows, n)  scores
//   mask (rows, n)  uint8 0/1 (1 = keep), or nullptr (all kept)
//   k    (rows)     per-row k (> 0), or nullptr: then params.k_scalar for every row
//   out  (rows, n)  soft top-k, entries in [0, 1], masked entries 0
//   saved (rows, coor_descent_saved_per_row(p))  per-row scalars for the backward
//
// `saved` layout per row (T = n_iters, t = 1..T stored at index t-1):
//   [0,   T)   a_t      the dual variable after iteration t
//   [T,  2T)   l_t      log of the shifted normaliser of iteration t:
//                       logsumexp(z_t) = m_t / e_t + l_t, m_t = min(smax, -a_{t-1})
//                       (m_1 = 0: in iteration 1 every unmasked z is exactly 0)
//   [2T, 3T)   P_t      prod_{j=t+1..T} S_j, S_j = softmax_j mass on the entries
//                       with s + a_{j-1} > 0 (the backward's adjoint of a_t / adjoint of a_T)
//   3T         smax     max of the unmasked scores (0 for a fully masked row)
//   3T + 1     Q        sum_t P_t e_t (the backward's d a-chain / d log k factor)
// Fully masked rows store zeros. The derivation is in coor_descent.cpp.
#pragma once
#include <cstdint>

namespace colt5::kernels {

struct CoorDescentParams {
  int64_t rows = 0, n = 0;  // rows of length n, contiguous, row-major
  int n_iters = 20;
  double eps = 0.03, eps_init = 0 /* <= 0: none */, eps_decay = 1.0;
  double k_scalar = 0;  // k for every row when the per-row k pointer is null
};

// Scalars kept per row for the backward (see the layout above).
inline int64_t coor_descent_saved_per_row(const CoorDescentParams& p) { return 3 * int64_t(p.n_iters) + 2; }
inline int64_t coor_descent_saved_size(const CoorDescentParams& p) { return p.rows * coor_descent_saved_per_row(p); }

// e schedule of SPEC §1: e_1 = max(eps_init or eps, eps), e_{t+1} = max(e_t * decay, eps).
// Computed in double on every backend, then rounded to the kernel's dtype.
inline double coor_descent_eps_first(const CoorDescentParams& p) {
  double e = p.eps_init > 0 ? p.eps_init : p.eps;
  return e > p.eps ? e : p.eps;
}
inline double coor_descent_eps_next(const CoorDescentParams& p, double e) {
  double d = e * p.eps_decay;
  return d > p.eps ? d : p.eps;
}

// Throws colt5::Error when the parameters are out of range (n_iters >= 1,
// eps > 0, eps_decay in (0, 1], rows, n >= 0).
void coor_descent_check_params(const CoorDescentParams& p);

}  // namespace colt5::kernels

namespace colt5::kernels::cpu {

// Rows are spread over the thread pool; rows of at least kCoorDescentSplit
// entries are split into fixed chunks of kCoorDescentChunk entries whose
// partial sums are combined in chunk order (results do not depend on the
// number of threads).
inline constexpr int64_t kCoorDescentSplit = 65536;
inline constexpr int64_t kCoorDescentChunk = 16384;

template <class T>
void coor_descent_forward(const CoorDescentParams& p, const T* s, const uint8_t* mask, const T* k, T* out, T* saved);

// dout (rows, n) -> ds (rows, n) (overwritten); dk (rows) overwritten, or nullptr.
template <class T>
void coor_descent_backward(const CoorDescentParams& p, const T* s, const uint8_t* mask, const T* k, const T* out,
                           const T* saved, const T* dout, T* ds, T* dk);

}  // namespace colt5::kernels::cpu
