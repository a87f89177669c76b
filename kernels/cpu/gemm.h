// The engine's own CPU GEMM (used when the build has no OpenBLAS, and by the
// benchmark beside OpenBLAS). Pointer level: no tensors, no autograd.
//
//   C (M, N) = alpha * op(A) (M, K) * op(B) (K, N) + beta * C      (row-major)
//
// op(A) = A (M x K, row stride lda >= K) when !trans_a, else A is stored
// K x M (lda >= M) and read transposed; the same for B (N x K when trans_b).
// beta == 0 never reads C (NaNs in C do not leak through); K == 0 gives beta * C.
//
// Design (BLIS/GotoBLAS): for each KC-deep slice of K and NC-wide block of
// columns, B is packed once into NR-wide panels (shared); the rows are cut into
// MC-high blocks; each task (an MC row block times a run of NR panels) packs
// its A block into MR-high panels (thread-local, sized for L2) and runs the
// MR x NR register-tiled micro-kernel over it (a B panel, KC x NR, stays in
// L1 across the row panels). Edge tiles compute on zero-padded panels and
// store only the valid part. Tasks go to colt5::parallel_chunks (dynamic
// scheduling, engine thread count); nested calls (from a pool thread) run
// serially. The micro-kernel uses GCC/Clang vector extensions of the widest
// vector -march=native offers (AVX-512: MR x NR = 12 x 32 f32, 12 x 16 f64;
// AVX2/FMA: 6 x 16 f32, 6 x 8 f64), which compile to broadcast + FMA.
// Each C element is summed in the same order whatever the thread count.
#pragma once
#include <cstdint>

namespace colt5::kernels::cpu {

template <class T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda,
          const T* B, int64_t ldb, T beta, T* C, int64_t ldc);

extern template void gemm<float>(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t,
                                 const float*, int64_t, float, float*, int64_t);
extern template void gemm<double>(bool, bool, int64_t, int64_t, int64_t, double, const double*, int64_t,
                                  const double*, int64_t, double, double*, int64_t);

// "12x32 f32 / 12x16 f64 micro-kernel, 512-bit vectors": for `colt5 info` and the benchmark.
const char* gemm_kernel_description();

}  // namespace colt5::kernels::cpu
