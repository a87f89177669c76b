// Warp-level tensor-core tiles shared by the attention kernels
// (kernels/cuda/flash_attention.cu, kernels/cuda/local_attention.cu):
// softmax constants (kLog2e, kLn2, kInf), element conversions, cp.async /
// ldmatrix / mma.sync wrappers, the MMA fragment traits MmaHalf<T> and
// MmaTf32<kSplit>, and load_tile.
//
// Everything here is a template, a member of a class template, a
// __forceinline__ (= inline) function or a constexpr constant (internal
// linkage), so any number of .cu files may include it without duplicate
// symbols.
//
// Fragment layouts (PTX mma.sync, per warp; lane l, g = l >> 2, t = l & 3):
//   accumulator C, 16 x 8 f32: c[0], c[1] = C[g][2t], C[g][2t+1];
//                              c[2], c[3] = C[g+8][2t], C[g+8][2t+1].
//   bf16/f16 m16n8k16 (registers hold two consecutive k):
//     A 16 x 16: x[0] = A[g][2t..2t+1], x[1] = A[g+8][2t..2t+1],
//                x[2] = A[g][2t+8..2t+9], x[3] = A[g+8][2t+8..2t+9];
//     B 16 x 8:  x[0] = B[2t..2t+1][g], x[1] = B[2t+8..2t+9][g].
//     Loads go through ldmatrix (.trans for the transposed storage); C -> A
//     packs the two accumulator tiles' pairs as they are.
//   TF32 m16n8k8 (one element per register):
//     A 16 x 8: x[0] = A[g][t], x[1] = A[g+8][t], x[2] = A[g][t+4], x[3] = A[g+8][t+4];
//     B 8 x 8:  x[0] = B[t][g], x[1] = B[t+4][g].
//
// TF32 k permutation: an accumulator fragment holds columns (2t, 2t+1) of
// each 8-wide tile while a TF32 A fragment wants (t, t+4). Since a product
// sums over k in any order, all "transposed-storage" loads (load_a_t,
// load_b_t2) and c_to_a use the permuted k order (register slot t -> k = 2t,
// slot t+4 -> k = 2t+1), which makes C -> A a register rename. load_a and
// load_b_nt2 use the natural order. Pairing rule: load_a is used with
// load_b_nt2, and c_to_a / load_a_t are used with load_b_t2 (the bf16/f16
// fragments need no permutation, so for them any pairing would be right).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <limits>
#include <type_traits>

namespace colt5::kernels::cuda::tiles {

using bf16 = __nv_bfloat16;
using f16 = __half;

// ------------------------------------------------------------------ helpers

// Softmax in base 2: scores scaled by log2(e), lse converted back with ln(2).
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
// +infinity (bit pattern 0x7f800000): masked scores, empty-row lse.
constexpr float kInf = std::numeric_limits<float>::infinity();

template <class T> __device__ __forceinline__ float to_f(T x);
template <> __device__ __forceinline__ float to_f<float>(float x) { return x; }
template <> __device__ __forceinline__ float to_f<bf16>(bf16 x) { return __bfloat162float(x); }
template <> __device__ __forceinline__ float to_f<f16>(f16 x) { return __half2float(x); }
template <class T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ bf16 from_f<bf16>(float x) { return __float2bfloat16_rn(x); }
template <> __device__ __forceinline__ f16 from_f<f16>(float x) { return __float2half_rn(x); }

// Two consecutive elements from floats (x at the lower address).
template <class T> struct Pair;
template <> struct Pair<float> { using type = float2; static __device__ __forceinline__ float2 make(float x, float y) { return make_float2(x, y); } };
template <> struct Pair<bf16> { using type = __nv_bfloat162; static __device__ __forceinline__ __nv_bfloat162 make(float x, float y) { return __floats2bfloat162_rn(x, y); } };
template <> struct Pair<f16> { using type = __half2; static __device__ __forceinline__ __half2 make(float x, float y) { return __floats2half2_rn(x, y); } };

// Writes x0, x1 to row[col], row[col + 1] of a row with d columns: one paired
// store when vec (the row allows 2-element stores) and both columns exist,
// else element by element, skipping columns >= d.
template <class T>
__device__ __forceinline__ void store_pair(T* row, int col, int d, bool vec, float x0, float x1) {
  if (vec && col + 1 < d) {
    *reinterpret_cast<typename Pair<T>::type*>(row + col) = Pair<T>::make(x0, x1);
  } else {
    if (col < d) row[col] = from_f<T>(x0);
    if (col + 1 < d) row[col + 1] = from_f<T>(x1);
  }
}

__device__ __forceinline__ float ex2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_addr(smem)), "l"(gmem));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}
__device__ __forceinline__ uint32_t to_tf32(float x) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(x));
  return r;
}
__device__ __forceinline__ void mma_tf32(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
__device__ __forceinline__ int lane_id() { return threadIdx.x & 31; }

// ------------------------------------------------------------------ MMA traits
//
// Each traits class fixes the storage type T, the k-step kK of one MMA, the
// shared-memory row padding, and warp-level fragment loads:
//   load_a   (a, s, ld, m0, k0): A[m][k] = s[m*ld + k]       (16 x kK)
//   load_a_t (a, s, ld, m0, k0): A[m][k] = s[k*ld + m]
//   load_b_nt2(b, s, ld, k0, n0): B[k][n] = s[n*ld + k]      (two kK x 8 tiles: n0, n0+8)
//   load_b_t2 (b, s, ld, k0, n0): B[k][n] = s[k*ld + n]
//   c_to_a(a, c): A fragment from kK/8 accumulator tiles (rows 16, cols kK)
//   mma(c, a, b): c += a b
// Pairing rule (TF32 k permutation, see the top of this file): load_a/load_b_nt2
// are used together, and c_to_a/load_a_t are used with load_b_t2.

template <class T>
struct MmaHalf {  // bf16 / f16, mma.m16n8k16, fragments through ldmatrix
  using Elem = T;
  static constexpr int kK = 16, kPad = 8;
  struct AF { uint32_t x[4]; };
  struct BF { uint32_t x[2]; };
  static __device__ __forceinline__ void load_a(AF& a, const T* s, int ld, int m0, int k0) {
    const int l = lane_id();
    ldsm_x4(a.x, s + (m0 + (l & 15)) * ld + k0 + (l >> 4) * 8);
  }
  static __device__ __forceinline__ void load_a_t(AF& a, const T* s, int ld, int m0, int k0) {
    const int l = lane_id(), j = l >> 3, r = l & 7;
    ldsm_x4_t(a.x, s + (k0 + r + (j >> 1) * 8) * ld + m0 + (j & 1) * 8);
  }
  static __device__ __forceinline__ void load_b_nt2(BF (&b)[2], const T* s, int ld, int k0, int n0) {
    const int l = lane_id(), j = l >> 3, r = l & 7;
    uint32_t x[4];
    ldsm_x4(x, s + (n0 + r + (j >> 1) * 8) * ld + k0 + (j & 1) * 8);
    b[0].x[0] = x[0], b[0].x[1] = x[1], b[1].x[0] = x[2], b[1].x[1] = x[3];
  }
  static __device__ __forceinline__ void load_b_t2(BF (&b)[2], const T* s, int ld, int k0, int n0) {
    const int l = lane_id(), j = l >> 3, r = l & 7;
    uint32_t x[4];
    ldsm_x4_t(x, s + (k0 + r + (j & 1) * 8) * ld + n0 + (j >> 1) * 8);
    b[0].x[0] = x[0], b[0].x[1] = x[1], b[1].x[0] = x[2], b[1].x[1] = x[3];
  }
  static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
    typename Pair<T>::type v = Pair<T>::make(lo, hi);
    return *reinterpret_cast<uint32_t*>(&v);
  }
  static __device__ __forceinline__ void c_to_a(AF& a, const float (*c)[4]) {
    a.x[0] = pack(c[0][0], c[0][1]);
    a.x[1] = pack(c[0][2], c[0][3]);
    a.x[2] = pack(c[1][0], c[1][1]);
    a.x[3] = pack(c[1][2], c[1][3]);
  }
  static __device__ __forceinline__ void mma(float (&c)[4], const AF& a, const BF& b) {
    if constexpr (std::is_same_v<T, bf16>) {
      asm volatile(
          "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
          "{%0,%1,%2,%3};\n"
          : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
          : "r"(a.x[0]), "r"(a.x[1]), "r"(a.x[2]), "r"(a.x[3]), "r"(b.x[0]), "r"(b.x[1]));
    } else {
      asm volatile(
          "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
          "{%0,%1,%2,%3};\n"
          : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
          : "r"(a.x[0]), "r"(a.x[1]), "r"(a.x[2]), "r"(a.x[3]), "r"(b.x[0]), "r"(b.x[1]));
    }
  }
};

// f32 storage, TF32 mma.m16n8k8. kSplit = false: plain TF32 (operands rounded
// to nearest TF32). kSplit = true: 3xTF32, x = hi + lo with both TF32, and
// c += a_lo b_hi + a_hi b_lo + a_hi b_hi.
template <bool kSplit>
struct MmaTf32 {
  using Elem = float;
  static constexpr int kK = 8, kPad = 4;
  static constexpr int kParts = kSplit ? 2 : 1;
  struct AF { uint32_t x[kParts][4]; };
  struct BF { uint32_t x[kParts][2]; };
  static __device__ __forceinline__ void set_a(AF& a, int i, float v) {
    a.x[0][i] = to_tf32(v);
    if constexpr (kSplit) a.x[kParts - 1][i] = to_tf32(v - __uint_as_float(a.x[0][i]));
  }
  static __device__ __forceinline__ void set_b(BF& b, int i, float v) {
    b.x[0][i] = to_tf32(v);
    if constexpr (kSplit) b.x[kParts - 1][i] = to_tf32(v - __uint_as_float(b.x[0][i]));
  }
  static __device__ __forceinline__ void load_a(AF& a, const float* s, int ld, int m0, int k0) {
    const int l = lane_id(), g = l >> 2, t = l & 3;
    const float* p = s + (m0 + g) * ld + k0 + t;
    set_a(a, 0, p[0]);
    set_a(a, 1, p[8 * ld]);
    set_a(a, 2, p[4]);
    set_a(a, 3, p[8 * ld + 4]);
  }
  static __device__ __forceinline__ void load_a_t(AF& a, const float* s, int ld, int m0, int k0) {
    const int l = lane_id(), g = l >> 2, t = l & 3;
    const float* p = s + (k0 + 2 * t) * ld + m0 + g;
    set_a(a, 0, p[0]);
    set_a(a, 1, p[8]);
    set_a(a, 2, p[ld]);
    set_a(a, 3, p[ld + 8]);
  }
  static __device__ __forceinline__ void load_b_nt2(BF (&b)[2], const float* s, int ld, int k0, int n0) {
    const int l = lane_id(), g = l >> 2, t = l & 3;
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const float* p = s + (n0 + 8 * i + g) * ld + k0 + t;
      set_b(b[i], 0, p[0]);
      set_b(b[i], 1, p[4]);
    }
  }
  static __device__ __forceinline__ void load_b_t2(BF (&b)[2], const float* s, int ld, int k0, int n0) {
    const int l = lane_id(), g = l >> 2, t = l & 3;
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const float* p = s + (k0 + 2 * t) * ld + n0 + 8 * i + g;
      set_b(b[i], 0, p[0]);
      set_b(b[i], 1, p[ld]);
    }
  }
  static __device__ __forceinline__ void c_to_a(AF& a, const float (*c)[4]) {
    set_a(a, 0, c[0][0]);
    set_a(a, 1, c[0][2]);
    set_a(a, 2, c[0][1]);
    set_a(a, 3, c[0][3]);
  }
  static __device__ __forceinline__ void mma(float (&c)[4], const AF& a, const BF& b) {
    if constexpr (kSplit) {
      mma_tf32(c, a.x[1], b.x[0]);  // small terms first
      mma_tf32(c, a.x[0], b.x[1]);
    }
    mma_tf32(c, a.x[0], b.x[0]);
  }
};

// ------------------------------------------------------------------ tile loads

// s[r*LD + c] = (r0 + r < nrows && c < d) ? g[(r0 + r)*sn + c] : 0 for r < R, c < D.
// Callers pass r0 >= 0 (rows below 0 are not tested).
// vec: cp.async 16-byte chunks (caller checked alignment of g, sn and d); the
// caller commits and waits for the cp.async group.
template <class T, int D, int LD, int R, int NT>
__device__ __forceinline__ void load_tile(T* s, const T* g, long long sn, int r0, int nrows, int d, bool vec) {
  constexpr int CE = 16 / sizeof(T);
  constexpr int CPR = D / CE;
  if (vec) {
#pragma unroll 4
    for (int idx = threadIdx.x; idx < R * CPR; idx += NT) {
      const int r = idx / CPR, c = (idx % CPR) * CE;
      T* dst = s + r * LD + c;
      if (r0 + r < nrows && c < d)
        cp_async16(dst, g + (long long)(r0 + r) * sn + c);
      else
        *reinterpret_cast<uint4*>(dst) = make_uint4(0, 0, 0, 0);
    }
  } else {
    for (int idx = threadIdx.x; idx < R * D; idx += NT) {
      const int r = idx / D, c = idx % D;
      s[r * LD + c] = (r0 + r < nrows && c < d) ? g[(long long)(r0 + r) * sn + c] : from_f<T>(0.f);
    }
  }
}

}  // namespace colt5::kernels::cuda::tiles
