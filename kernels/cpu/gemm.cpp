#include "kernels/cpu/gemm.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>

#include "engine/error.h"
#include "engine/parallel.h"

namespace colt5::kernels::cpu {
namespace {

// ---- tile shape: the widest vectors the target has, 2 vectors per tile row.
#if defined(__AVX512F__)
constexpr int kVecBytes = 64;  // 32 zmm registers: 12 x 2 accumulators + 2 B vectors + 1 broadcast
constexpr int kMR = 12;
#elif defined(__AVX__)
constexpr int kVecBytes = 32;  // 16 ymm registers: 6 x 2 accumulators + 2 B vectors + 1 broadcast
constexpr int kMR = 6;
#else
constexpr int kVecBytes = 16;
constexpr int kMR = 6;
#endif

typedef float vec_f32 __attribute__((vector_size(kVecBytes)));
typedef double vec_f64 __attribute__((vector_size(kVecBytes)));
template <class T> struct VecOf;
template <> struct VecOf<float> { using type = vec_f32; };
template <> struct VecOf<double> { using type = vec_f64; };

template <class T>
struct Blocking {
  static constexpr int VL = kVecBytes / static_cast<int>(sizeof(T));  // lanes per vector
  static constexpr int NV = 2;                                         // vectors per tile row
  static constexpr int NR = VL * NV;                                   // tile columns
  static constexpr int MR = kMR;                                       // tile rows
  // KC x NR panel of B in L1 (f32: 256 x 32 x 4 = 32 KB on AVX-512; f64 the same bytes),
  // MC x KC block of A in L2, KC x NC block of B in L3.
  static constexpr int64_t KC = 256;
  static constexpr int64_t MC = MR * (sizeof(T) == 4 ? 20 : 16);
  static constexpr int64_t NC = 4096;
};

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// A grow-only 64-byte aligned buffer (one per thread and role: packing never allocates
// on the hot path once the largest shape has been seen).
template <class T>
struct Buffer {
  T* ptr = nullptr;
  size_t cap = 0;
  T* get(size_t n) {
    if (n > cap) {
      std::free(ptr);
      size_t bytes = static_cast<size_t>(round_up(static_cast<int64_t>(n * sizeof(T)), 64));
      ptr = static_cast<T*>(std::aligned_alloc(64, bytes));
      if (!ptr) {
        cap = 0;
        throw std::bad_alloc();
      }
      cap = n;
    }
    return ptr;
  }
  ~Buffer() { std::free(ptr); }
};

// The register tile: c (mr x nr valid of MR x NR) = alpha * a_panel . b_panel + beta * c.
// a: kc x MR (MR consecutive values per k), b: kc x NR (NR consecutive values per k).
template <class T>
inline void micro_kernel(int64_t kc, const T* __restrict a, const T* __restrict b, T* __restrict c, int64_t ldc,
                         T alpha, T beta, int mr, int nr) {
  using V = typename VecOf<T>::type;
  constexpr int MR = Blocking<T>::MR, NV = Blocking<T>::NV, VL = Blocking<T>::VL, NR = Blocking<T>::NR;
  V acc[MR][NV];
#pragma GCC unroll 32
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) acc[i][j] = V{};
#pragma GCC unroll 2
  for (int64_t p = 0; p < kc; ++p) {
    V bv[NV];
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) std::memcpy(&bv[j], b + p * NR + j * VL, sizeof(V));
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) {
      const T av = a[p * MR + i];
#pragma GCC unroll 4
      for (int j = 0; j < NV; ++j) acc[i][j] += bv[j] * av;
    }
  }
  if (mr == MR && nr == NR) {
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
      for (int j = 0; j < NV; ++j) {
        T* cp = c + i * ldc + j * VL;
        V r = acc[i][j] * alpha;
        if (beta != T(0)) {
          V old;
          std::memcpy(&old, cp, sizeof(V));
          r += old * beta;
        }
        std::memcpy(cp, &r, sizeof(V));
      }
    return;
  }
  alignas(64) T tmp[MR * NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NV; ++j) std::memcpy(tmp + i * NR + j * VL, &acc[i][j], sizeof(V));
  for (int i = 0; i < mr; ++i)
    for (int j = 0; j < nr; ++j) {
      T r = alpha * tmp[i * NR + j];
      c[i * ldc + j] = beta != T(0) ? r + beta * c[i * ldc + j] : r;
    }
}

// Rows [i0, i0 + mc) x cols [p0, p0 + kc) of op(A) into MR-high panels, zero-padded:
// panel q holds rows i0 + q*MR .. as dst[q*MR*kc + p*MR + i].
template <class T>
void pack_a(bool ta, const T* A, int64_t lda, int64_t i0, int64_t mc, int64_t p0, int64_t kc, T* dst) {
  constexpr int MR = Blocking<T>::MR;
  for (int64_t ir = 0; ir < mc; ir += MR) {
    const int mr = static_cast<int>(std::min<int64_t>(MR, mc - ir));
    T* d = dst + ir * kc;
    if (!ta) {  // A(i, k) = A[i * lda + k]
      const T* rows[MR];
      for (int i = 0; i < mr; ++i) rows[i] = A + (i0 + ir + i) * lda + p0;
      for (int64_t p = 0; p < kc; ++p) {
        for (int i = 0; i < mr; ++i) d[p * MR + i] = rows[i][p];
        for (int i = mr; i < MR; ++i) d[p * MR + i] = T(0);
      }
    } else {  // A(i, k) = A[k * lda + i]
      for (int64_t p = 0; p < kc; ++p) {
        const T* src = A + (p0 + p) * lda + i0 + ir;
        for (int i = 0; i < mr; ++i) d[p * MR + i] = src[i];
        for (int i = mr; i < MR; ++i) d[p * MR + i] = T(0);
      }
    }
  }
}

// Rows [p0, p0 + kc) x NR-wide panels [jp0, jp1) of the column block starting at j0
// (nc columns) of op(B), zero-padded: panel q holds dst[q*NR*kc + p*NR + j].
template <class T>
void pack_b(bool tb, const T* B, int64_t ldb, int64_t p0, int64_t kc, int64_t j0, int64_t nc, int64_t jp0,
            int64_t jp1, T* dst) {
  constexpr int NR = Blocking<T>::NR;
  for (int64_t q = jp0; q < jp1; ++q) {
    const int64_t jr = q * NR;
    const int nr = static_cast<int>(std::min<int64_t>(NR, nc - jr));
    T* d = dst + jr * kc;
    if (!tb) {  // B(k, j) = B[k * ldb + j]
      for (int64_t p = 0; p < kc; ++p) {
        const T* src = B + (p0 + p) * ldb + j0 + jr;
        for (int j = 0; j < nr; ++j) d[p * NR + j] = src[j];
        for (int j = nr; j < NR; ++j) d[p * NR + j] = T(0);
      }
    } else {  // B(k, j) = B[j * ldb + k]
      for (int j = 0; j < nr; ++j) {
        const T* src = B + (j0 + jr + j) * ldb + p0;
        for (int64_t p = 0; p < kc; ++p) d[p * NR + j] = src[p];
      }
      for (int j = nr; j < NR; ++j)
        for (int64_t p = 0; p < kc; ++p) d[p * NR + j] = T(0);
    }
  }
}

template <class T>
void scale_c(int64_t M, int64_t N, T beta, T* C, int64_t ldc) {
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == T(0) ? T(0) : beta * C[i * ldc + j];
}

}  // namespace

template <class T>
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
          int64_t ldb, T beta, T* C, int64_t ldc) {
  using Bk = Blocking<T>;
  constexpr int MR = Bk::MR, NR = Bk::NR;
  COLT5_CHECK(M >= 0 && N >= 0 && K >= 0, "gemm: negative size M=", M, " N=", N, " K=", K);
  COLT5_CHECK(lda >= std::max<int64_t>(1, ta ? M : K) && ldb >= std::max<int64_t>(1, tb ? K : N) &&
                  ldc >= std::max<int64_t>(1, N),
              "gemm: leading dims too small (M=", M, " N=", N, " K=", K, " trans_a=", ta, " trans_b=", tb,
              " lda=", lda, " ldb=", ldb, " ldc=", ldc, ")");
  if (M == 0 || N == 0) return;
  if (K == 0 || alpha == T(0)) {
    scale_c(M, N, beta, C, ldc);
    return;
  }

  // Tiny products: the pool's wake-up costs more than the work.
  const bool serial = static_cast<double>(M) * N * K < 64.0 * 64.0 * 64.0;
  const int64_t nthreads = serial ? 1 : std::max(1, get_num_threads());
  // Row blocks small enough that every thread gets one when M is small.
  const int64_t mc = std::min<int64_t>(Bk::MC, round_up(ceil_div(M, nthreads), MR));
  const int64_t n_ic = ceil_div(M, mc);

  thread_local Buffer<T> b_buf;
  for (int64_t jc = 0; jc < N; jc += Bk::NC) {
    const int64_t nc = std::min<int64_t>(Bk::NC, N - jc);
    const int64_t npanels = ceil_div(nc, NR);
    // Split the panels so that there are about 2 tasks per thread (dynamic scheduling evens them out).
    int64_t nj = std::clamp<int64_t>(ceil_div(2 * nthreads, n_ic), 1, npanels);
    const int64_t per_task = ceil_div(npanels, nj);
    nj = ceil_div(npanels, per_task);
    const int64_t ntasks = n_ic * nj;
    for (int64_t pc = 0; pc < K; pc += Bk::KC) {
      const int64_t kc = std::min<int64_t>(Bk::KC, K - pc);
      const T beta_k = pc == 0 ? beta : T(1);
      T* bp = b_buf.get(static_cast<size_t>(npanels * NR * kc));
      const int64_t pack_grain = std::max<int64_t>(1, 16384 / (kc * NR));
      if (serial) {
        pack_b(tb, B, ldb, pc, kc, jc, nc, 0, npanels, bp);
      } else {
        parallel_for(0, npanels, pack_grain,
                     [&](int64_t q0, int64_t q1) { pack_b(tb, B, ldb, pc, kc, jc, nc, q0, q1, bp); });
      }
      auto task = [&](int64_t t) {
        thread_local Buffer<T> a_buf;
        const int64_t i0 = (t / nj) * mc, mcur = std::min(mc, M - i0);
        const int64_t q0 = (t % nj) * per_task, q1 = std::min(npanels, q0 + per_task);
        T* ap = a_buf.get(static_cast<size_t>(round_up(mcur, MR) * kc));
        pack_a(ta, A, lda, i0, mcur, pc, kc, ap);
        for (int64_t q = q0; q < q1; ++q) {
          const int nr = static_cast<int>(std::min<int64_t>(NR, nc - q * NR));
          const T* bq = bp + q * NR * kc;
          for (int64_t ir = 0; ir < mcur; ir += MR) {
            const int mr = static_cast<int>(std::min<int64_t>(MR, mcur - ir));
            micro_kernel<T>(kc, ap + ir * kc, bq, C + (i0 + ir) * ldc + jc + q * NR, ldc, alpha, beta_k, mr, nr);
          }
        }
      };
      if (serial || ntasks == 1) {
        for (int64_t t = 0; t < ntasks; ++t) task(t);
      } else {
        parallel_chunks(ntasks, task);
      }
    }
  }
}

template void gemm<float>(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*, int64_t,
                          float, float*, int64_t);
template void gemm<double>(bool, bool, int64_t, int64_t, int64_t, double, const double*, int64_t, const double*,
                           int64_t, double, double*, int64_t);

const char* gemm_kernel_description() {
#if defined(__AVX512F__)
  return "packed blocked GEMM, 12x32 f32 / 12x16 f64 register tiles, 512-bit vectors";
#elif defined(__AVX__)
  return "packed blocked GEMM, 6x16 f32 / 6x8 f64 register tiles, 256-bit vectors";
#else
  return "packed blocked GEMM, 6x8 f32 / 6x4 f64 register tiles, 128-bit vectors";
#endif
}

}  // namespace colt5::kernels::cpu
