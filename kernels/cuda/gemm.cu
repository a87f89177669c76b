// Row-major GEMM over column-major cuBLAS (contract in kernels/cuda/gemm.h).
//
// A row-major (M, N) matrix with row stride ldc is the column-major (N, M)
// matrix C^T with the same leading dimension, so
//   C = op(A) op(B)   <=>   C^T = op(B)^T op(A)^T,
// one cuBLAS call with the operands swapped (B first, A second), M and N
// swapped, and each operand's transpose flag kept as it is: the transposes
// fold into the call, nothing is copied.
//
// f32 goes through cublasGemmEx / cublasGemmStridedBatchedEx with compute type
// CUBLAS_COMPUTE_32F (true f32) or, when colt5::cuda::set_allow_tf32(true),
// CUBLAS_COMPUTE_32F_FAST_TF32. f64 through cublasDgemm*.
#include "kernels/cuda/gemm.h"

#include <algorithm>
#include <climits>

#include "engine/cuda/check.h"
#include "engine/cuda/cublas.h"
#include "engine/cuda/memory.h"

namespace colt5::kernels::cuda {
namespace {

struct Call {
  cublasOperation_t op_first, op_second;  // op of B (first cuBLAS operand), of A (second)
  int m, n, k;                            // cuBLAS sizes: m = N, n = M
  int ld_first, ld_second, ldc;
};

int to_int(int64_t v, const char* what) {
  COLT5_CHECK(v >= 0 && v <= INT_MAX, "gemm (cuda): ", what, " = ", v, " exceeds cuBLAS's 32-bit limit");
  return static_cast<int>(v);
}

Call plan(bool ta, bool tb, int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldb, int64_t ldc) {
  if (K == 0) {  // nothing is read from A or B: any leading dim cuBLAS accepts will do
    lda = std::max<int64_t>({lda, 1, ta ? M : K});
    ldb = std::max<int64_t>({ldb, 1, tb ? K : N});
  }
  COLT5_CHECK(lda >= std::max<int64_t>(1, ta ? M : K) && ldb >= std::max<int64_t>(1, tb ? K : N) &&
                  ldc >= std::max<int64_t>(1, N),
              "gemm (cuda): leading dims too small: M=", M, " N=", N, " K=", K, " trans_a=", ta, " trans_b=", tb,
              " lda=", lda, " ldb=", ldb, " ldc=", ldc);
  Call c;
  c.op_first = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
  c.op_second = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
  c.m = to_int(N, "N");
  c.n = to_int(M, "M");
  c.k = to_int(K, "K");
  c.ld_first = to_int(ldb, "ldb");
  c.ld_second = to_int(lda, "lda");
  c.ldc = to_int(ldc, "ldc");
  return c;
}

cublasComputeType_t f32_compute() {
  return colt5::cuda::allow_tf32() ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
}

}  // namespace

void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
          const float* B, int64_t ldb, float beta, float* C, int64_t ldc, int device) {
  if (M == 0 || N == 0) return;
  const Call c = plan(ta, tb, M, N, K, lda, ldb, ldc);
  colt5::cuda::DeviceGuard guard(device);
  cublasHandle_t h = colt5::cuda::cublas_handle(device);
  CUBLAS_CHECK(cublasGemmEx(h, c.op_first, c.op_second, c.m, c.n, c.k, &alpha, B, CUDA_R_32F, c.ld_first, A,
                            CUDA_R_32F, c.ld_second, &beta, C, CUDA_R_32F, c.ldc, f32_compute(),
                            CUBLAS_GEMM_DEFAULT));
}

void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const double* A, int64_t lda,
          const double* B, int64_t ldb, double beta, double* C, int64_t ldc, int device) {
  if (M == 0 || N == 0) return;
  const Call c = plan(ta, tb, M, N, K, lda, ldb, ldc);
  colt5::cuda::DeviceGuard guard(device);
  cublasHandle_t h = colt5::cuda::cublas_handle(device);
  CUBLAS_CHECK(cublasDgemm(h, c.op_first, c.op_second, c.m, c.n, c.k, &alpha, B, c.ld_first, A, c.ld_second, &beta,
                           C, c.ldc));
}

void gemm_strided_batched(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                          int64_t lda, int64_t stride_a, const float* B, int64_t ldb, int64_t stride_b, float beta,
                          float* C, int64_t ldc, int64_t stride_c, int64_t batch, int device) {
  if (M == 0 || N == 0 || batch == 0) return;
  const Call c = plan(ta, tb, M, N, K, lda, ldb, ldc);
  const int nb = to_int(batch, "batch");
  colt5::cuda::DeviceGuard guard(device);
  cublasHandle_t h = colt5::cuda::cublas_handle(device);
  CUBLAS_CHECK(cublasGemmStridedBatchedEx(h, c.op_first, c.op_second, c.m, c.n, c.k, &alpha, B, CUDA_R_32F,
                                          c.ld_first, stride_b, A, CUDA_R_32F, c.ld_second, stride_a, &beta, C,
                                          CUDA_R_32F, c.ldc, stride_c, nb, f32_compute(), CUBLAS_GEMM_DEFAULT));
}

void gemm_strided_batched(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const double* A,
                          int64_t lda, int64_t stride_a, const double* B, int64_t ldb, int64_t stride_b, double beta,
                          double* C, int64_t ldc, int64_t stride_c, int64_t batch, int device) {
  if (M == 0 || N == 0 || batch == 0) return;
  const Call c = plan(ta, tb, M, N, K, lda, ldb, ldc);
  const int nb = to_int(batch, "batch");
  colt5::cuda::DeviceGuard guard(device);
  cublasHandle_t h = colt5::cuda::cublas_handle(device);
  CUBLAS_CHECK(cublasDgemmStridedBatched(h, c.op_first, c.op_second, c.m, c.n, c.k, &alpha, B, c.ld_first, stride_b,
                                         A, c.ld_second, stride_a, &beta, C, c.ldc, stride_c, nb));
}

}  // namespace colt5::kernels::cuda
