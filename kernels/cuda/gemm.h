// GEMM on a CUDA device (cuBLAS behind it), for ops/matmul.cpp. Plain C++
// header: includable without nvcc. Same contract as engine/blas.h, row-major:
//
//   C (M, N) = alpha * op(A) (M, K) * op(B) (K, N) + beta * C
//
// op(A) = A stored M x K with row stride lda >= K, or (trans_a) A stored K x M
// with lda >= M; the same for B (stored N x K when trans_b). beta == 0 never
// reads C. All pointers are on `device`; the work goes to that device's
// current stream (no host synchronisation). Row-major maps onto column-major
// cuBLAS as C^T = op(B)^T op(A)^T (swap A/B and M/N). Errors throw colt5::Error
// naming the call (CUBLAS_CHECK).
#pragma once
#include <cstdint>

namespace colt5::kernels::cuda {

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
          const float* B, int64_t ldb, float beta, float* C, int64_t ldc, int device);
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha, const double* A, int64_t lda,
          const double* B, int64_t ldb, double beta, double* C, int64_t ldc, int device);

// `batch` products; matrix i reads A + i * stride_a, B + i * stride_b and writes
// C + i * stride_c (strides in elements; 0 broadcasts one matrix to every product).
void gemm_strided_batched(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                          int64_t lda, int64_t stride_a, const float* B, int64_t ldb, int64_t stride_b, float beta,
                          float* C, int64_t ldc, int64_t stride_c, int64_t batch, int device);
void gemm_strided_batched(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha,
                          const double* A, int64_t lda, int64_t stride_a, const double* B, int64_t ldb,
                          int64_t stride_b, double beta, double* C, int64_t ldc, int64_t stride_c, int64_t batch,
                          int device);

}  // namespace colt5::kernels::cuda
