#include "engine/blas.h"

#include <algorithm>
#include <climits>

#include "engine/error.h"
#include "kernels/cpu/gemm.h"

#ifdef COLT5_WITH_BLAS
#include <cblas.h>
// Declared by OpenBLAS's cblas.h; repeated here in case another vendor's cblas.h was found.
extern "C" void openblas_set_num_threads(int num_threads);
extern "C" char* openblas_get_config(void);
#endif

namespace colt5 {
namespace {

void check_args(bool ta, bool tb, int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldb, int64_t ldc) {
  COLT5_CHECK(M >= 0 && N >= 0 && K >= 0, "gemm: negative size M=", M, " N=", N, " K=", K);
  COLT5_CHECK(lda >= std::max<int64_t>(1, ta ? M : K) && ldb >= std::max<int64_t>(1, tb ? K : N) &&
                  ldc >= std::max<int64_t>(1, N),
              "gemm: leading dims too small (M=", M, " N=", N, " K=", K, " trans_a=", ta, " trans_b=", tb,
              " lda=", lda, " ldb=", ldb, " ldc=", ldc, ")");
}

[[maybe_unused]] bool fits_int(std::initializer_list<int64_t> vs) {
  for (int64_t v : vs)
    if (v > INT_MAX) return false;
  return true;
}

}  // namespace

template <class T>
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
          int64_t ldb, T beta, T* C, int64_t ldc) {
  check_args(ta, tb, M, N, K, lda, ldb, ldc);
  if (M == 0 || N == 0) return;
  if (K == 0 || alpha == T(0)) {  // C = beta * C, and beta == 0 must not read C
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == T(0) ? T(0) : beta * C[i * ldc + j];
    return;
  }
#ifdef COLT5_WITH_BLAS
  if (fits_int({M, N, K, lda, ldb, ldc})) {
    const auto opa = ta ? CblasTrans : CblasNoTrans, opb = tb ? CblasTrans : CblasNoTrans;
    const int m = static_cast<int>(M), n = static_cast<int>(N), k = static_cast<int>(K);
    if constexpr (sizeof(T) == 4) {
      cblas_sgemm(CblasRowMajor, opa, opb, m, n, k, alpha, A, static_cast<int>(lda), B, static_cast<int>(ldb), beta,
                  C, static_cast<int>(ldc));
    } else {
      cblas_dgemm(CblasRowMajor, opa, opb, m, n, k, alpha, A, static_cast<int>(lda), B, static_cast<int>(ldb), beta,
                  C, static_cast<int>(ldc));
    }
    return;
  }
#endif
  kernels::cpu::gemm<T>(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

template void gemm<float>(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*, int64_t,
                          float, float*, int64_t);
template void gemm<double>(bool, bool, int64_t, int64_t, int64_t, double, const double*, int64_t, const double*,
                           int64_t, double, double*, int64_t);

bool blas_is_openblas() {
#ifdef COLT5_WITH_BLAS
  return true;
#else
  return false;
#endif
}

const char* blas_name() {
#ifdef COLT5_WITH_BLAS
  return openblas_get_config();  // "OpenBLAS 0.3.21 ... <kernel family> MAX_THREADS=..."
#else
  return kernels::cpu::gemm_kernel_description();
#endif
}

void blas_set_num_threads(int n) {
#ifdef COLT5_WITH_BLAS
  openblas_set_num_threads(std::max(1, n));
#else
  (void)n;
#endif
}

}  // namespace colt5
