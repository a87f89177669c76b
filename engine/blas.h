// Row-major GEMM for the CPU backend: OpenBLAS (cblas) when the build found it
// (COLT5_WITH_BLAS), otherwise the engine's own blocked GEMM (kernels/cpu/gemm.h).
//
//   C (M, N) = alpha * op(A) (M, K) * op(B) (K, N) + beta * C
//
// op(A) = A stored M x K with row stride lda >= K, or (trans_a) A stored K x M
// with lda >= M and read transposed; the same for B (stored N x K when trans_b).
// beta == 0 never reads C. Sizes beyond 32-bit BLAS indices go to the fallback.
#pragma once
#include <cstdint>

namespace colt5 {

template <class T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda,
          const T* B, int64_t ldb, T beta, T* C, int64_t ldc);

extern template void gemm<float>(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*,
                                 int64_t, float, float*, int64_t);
extern template void gemm<double>(bool, bool, int64_t, int64_t, int64_t, double, const double*, int64_t,
                                  const double*, int64_t, double, double*, int64_t);

// True when gemm goes to OpenBLAS.
bool blas_is_openblas();
// What gemm runs on: "OpenBLAS 0.3.21 ... (config)" or the fallback's description.
const char* blas_name();
// Threads OpenBLAS may use (openblas_set_num_threads); no-op for the fallback,
// which follows colt5::set_num_threads. Meant to be called with the engine's count.
void blas_set_num_threads(int n);

}  // namespace colt5
