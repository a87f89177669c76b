// Fused flash-style attention, CUDA (semantics: kernels/cpu/flash_attention.h).
//
// Forward (FlashAttention-2 style): one block per (query tile of BM rows, b*h,
// head-dim chunk). Each warp owns 16*MT query rows; K/V tiles of BN keys
// stream through shared memory (cp.async, double-buffered); S = Q K^T and
// O += P V on tensor cores with the online softmax in registers (log2 domain).
// The null key is folded into the initial softmax state (m = s_null, l = 1,
// O = null_v), so the key tiles are never shifted or copied.
//
// Backward: (1) a row pass computes D = rowsum(dO * O), lse in log2 units,
// the null key's P and dS, initialises the f32 dq accumulator and partial
// sums for dnull_k/dnull_v; (2) one block per (key tile of BN keys, b*h,
// head-dim chunk) loops over query tiles, recomputes S^T and dP^T (each warp
// owns 16*MK keys), accumulates dK and dV in registers and adds dQ = dS K to
// the f32 accumulator with atomics (float2 red on sm_90); (3) dq is converted
// (and scaled) into the caller's layout and dnull partials are reduced. An
// atomic-free alternative (dK/dV kernel + a separate dQ kernel that recomputes
// S and dP) exists as a tuning variant; it measured 15-40% slower on an H100.
//
// Tensor-core paths (fragment traits in kernels/cuda/mma_tiles.cuh, which also
// explains the fragment layouts and the TF32 k-permutation pairing rule):
// bf16/f16 mma.m16n8k16 with ldmatrix; f32 as TF32 mma.m16n8k8 with scalar
// shared loads, optionally 3xTF32.
#include "kernels/cuda/flash_attention.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>

#include "engine/cuda/check.h"
#include "kernels/cuda/launch_util.h"
#include "kernels/cuda/mma_tiles.cuh"

namespace colt5::kernels::cuda {
namespace {

using namespace tiles;   // kernels/cuda/mma_tiles.cuh
using namespace launch;  // kernels/cuda/launch_util.h

// ------------------------------------------------------------------ forward

struct FwdArgs {
  const void *q, *k, *v, *nk, *nv;
  void* o;
  float* lse;
  const uint8_t* mask;
  long long msb, msh;
  long long qsb, qsh, qsn, ksb, ksh, ksn, vsb, vsh, vsn, osb, osh, osn;
  int H, Nq, Nk, d, causal, offset, vec_in, vec_out;
  float scale_log2;
};

template <class Tr, int D, int NW, int MT, int BN, int DSPLIT, bool QREG>
struct FwdKernel {
  using T = typename Tr::Elem;
  static constexpr int kK = Tr::kK, LD = D + Tr::kPad, BM = NW * 16 * MT, DC = D / DSPLIT, NT = NW * 32;
  static constexpr int KS = D / kK, NS = BN / 8, NO = DC / 8;
  static constexpr size_t smem_bytes() { return (size_t(BM) * LD + 4 * size_t(BN) * LD) * sizeof(T) + 2 * BN; }
};

template <class Tr, int D, int NW, int MT, int BN, int DSPLIT, bool QREG>
__global__ void __launch_bounds__(NW * 32) fa_fwd_kernel(const FwdArgs a) {
  using K = FwdKernel<Tr, D, NW, MT, BN, DSPLIT, QREG>;
  using T = typename K::T;
  using AF = typename Tr::AF;
  using BF = typename Tr::BF;
  constexpr int kK = K::kK, LD = K::LD, BM = K::BM, DC = K::DC, NT = K::NT, KS = K::KS, NS = K::NS, NO = K::NO;

  extern __shared__ __align__(16) unsigned char smem[];
  T* sQ = reinterpret_cast<T*>(smem);
  T* sK = sQ + BM * LD;
  T* sV = sK + 2 * BN * LD;
  uint8_t* sM = reinterpret_cast<uint8_t*>(sV + 2 * BN * LD);

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int m0 = blockIdx.x * BM;
  const int bh = blockIdx.y, b = bh / a.H, h = bh % a.H;
  const int dc0 = blockIdx.z * DC;
  const T* q = static_cast<const T*>(a.q) + b * a.qsb + h * a.qsh;
  const T* k = static_cast<const T*>(a.k) + b * a.ksb + h * a.ksh;
  const T* v = static_cast<const T*>(a.v) + b * a.vsb + h * a.vsh;
  const uint8_t* mrow = a.mask ? a.mask + b * a.msb + h * a.msh : nullptr;
  const bool vec = a.vec_in != 0;

  // Keys this block can see: causal row i sees j <= i + offset.
  int kend = a.Nk;
  if (a.causal) kend = min(a.Nk, max(0, m0 + BM + a.offset));
  const int ntiles = (kend + BN - 1) / BN;

  auto load_kv = [&](int jt, int buf) {
    const int n0 = jt * BN;
    load_tile<T, D, LD, BN, NT>(sK + buf * BN * LD, k, a.ksn, n0, a.Nk, a.d, vec);
    load_tile<T, D, LD, BN, NT>(sV + buf * BN * LD, v, a.vsn, n0, a.Nk, a.d, vec);
    for (int j = tid; j < BN; j += NT) {
      const int key = n0 + j;
      sM[buf * BN + j] = key < a.Nk && (!mrow || mrow[key]);
    }
  };

  load_tile<T, D, LD, BM, NT>(sQ, q, a.qsn, m0, a.Nq, a.d, vec);
  if (ntiles > 0) load_kv(0, 0);
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();

  const int wrow = warp * 16 * MT;  // this warp's first row in the tile
  AF qf[QREG ? MT : 1][QREG ? KS : 1];
  if constexpr (QREG) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int ks = 0; ks < KS; ++ks) Tr::load_a(qf[mt][ks], sQ, LD, wrow + mt * 16, ks * kK);
  }

  // Softmax state per owned row (rows g and g+8 of each m-tile), log2 units.
  // l is a per-thread partial sum (the quad's four partials add up at the end).
  float m_i[MT][2], l_i[MT][2], acc[MT][NO][4];
  if (a.nk) {
    const T* nk = static_cast<const T*>(a.nk) + (long long)h * a.d;
    const T* nv = static_cast<const T*>(a.nv) + (long long)h * a.d;
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const T* qrow = sQ + (wrow + mt * 16 + g + 8 * r) * LD;
        float s = 0.f;
        for (int c = t; c < a.d; c += 4) s += to_f(qrow[c]) * to_f(nk[c]);
        s += __shfl_xor_sync(0xffffffffu, s, 1);
        s += __shfl_xor_sync(0xffffffffu, s, 2);
        m_i[mt][r] = s * a.scale_log2;
        l_i[mt][r] = t == 0 ? 1.f : 0.f;
      }
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int no = 0; no < NO; ++no)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int col = dc0 + no * 8 + 2 * t + (e & 1);
          acc[mt][no][e] = col < a.d ? to_f(nv[col]) : 0.f;
        }
  } else {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
      for (int r = 0; r < 2; ++r) m_i[mt][r] = -kInf, l_i[mt][r] = 0.f;
#pragma unroll
      for (int no = 0; no < NO; ++no)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[mt][no][e] = 0.f;
    }
  }

  for (int jt = 0; jt < ntiles; ++jt) {
    const int buf = jt & 1;
    if (jt + 1 < ntiles) {
      load_kv(jt + 1, buf ^ 1);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const T* cK = sK + buf * BN * LD;
    const T* cV = sV + buf * BN * LD;
    const uint8_t* cM = sM + buf * BN;
    const int n0 = jt * BN;

    // S = Q K^T
    float s[MT][NS][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int ns = 0; ns < NS; ++ns)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[mt][ns][e] = 0.f;
#pragma unroll
    for (int ks = 0; ks < KS; ++ks) {
      AF af[MT];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        if constexpr (QREG)
          af[mt] = qf[mt][ks];
        else
          Tr::load_a(af[mt], sQ, LD, wrow + mt * 16, ks * kK);
      }
#pragma unroll
      for (int np = 0; np < NS / 2; ++np) {
        BF bk[2];
        Tr::load_b_nt2(bk, cK, LD, ks * kK, np * 16);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          Tr::mma(s[mt][2 * np], af[mt], bk[0]);
          Tr::mma(s[mt][2 * np + 1], af[mt], bk[1]);
        }
      }
    }

    // Scale to log2 units, then hide invisible keys.
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int ns = 0; ns < NS; ++ns)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[mt][ns][e] *= a.scale_log2;
    const bool need_mask = mrow != nullptr || n0 + BN > a.Nk || (a.causal && n0 + BN - 1 > m0 + a.offset);
    if (need_mask) {
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int ns = 0; ns < NS; ++ns)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int jl = ns * 8 + 2 * t + (e & 1);
            const int row = m0 + wrow + mt * 16 + g + 8 * (e >> 1);
            const bool vis = cM[jl] && (!a.causal || n0 + jl <= row + a.offset);
            if (!vis) s[mt][ns][e] = -kInf;
          }
    }

    // Online softmax.
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        float mx = -kInf;
#pragma unroll
        for (int ns = 0; ns < NS; ++ns) mx = fmaxf(mx, fmaxf(s[mt][ns][2 * r], s[mt][ns][2 * r + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float m_new = fmaxf(m_i[mt][r], mx);
        const float m_use = m_new == -kInf ? 0.f : m_new;
        const float alpha = ex2(m_i[mt][r] - m_use);
        m_i[mt][r] = m_new;
        float rs = 0.f;
#pragma unroll
        for (int ns = 0; ns < NS; ++ns) {
          const float p0 = ex2(s[mt][ns][2 * r] - m_use), p1 = ex2(s[mt][ns][2 * r + 1] - m_use);
          s[mt][ns][2 * r] = p0;
          s[mt][ns][2 * r + 1] = p1;
          rs += p0 + p1;
        }
        l_i[mt][r] = l_i[mt][r] * alpha + rs;
#pragma unroll
        for (int no = 0; no < NO; ++no) {
          acc[mt][no][2 * r] *= alpha;
          acc[mt][no][2 * r + 1] *= alpha;
        }
      }

    // O += P V
#pragma unroll
    for (int ks = 0; ks < BN / kK; ++ks) {
      AF pa[MT];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) Tr::c_to_a(pa[mt], &s[mt][ks * (kK / 8)]);
#pragma unroll
      for (int np = 0; np < NO / 2; ++np) {
        BF bv[2];
        Tr::load_b_t2(bv, cV, LD, ks * kK, dc0 + np * 16);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          Tr::mma(acc[mt][2 * np], pa[mt], bv[0]);
          Tr::mma(acc[mt][2 * np + 1], pa[mt], bv[1]);
        }
      }
    }
    __syncthreads();
  }

  // Epilogue: normalise, write out and lse.
  T* o = static_cast<T*>(a.o) + b * a.osb + h * a.osh;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float l = l_i[mt][r];
      l += __shfl_xor_sync(0xffffffffu, l, 1);
      l += __shfl_xor_sync(0xffffffffu, l, 2);
      const int row = m0 + wrow + mt * 16 + g + 8 * r;
      const float inv = l > 0.f ? 1.f / l : 0.f;
      if (row < a.Nq) {
        if (blockIdx.z == 0 && t == 0)
          a.lse[(long long)bh * a.Nq + row] = l > 0.f ? (m_i[mt][r] + __log2f(l)) * kLn2 : -kInf;
        T* orow = o + (long long)row * a.osn;
#pragma unroll
        for (int no = 0; no < NO; ++no) {
          const int col = dc0 + no * 8 + 2 * t;
          const float x0 = acc[mt][no][2 * r] * inv, x1 = acc[mt][no][2 * r + 1] * inv;
          store_pair(orow, col, a.d, a.vec_out, x0, x1);
        }
      }
    }
}

// ------------------------------------------------------------------ backward

struct BwdArgs {
  const void *q, *k, *v, *dout;
  const uint8_t* mask;
  long long msb, msh;
  long long qsb, qsh, qsn, ksb, ksh, ksn, vsb, vsh, vsn, dosb, dosh, dosn;
  void *dk, *dv;
  long long dksb, dksh, dksn, dvsb, dvsh, dvsn;
  const float* lse2;  // (B*H, Nq) lse * log2(e); +inf for rows without visible keys
  const float* Dv;    // (B*H, Nq)
  float* dq_acc;      // (B*H, Nq, d)
  int H, Nq, Nk, d, causal, offset, vec_in, vec_out;
  float scale_log2, scale;
};

template <class Tr, int D, int NW, int MK, int BM, int DSPLIT, bool DQA = true>
struct BwdKernel {
  using T = typename Tr::Elem;
  static constexpr int kK = Tr::kK, LD = D + Tr::kPad, BN = NW * 16 * MK, DC = D / DSPLIT, NT = NW * 32;
  static constexpr int LDS = BM + Tr::kPad;  // dS^T rows (keys) of BM queries
  static constexpr int KS = D / kK, NQ = BM / 8, NO = DC / 8;
  static constexpr size_t smem_bytes() {
    return (2 * size_t(BN) * LD + 4 * size_t(BM) * LD + (DQA ? size_t(BN) * LDS : 0)) * sizeof(T) +
           4 * BM * sizeof(float) + BN;
  }
};

// DQA: also compute dQ (dS to shared memory, dQ = dS K, atomics into the f32
// accumulator). Without it only dK and dV are computed (fa_bwd_dq_kernel does dQ).
template <class Tr, int D, int NW, int MK, int BM, int DSPLIT, bool DQA>
__global__ void __launch_bounds__(NW * 32) fa_bwd_kernel(const BwdArgs a) {
  using K = BwdKernel<Tr, D, NW, MK, BM, DSPLIT, DQA>;
  using T = typename K::T;
  using AF = typename Tr::AF;
  using BF = typename Tr::BF;
  constexpr int kK = K::kK, LD = K::LD, BN = K::BN, DC = K::DC, NT = K::NT, LDS = K::LDS, KS = K::KS,
                NQ = K::NQ, NO = K::NO;
  static_assert(DC % 32 == 0 && BM % 16 == 0, "tile shape");

  extern __shared__ __align__(16) unsigned char smem[];
  T* sK = reinterpret_cast<T*>(smem);
  T* sV = sK + BN * LD;
  T* sQ = sV + BN * LD;       // 2 buffers
  T* sdO = sQ + 2 * BM * LD;  // 2 buffers
  T* sdS = sdO + 2 * BM * LD;
  float* sL = reinterpret_cast<float*>(sdS + (DQA ? BN * LDS : 0));  // 2 buffers
  float* sD = sL + 2 * BM;                               // 2 buffers
  uint8_t* sMk = reinterpret_cast<uint8_t*>(sD + 2 * BM);

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int n0 = blockIdx.x * BN;
  const int bh = blockIdx.y, b = bh / a.H, h = bh % a.H;
  const int dc0 = blockIdx.z * DC;
  const T* q = static_cast<const T*>(a.q) + b * a.qsb + h * a.qsh;
  const T* k = static_cast<const T*>(a.k) + b * a.ksb + h * a.ksh;
  const T* v = static_cast<const T*>(a.v) + b * a.vsb + h * a.vsh;
  const T* dout = static_cast<const T*>(a.dout) + b * a.dosb + h * a.dosh;
  const uint8_t* mrow = a.mask ? a.mask + b * a.msb + h * a.msh : nullptr;
  const float* lse2 = a.lse2 + (long long)bh * a.Nq;
  const float* Dv = a.Dv + (long long)bh * a.Nq;
  float* dq_acc = a.dq_acc + (long long)bh * a.Nq * a.d;
  const bool vec = a.vec_in != 0;

  load_tile<T, D, LD, BN, NT>(sK, k, a.ksn, n0, a.Nk, a.d, vec);
  load_tile<T, D, LD, BN, NT>(sV, v, a.vsn, n0, a.Nk, a.d, vec);
  for (int j = tid; j < BN; j += NT) {
    const int key = n0 + j;
    sMk[j] = key < a.Nk && (!mrow || mrow[key]);
  }
  auto load_q = [&](int it, int buf) {
    const int i0 = it * BM;
    load_tile<T, D, LD, BM, NT>(sQ + buf * BM * LD, q, a.qsn, i0, a.Nq, a.d, vec);
    load_tile<T, D, LD, BM, NT>(sdO + buf * BM * LD, dout, a.dosn, i0, a.Nq, a.d, vec);
    for (int j = tid; j < BM; j += NT) {
      const int i = i0 + j;
      sL[buf * BM + j] = i < a.Nq ? lse2[i] : kInf;
      sD[buf * BM + j] = i < a.Nq ? Dv[i] : 0.f;
    }
  };
  // Causal: query i sees key j iff j <= i + offset, so start at i = n0 - offset.
  const int istart = a.causal ? max(0, n0 - a.offset) : 0;
  const int it0 = istart / BM, nit = (a.Nq + BM - 1) / BM;
  if (it0 < nit) load_q(it0, 0);
  cp_async_commit();

  float dk[MK][NO][4], dv[MK][NO][4];
#pragma unroll
  for (int mk = 0; mk < MK; ++mk)
#pragma unroll
    for (int no = 0; no < NO; ++no)
#pragma unroll
      for (int e = 0; e < 4; ++e) dk[mk][no][e] = 0.f, dv[mk][no][e] = 0.f;

  const int wkey = warp * 16 * MK;  // this warp's first key in the tile
  for (int it = it0; it < nit; ++it) {
    const int buf = (it - it0) & 1;
    if (it + 1 < nit) {
      load_q(it + 1, buf ^ 1);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const T* cQ = sQ + buf * BM * LD;
    const T* cdO = sdO + buf * BM * LD;
    const float* cL = sL + buf * BM;
    const float* cD = sD + buf * BM;
    const int i0 = it * BM;

    // S^T = K Q^T and dP^T = V dO^T (this warp's keys x BM queries).
    float st[MK][NQ][4], dpt[MK][NQ][4];
#pragma unroll
    for (int mk = 0; mk < MK; ++mk)
#pragma unroll
      for (int nq = 0; nq < NQ; ++nq)
#pragma unroll
        for (int e = 0; e < 4; ++e) st[mk][nq][e] = 0.f, dpt[mk][nq][e] = 0.f;
#pragma unroll
    for (int ks = 0; ks < KS; ++ks) {
      AF ka[MK], va[MK];
#pragma unroll
      for (int mk = 0; mk < MK; ++mk) {
        Tr::load_a(ka[mk], sK, LD, wkey + mk * 16, ks * kK);
        Tr::load_a(va[mk], sV, LD, wkey + mk * 16, ks * kK);
      }
#pragma unroll
      for (int np = 0; np < NQ / 2; ++np) {
        BF bq[2], bo[2];
        Tr::load_b_nt2(bq, cQ, LD, ks * kK, np * 16);
        Tr::load_b_nt2(bo, cdO, LD, ks * kK, np * 16);
#pragma unroll
        for (int mk = 0; mk < MK; ++mk) {
          Tr::mma(st[mk][2 * np], ka[mk], bq[0]);
          Tr::mma(st[mk][2 * np + 1], ka[mk], bq[1]);
          Tr::mma(dpt[mk][2 * np], va[mk], bo[0]);
          Tr::mma(dpt[mk][2 * np + 1], va[mk], bo[1]);
        }
      }
    }

    // P^T = exp2(S^T * scale_log2 - lse2), dS^T = P^T (dP^T - D).
    const bool need_mask = mrow != nullptr || n0 + BN > a.Nk || (a.causal && n0 + BN - 1 > i0 + a.offset);
#pragma unroll
    for (int mk = 0; mk < MK; ++mk)
#pragma unroll
      for (int nq = 0; nq < NQ; ++nq)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int kl = wkey + mk * 16 + g + 8 * (e >> 1);
          const int ql = nq * 8 + 2 * t + (e & 1);
          bool vis = true;
          if (need_mask) vis = sMk[kl] && (!a.causal || n0 + kl <= i0 + ql + a.offset);
          const float p = vis ? ex2(st[mk][nq][e] * a.scale_log2 - cL[ql]) : 0.f;
          st[mk][nq][e] = p;
          dpt[mk][nq][e] = p * (dpt[mk][nq][e] - cD[ql]);
        }

    // dV += P^T dO, dK += dS^T Q (over this block's head-dim chunk).
#pragma unroll
    for (int ks = 0; ks < BM / kK; ++ks) {
      AF pa[MK], da[MK];
#pragma unroll
      for (int mk = 0; mk < MK; ++mk) {
        Tr::c_to_a(pa[mk], &st[mk][ks * (kK / 8)]);
        Tr::c_to_a(da[mk], &dpt[mk][ks * (kK / 8)]);
      }
#pragma unroll
      for (int np = 0; np < NO / 2; ++np) {
        BF bo[2], bq[2];
        Tr::load_b_t2(bo, cdO, LD, ks * kK, dc0 + np * 16);
        Tr::load_b_t2(bq, cQ, LD, ks * kK, dc0 + np * 16);
#pragma unroll
        for (int mk = 0; mk < MK; ++mk) {
          Tr::mma(dv[mk][2 * np], pa[mk], bo[0]);
          Tr::mma(dv[mk][2 * np + 1], pa[mk], bo[1]);
          Tr::mma(dk[mk][2 * np], da[mk], bq[0]);
          Tr::mma(dk[mk][2 * np + 1], da[mk], bq[1]);
        }
      }
    }

    if constexpr (DQA) {
      // dS^T to shared memory for dQ = dS K.
#pragma unroll
      for (int mk = 0; mk < MK; ++mk)
#pragma unroll
        for (int nq = 0; nq < NQ; ++nq)
#pragma unroll
          for (int r = 0; r < 2; ++r) {
            const int kl = wkey + mk * 16 + g + 8 * r;
            *reinterpret_cast<typename Pair<T>::type*>(sdS + kl * LDS + nq * 8 + 2 * t) =
                Pair<T>::make(dpt[mk][nq][2 * r], dpt[mk][nq][2 * r + 1]);
          }
      __syncthreads();

      // dQ (BM x DC) += dS K, in tasks of 16 rows x 32 columns, added atomically.
      constexpr int MQ = BM / 16, NCH = DC / 32;
      for (int task = warp; task < MQ * NCH; task += NW) {
        const int mq = task % MQ, ch = task / MQ;
        float c[4][4];
#pragma unroll
        for (int n = 0; n < 4; ++n)
#pragma unroll
          for (int e = 0; e < 4; ++e) c[n][e] = 0.f;
#pragma unroll
        for (int ks = 0; ks < BN / kK; ++ks) {
          AF af;
          Tr::load_a_t(af, sdS, LDS, mq * 16, ks * kK);
#pragma unroll
          for (int np = 0; np < 2; ++np) {
            BF bk[2];
            Tr::load_b_t2(bk, sK, LD, ks * kK, dc0 + ch * 32 + np * 16);
            Tr::mma(c[2 * np], af, bk[0]);
            Tr::mma(c[2 * np + 1], af, bk[1]);
          }
        }
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const int row = i0 + mq * 16 + g + 8 * r;
          if (row >= a.Nq) continue;
          float* dst = dq_acc + (long long)row * a.d;
#pragma unroll
          for (int n = 0; n < 4; ++n) {
            const int col = dc0 + ch * 32 + n * 8 + 2 * t;
            const float x0 = c[n][2 * r], x1 = c[n][2 * r + 1];
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
            if ((a.d & 1) == 0 && col + 1 < a.d) {
              atomicAdd(reinterpret_cast<float2*>(dst + col), make_float2(x0, x1));
              continue;
            }
#endif
            if (col < a.d) atomicAdd(dst + col, x0);
            if (col + 1 < a.d) atomicAdd(dst + col + 1, x1);
          }
        }
      }
      __syncthreads();
    } else {
      __syncthreads();  // before the next tile overwrites the Q/dO buffer read above
    }
  }

  // Epilogue: dK (scaled) and dV for this warp's keys.
  T* dkp = static_cast<T*>(a.dk) + b * a.dksb + h * a.dksh;
  T* dvp = static_cast<T*>(a.dv) + b * a.dvsb + h * a.dvsh;
#pragma unroll
  for (int mk = 0; mk < MK; ++mk)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int key = n0 + wkey + mk * 16 + g + 8 * r;
      if (key >= a.Nk) continue;
      T* krow = dkp + (long long)key * a.dksn;
      T* vrow = dvp + (long long)key * a.dvsn;
#pragma unroll
      for (int no = 0; no < NO; ++no) {
        const int col = dc0 + no * 8 + 2 * t;
        const float k0 = dk[mk][no][2 * r] * a.scale, k1 = dk[mk][no][2 * r + 1] * a.scale;
        const float v0 = dv[mk][no][2 * r], v1 = dv[mk][no][2 * r + 1];
        store_pair(krow, col, a.d, a.vec_out, k0, k1);
        store_pair(vrow, col, a.d, a.vec_out, v0, v1);
      }
    }
}

// dQ without atomics (used with fa_bwd_kernel<..., DQA = false>): one block per
// (query tile of BM rows, b*h) loops over the key tiles like the forward,
// recomputing S = Q K^T and dP = dO V^T, and accumulates dQ = dS K in
// registers; the result is added to the f32 accumulator (which holds the null
// key's term from the row pass), each element by exactly one thread.
template <class Tr, int D, int NW, int MT, int BN, bool QREG>
struct DqKernel {
  using T = typename Tr::Elem;
  static constexpr int kK = Tr::kK, LD = D + Tr::kPad, BM = NW * 16 * MT, NT = NW * 32;
  static constexpr int KS = D / kK, NS = BN / 8, NO = D / 8;
  static constexpr size_t smem_bytes() { return (2 * size_t(BM) * LD + 4 * size_t(BN) * LD) * sizeof(T) + 2 * BN; }
};

template <class Tr, int D, int NW, int MT, int BN, bool QREG>
__global__ void __launch_bounds__(NW * 32) fa_bwd_dq_kernel(const BwdArgs a) {
  using K = DqKernel<Tr, D, NW, MT, BN, QREG>;
  using T = typename K::T;
  using AF = typename Tr::AF;
  using BF = typename Tr::BF;
  constexpr int kK = K::kK, LD = K::LD, BM = K::BM, NT = K::NT, KS = K::KS, NS = K::NS, NO = K::NO;

  extern __shared__ __align__(16) unsigned char smem[];
  T* sQ = reinterpret_cast<T*>(smem);
  T* sdO = sQ + BM * LD;
  T* sK = sdO + BM * LD;  // 2 buffers
  T* sV = sK + 2 * BN * LD;  // 2 buffers
  uint8_t* sM = reinterpret_cast<uint8_t*>(sV + 2 * BN * LD);

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int m0 = blockIdx.x * BM;
  const int bh = blockIdx.y, b = bh / a.H, h = bh % a.H;
  const T* q = static_cast<const T*>(a.q) + b * a.qsb + h * a.qsh;
  const T* k = static_cast<const T*>(a.k) + b * a.ksb + h * a.ksh;
  const T* v = static_cast<const T*>(a.v) + b * a.vsb + h * a.vsh;
  const T* dout = static_cast<const T*>(a.dout) + b * a.dosb + h * a.dosh;
  const uint8_t* mrow = a.mask ? a.mask + b * a.msb + h * a.msh : nullptr;
  const bool vec = a.vec_in != 0;

  int kend = a.Nk;
  if (a.causal) kend = min(a.Nk, max(0, m0 + BM + a.offset));
  const int ntiles = (kend + BN - 1) / BN;

  auto load_kv = [&](int jt, int buf) {
    const int n0 = jt * BN;
    load_tile<T, D, LD, BN, NT>(sK + buf * BN * LD, k, a.ksn, n0, a.Nk, a.d, vec);
    load_tile<T, D, LD, BN, NT>(sV + buf * BN * LD, v, a.vsn, n0, a.Nk, a.d, vec);
    for (int j = tid; j < BN; j += NT) {
      const int key = n0 + j;
      sM[buf * BN + j] = key < a.Nk && (!mrow || mrow[key]);
    }
  };
  load_tile<T, D, LD, BM, NT>(sQ, q, a.qsn, m0, a.Nq, a.d, vec);
  load_tile<T, D, LD, BM, NT>(sdO, dout, a.dosn, m0, a.Nq, a.d, vec);
  if (ntiles > 0) load_kv(0, 0);
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();

  const int wrow = warp * 16 * MT;
  AF qf[QREG ? MT : 1][QREG ? KS : 1], of[QREG ? MT : 1][QREG ? KS : 1];
  if constexpr (QREG) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int ks = 0; ks < KS; ++ks) {
        Tr::load_a(qf[mt][ks], sQ, LD, wrow + mt * 16, ks * kK);
        Tr::load_a(of[mt][ks], sdO, LD, wrow + mt * 16, ks * kK);
      }
  }
  // Per owned row: lse in log2 units and D.
  float l2[MT][2], Dr[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = m0 + wrow + mt * 16 + g + 8 * r;
      l2[mt][r] = row < a.Nq ? a.lse2[(long long)bh * a.Nq + row] : kInf;
      Dr[mt][r] = row < a.Nq ? a.Dv[(long long)bh * a.Nq + row] : 0.f;
    }
  float acc[MT][NO][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int no = 0; no < NO; ++no)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[mt][no][e] = 0.f;

  for (int jt = 0; jt < ntiles; ++jt) {
    const int buf = jt & 1;
    if (jt + 1 < ntiles) {
      load_kv(jt + 1, buf ^ 1);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const T* cK = sK + buf * BN * LD;
    const T* cV = sV + buf * BN * LD;
    const uint8_t* cM = sM + buf * BN;
    const int n0 = jt * BN;

    // S = Q K^T, dP = dO V^T
    float s[MT][NS][4], dp[MT][NS][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int ns = 0; ns < NS; ++ns)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[mt][ns][e] = 0.f, dp[mt][ns][e] = 0.f;
#pragma unroll
    for (int ks = 0; ks < KS; ++ks) {
      AF aq[MT], ao[MT];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        if constexpr (QREG) {
          aq[mt] = qf[mt][ks];
          ao[mt] = of[mt][ks];
        } else {
          Tr::load_a(aq[mt], sQ, LD, wrow + mt * 16, ks * kK);
          Tr::load_a(ao[mt], sdO, LD, wrow + mt * 16, ks * kK);
        }
      }
#pragma unroll
      for (int np = 0; np < NS / 2; ++np) {
        BF bk[2], bv[2];
        Tr::load_b_nt2(bk, cK, LD, ks * kK, np * 16);
        Tr::load_b_nt2(bv, cV, LD, ks * kK, np * 16);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          Tr::mma(s[mt][2 * np], aq[mt], bk[0]);
          Tr::mma(s[mt][2 * np + 1], aq[mt], bk[1]);
          Tr::mma(dp[mt][2 * np], ao[mt], bv[0]);
          Tr::mma(dp[mt][2 * np + 1], ao[mt], bv[1]);
        }
      }
    }

    // dS = P (dP - D), P = exp2(S * scale_log2 - lse2); into s.
    const bool need_mask = mrow != nullptr || n0 + BN > a.Nk || (a.causal && n0 + BN - 1 > m0 + a.offset);
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int ns = 0; ns < NS; ++ns)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int jl = ns * 8 + 2 * t + (e & 1);
          bool vis = true;
          if (need_mask) {
            const int row = m0 + wrow + mt * 16 + g + 8 * (e >> 1);
            vis = cM[jl] && (!a.causal || n0 + jl <= row + a.offset);
          }
          const float p = vis ? ex2(s[mt][ns][e] * a.scale_log2 - l2[mt][e >> 1]) : 0.f;
          s[mt][ns][e] = p * (dp[mt][ns][e] - Dr[mt][e >> 1]);
        }

    // dQ += dS K
#pragma unroll
    for (int ks = 0; ks < BN / kK; ++ks) {
      AF da[MT];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) Tr::c_to_a(da[mt], &s[mt][ks * (kK / 8)]);
#pragma unroll
      for (int np = 0; np < NO / 2; ++np) {
        BF bk[2];
        Tr::load_b_t2(bk, cK, LD, ks * kK, np * 16);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          Tr::mma(acc[mt][2 * np], da[mt], bk[0]);
          Tr::mma(acc[mt][2 * np + 1], da[mt], bk[1]);
        }
      }
    }
    __syncthreads();
  }

  float* dq_acc = a.dq_acc + (long long)bh * a.Nq * a.d;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = m0 + wrow + mt * 16 + g + 8 * r;
      if (row >= a.Nq) continue;
      float* dst = dq_acc + (long long)row * a.d;
#pragma unroll
      for (int no = 0; no < NO; ++no) {
        const int col = no * 8 + 2 * t;
        if (col < a.d) dst[col] += acc[mt][no][2 * r];
        if (col + 1 < a.d) dst[col + 1] += acc[mt][no][2 * r + 1];
      }
    }
}

// Row pass before the main backward kernel. One warp per row, 8 warps and
// kPreRows rows per block; lane owns columns lane + 32*c.
constexpr int kPreRows = 64;

struct PreArgs {
  const void *q, *o, *dout, *nk, *nv;
  const float* lse;
  long long qsb, qsh, qsn, osb, osh, osn, dosb, dosh, dosn;
  float *lse2, *Dv, *dq_acc, *part;  // part: (B*H, nblk, 2, d)
  int H, Nq, d, nblk;
  float scale;
};

template <class T>
__global__ void __launch_bounds__(256) fa_bwd_pre_kernel(const PreArgs a) {
  __shared__ float red[8][2][256];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int bh = blockIdx.y, b = bh / a.H, h = bh % a.H;
  const T* nk = a.nk ? static_cast<const T*>(a.nk) + (long long)h * a.d : nullptr;
  const T* nv = a.nv ? static_cast<const T*>(a.nv) + (long long)h * a.d : nullptr;
  float pk[8], pv[8];
#pragma unroll
  for (int c = 0; c < 8; ++c) pk[c] = 0.f, pv[c] = 0.f;
  auto warp_sum = [](float x) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
  };
  for (int r = 0; r < kPreRows / 8; ++r) {
    const int i = blockIdx.x * kPreRows + warp * (kPreRows / 8) + r;
    if (i >= a.Nq) break;
    const T* qrow = static_cast<const T*>(a.q) + b * a.qsb + h * a.qsh + (long long)i * a.qsn;
    const T* orow = static_cast<const T*>(a.o) + b * a.osb + h * a.osh + (long long)i * a.osn;
    const T* drow = static_cast<const T*>(a.dout) + b * a.dosb + h * a.dosh + (long long)i * a.dosn;
    float dov[8];
    float D = 0.f;
#pragma unroll
    for (int c = 0; c < 8; ++c) {
      const int col = lane + 32 * c;
      dov[c] = col < a.d ? to_f(drow[col]) : 0.f;
      if (col < a.d) D += dov[c] * to_f(orow[col]);
    }
    D = warp_sum(D);
    const long long ri = (long long)bh * a.Nq + i;
    const float lse = a.lse[ri];
    float* dqa = a.dq_acc + ri * a.d;
    if (lane == 0) {
      a.Dv[ri] = D;
      a.lse2[ri] = lse == -kInf ? kInf : lse * kLog2e;
    }
    if (nk) {
      float s = 0.f, dp = 0.f;
#pragma unroll
      for (int c = 0; c < 8; ++c) {
        const int col = lane + 32 * c;
        if (col < a.d) {
          s += to_f(qrow[col]) * to_f(nk[col]);
          dp += dov[c] * to_f(nv[col]);
        }
      }
      s = warp_sum(s) * a.scale;
      dp = warp_sum(dp);
      const float p = lse == -kInf ? 0.f : __expf(s - lse);
      const float ds = p * (dp - D);
#pragma unroll
      for (int c = 0; c < 8; ++c) {
        const int col = lane + 32 * c;
        if (col < a.d) {
          dqa[col] = ds * to_f(nk[col]);
          pk[c] += ds * to_f(qrow[col]);
          pv[c] += p * dov[c];
        }
      }
    } else {
#pragma unroll
      for (int c = 0; c < 8; ++c)
        if (lane + 32 * c < a.d) dqa[lane + 32 * c] = 0.f;
    }
  }
  if (!nk) return;
#pragma unroll
  for (int c = 0; c < 8; ++c) {
    red[warp][0][lane + 32 * c] = pk[c];
    red[warp][1][lane + 32 * c] = pv[c];
  }
  __syncthreads();
  float* part = a.part + ((long long)bh * a.nblk + blockIdx.x) * 2 * a.d;
  for (int x = threadIdx.x; x < 2 * a.d; x += blockDim.x) {
    const int which = x / a.d, col = x % a.d;
    float s = 0.f;
#pragma unroll
    for (int w = 0; w < 8; ++w) s += red[w][which][col];
    part[x] = s;
  }
}

template <class T>
__global__ void fa_dq_convert_kernel(T* dq, long long sb, long long sh, long long sn, const float* acc, int H, int Nq,
                                     int d, float scale, long long total) {
  for (long long x = blockIdx.x * (long long)blockDim.x + threadIdx.x; x < total;
       x += (long long)gridDim.x * blockDim.x) {
    const int c = int(x % d);
    const long long row = x / d;
    const int i = int(row % Nq);
    const long long bh = row / Nq;
    const long long b = bh / H, h = bh % H;
    dq[b * sb + h * sh + i * sn + c] = from_f<T>(acc[x] * scale);
  }
}

template <class T>
__global__ void fa_dnull_reduce_kernel(T* dnk, T* dnv, const float* part, int B, int H, int nblk, int d, float scale) {
  const int x = blockIdx.x * blockDim.x + threadIdx.x;
  if (x >= H * d) return;
  const int h = x / d, c = x % d;
  float sk = 0.f, sv = 0.f;
  for (int b = 0; b < B; ++b)
    for (int blk = 0; blk < nblk; ++blk) {
      const float* p = part + ((long long)(b * H + h) * nblk + blk) * 2 * d;
      sk += p[c];
      sv += p[d + c];
    }
  dnk[x] = from_f<T>(sk * scale);
  dnv[x] = from_f<T>(sv);
}

template <class T>
__global__ void zero_kernel(T* p, long long sb, long long sh, long long sn, int H, int N, int d, long long total) {
  for (long long x = blockIdx.x * (long long)blockDim.x + threadIdx.x; x < total;
       x += (long long)gridDim.x * blockDim.x) {
    const int c = int(x % d);
    const long long row = x / d;
    const long long i = row % N, bh = row / N;
    p[(bh / H) * sb + (bh % H) * sh + i * sn + c] = from_f<T>(0.f);
  }
}

// ------------------------------------------------------------------ dispatch

// Kernel configurations per (dtype class, padded head dim).
//   Fwd: NW warps, MT m-tiles of 16 query rows per warp, BN keys per tile,
//        DSPLIT head-dim chunks (grid z), QREG: Q fragments held in registers.
//   Bwd: NW warps, MK m-tiles of 16 keys per warp, BM queries per tile, DSPLIT.
template <class Tr, int D> struct Cfg;
template <class T> struct Cfg<MmaHalf<T>, 32> {
  using Fwd = FwdKernel<MmaHalf<T>, 32, 4, 2, 64, 1, true>;
  using Bwd = BwdKernel<MmaHalf<T>, 32, 4, 1, 64, 1>;
};
// d = 64 and 128 half precision: the fastest of the variants measured on an
// H100 (bench_flash_attention_kernels --variants; all variants are tested).
template <class T> struct Cfg<MmaHalf<T>, 64> {
  using Fwd = FwdKernel<MmaHalf<T>, 64, 4, 2, 64, 1, false>;
  using Bwd = BwdKernel<MmaHalf<T>, 64, 4, 2, 32, 1>;  // Nk >= 4096; shorter: BwdV<., 64, 1>
};
template <class T> struct Cfg<MmaHalf<T>, 128> {
  using Fwd = FwdKernel<MmaHalf<T>, 128, 4, 2, 64, 1, false>;
  using Bwd = BwdKernel<MmaHalf<T>, 128, 8, 1, 64, 1>;
};
template <class T> struct Cfg<MmaHalf<T>, 256> {
  using Fwd = FwdKernel<MmaHalf<T>, 256, 4, 1, 32, 2, true>;
  using Bwd = BwdKernel<MmaHalf<T>, 256, 4, 1, 32, 2>;
};
template <> struct Cfg<MmaTf32<false>, 32> {
  using Fwd = FwdKernel<MmaTf32<false>, 32, 4, 2, 64, 1, true>;
  using Bwd = BwdKernel<MmaTf32<false>, 32, 4, 1, 64, 1>;
};
template <> struct Cfg<MmaTf32<false>, 64> {
  using Fwd = FwdKernel<MmaTf32<false>, 64, 4, 2, 64, 1, true>;
  using Bwd = BwdKernel<MmaTf32<false>, 64, 4, 1, 32, 1>;
};
template <> struct Cfg<MmaTf32<false>, 128> {
  using Fwd = FwdKernel<MmaTf32<false>, 128, 4, 1, 32, 1, true>;
  using Bwd = BwdKernel<MmaTf32<false>, 128, 4, 1, 32, 1>;
};
template <> struct Cfg<MmaTf32<false>, 256> {
  using Fwd = FwdKernel<MmaTf32<false>, 256, 4, 1, 32, 2, false>;
  using Bwd = BwdKernel<MmaTf32<false>, 256, 2, 1, 16, 2>;
};
template <> struct Cfg<MmaTf32<true>, 32> {
  using Fwd = FwdKernel<MmaTf32<true>, 32, 4, 1, 64, 1, true>;
  using Bwd = BwdKernel<MmaTf32<true>, 32, 4, 1, 64, 1>;
};
template <> struct Cfg<MmaTf32<true>, 64> {
  using Fwd = FwdKernel<MmaTf32<true>, 64, 4, 1, 64, 1, false>;
  using Bwd = BwdKernel<MmaTf32<true>, 64, 4, 1, 32, 1>;
};
template <> struct Cfg<MmaTf32<true>, 128> {
  using Fwd = FwdKernel<MmaTf32<true>, 128, 4, 1, 32, 1, false>;
  using Bwd = BwdKernel<MmaTf32<true>, 128, 4, 1, 32, 1>;
};
template <> struct Cfg<MmaTf32<true>, 256> {
  using Fwd = FwdKernel<MmaTf32<true>, 256, 4, 1, 32, 2, false>;
  using Bwd = BwdKernel<MmaTf32<true>, 256, 2, 1, 16, 2>;
};

template <class F> struct FwdLaunch;
template <class Tr, int D, int NW, int MT, int BN, int DSPLIT, bool QREG>
struct FwdLaunch<FwdKernel<Tr, D, NW, MT, BN, DSPLIT, QREG>> {
  using K = FwdKernel<Tr, D, NW, MT, BN, DSPLIT, QREG>;
  static void run(const FwdArgs& a, int BH, cudaStream_t s) {
    auto fn = fa_fwd_kernel<Tr, D, NW, MT, BN, DSPLIT, QREG>;
    prepare(fn, K::smem_bytes(), "cuda::flash_attention_forward");
    dim3 grid((a.Nq + K::BM - 1) / K::BM, BH, DSPLIT);
    fn<<<grid, K::NT, K::smem_bytes(), s>>>(a);
    CUDA_CHECK_LAUNCH();
  }
};
template <class F> struct BwdLaunch;
template <class Tr, int D, int NW, int MK, int BM, int DSPLIT, bool DQA>
struct BwdLaunch<BwdKernel<Tr, D, NW, MK, BM, DSPLIT, DQA>> {
  using K = BwdKernel<Tr, D, NW, MK, BM, DSPLIT, DQA>;
  static void run(const BwdArgs& a, int BH, cudaStream_t s) {
    auto fn = fa_bwd_kernel<Tr, D, NW, MK, BM, DSPLIT, DQA>;
    prepare(fn, K::smem_bytes(), "cuda::flash_attention_backward");
    dim3 grid((a.Nk + K::BN - 1) / K::BN, BH, DSPLIT);
    fn<<<grid, K::NT, K::smem_bytes(), s>>>(a);
    CUDA_CHECK_LAUNCH();
  }
};
template <class F> struct DqLaunch {  // F = void: dQ was done by the main kernel
  static void run(const BwdArgs&, int, cudaStream_t) {}
};
template <class Tr, int D, int NW, int MT, int BN, bool QREG>
struct DqLaunch<DqKernel<Tr, D, NW, MT, BN, QREG>> {
  using K = DqKernel<Tr, D, NW, MT, BN, QREG>;
  static void run(const BwdArgs& a, int BH, cudaStream_t s) {
    auto fn = fa_bwd_dq_kernel<Tr, D, NW, MT, BN, QREG>;
    prepare(fn, K::smem_bytes(), "cuda::flash_attention_backward");
    dim3 grid((a.Nq + K::BM - 1) / K::BM, BH);
    fn<<<grid, K::NT, K::smem_bytes(), s>>>(a);
    CUDA_CHECK_LAUNCH();
  }
};

// Alternative configurations of the half-precision kernels at d = 64 and 128
// (set_flash_attention_variants). Variant 0 is Cfg; anything not specialised
// falls back to it, so other dtypes and head dims instantiate nothing extra.
// The automatic choice (-1, the default) is variant 0 except where launch_bwd
// says otherwise. Measured on an H100 (ms, fwd or bwd alone; old numbering in
// the run, relabelled here):
//   d=64  8192^2 x16 heads: fwd v0 1.13, v1 1.27, v2 1.18;
//                           bwd v0 3.93, v1 4.39, v2 4.77, v3 5.48, v4 6.03
//   d=64  1024x1025 x16:    fwd v0 0.035, v1 0.030; bwd v0 0.141, v1 0.113, v2 0.118
//   d=128 4096^2 x64 heads: fwd v0 1.90, v1 2.33, v2 2.22;
//                           bwd v0 7.59, v1 8.35, v2 8.90, v3 9.81, v4 9.69
constexpr int kFwdVariants = 3, kBwdVariants = 5;
template <class Tr, int D, int V> struct FwdV { using K = typename Cfg<Tr, D>::Fwd; };
template <class T> struct FwdV<MmaHalf<T>, 64, 1> { using K = FwdKernel<MmaHalf<T>, 64, 8, 1, 128, 1, true>; };
template <class T> struct FwdV<MmaHalf<T>, 64, 2> { using K = FwdKernel<MmaHalf<T>, 64, 8, 2, 64, 1, false>; };
template <class T> struct FwdV<MmaHalf<T>, 128, 1> { using K = FwdKernel<MmaHalf<T>, 128, 8, 1, 64, 1, true>; };
template <class T> struct FwdV<MmaHalf<T>, 128, 2> { using K = FwdKernel<MmaHalf<T>, 128, 4, 2, 32, 1, false>; };
template <class Tr, int D, int V> struct BwdV {
  using K = typename Cfg<Tr, D>::Bwd;
  using Dq = void;
};
template <class T> struct BwdV<MmaHalf<T>, 64, 1> {
  using K = BwdKernel<MmaHalf<T>, 64, 8, 1, 64, 1>;
  using Dq = void;
};
template <class T> struct BwdV<MmaHalf<T>, 64, 2> {
  using K = BwdKernel<MmaHalf<T>, 64, 4, 1, 64, 1>;
  using Dq = void;
};
template <class T> struct BwdV<MmaHalf<T>, 64, 3> {
  using K = BwdKernel<MmaHalf<T>, 64, 8, 1, 64, 1, false>;
  using Dq = DqKernel<MmaHalf<T>, 64, 8, 1, 64, true>;
};
template <class T> struct BwdV<MmaHalf<T>, 64, 4> {
  using K = BwdKernel<MmaHalf<T>, 64, 4, 1, 64, 1, false>;
  using Dq = DqKernel<MmaHalf<T>, 64, 4, 1, 64, true>;
};
template <class T> struct BwdV<MmaHalf<T>, 128, 1> {
  using K = BwdKernel<MmaHalf<T>, 128, 8, 1, 32, 1>;
  using Dq = void;
};
template <class T> struct BwdV<MmaHalf<T>, 128, 2> {
  using K = BwdKernel<MmaHalf<T>, 128, 4, 1, 32, 1>;
  using Dq = void;
};
template <class T> struct BwdV<MmaHalf<T>, 128, 3> {
  using K = BwdKernel<MmaHalf<T>, 128, 8, 1, 32, 1, false>;
  using Dq = DqKernel<MmaHalf<T>, 128, 8, 1, 64, false>;
};
template <class T> struct BwdV<MmaHalf<T>, 128, 4> {
  using K = BwdKernel<MmaHalf<T>, 128, 4, 1, 32, 1, false>;
  using Dq = DqKernel<MmaHalf<T>, 128, 4, 1, 64, false>;
};

std::atomic<int> g_fwd_variant{-1}, g_bwd_variant{-1};  // -1: automatic

template <class Tr, int D, int V>
void launch_fwd_v(const FwdArgs& a, int BH, cudaStream_t s) {
  FwdLaunch<typename FwdV<Tr, D, V>::K>::run(a, BH, s);
}
template <class Tr, int D>
void launch_fwd(const FwdArgs& a, int BH, cudaStream_t s) {
  switch (g_fwd_variant.load()) {
    case 1: return launch_fwd_v<Tr, D, 1>(a, BH, s);
    case 2: return launch_fwd_v<Tr, D, 2>(a, BH, s);
    default: return launch_fwd_v<Tr, D, 0>(a, BH, s);
  }
}
template <class Tr, int D, int V>
void launch_bwd_v(const BwdArgs& a, int BH, cudaStream_t s) {
  BwdLaunch<typename BwdV<Tr, D, V>::K>::run(a, BH, s);
  DqLaunch<typename BwdV<Tr, D, V>::Dq>::run(a, BH, s);
}
template <class Tr, int D>
void launch_bwd(const BwdArgs& a, int BH, cudaStream_t s) {
  switch (g_bwd_variant.load()) {
    case 1: return launch_bwd_v<Tr, D, 1>(a, BH, s);
    case 2: return launch_bwd_v<Tr, D, 2>(a, BH, s);
    case 3: return launch_bwd_v<Tr, D, 3>(a, BH, s);
    case 4: return launch_bwd_v<Tr, D, 4>(a, BH, s);
    case 0: return launch_bwd_v<Tr, D, 0>(a, BH, s);
    default:  // automatic
      // d = 64 half precision: 32 keys per warp (MK = 2) wins on long key
      // sequences (8192: 3.93 vs 4.39 ms), 8 warps x 16 keys on short ones
      // (1025: 0.113 vs 0.141 ms); both measured on an H100.
      if constexpr (D == 64 && Tr::kK == 16)
        if (a.Nk < 4096) return launch_bwd_v<Tr, D, 1>(a, BH, s);
      return launch_bwd_v<Tr, D, 0>(a, BH, s);
  }
}

int padded_dim(int64_t d) { return d <= 32 ? 32 : d <= 64 ? 64 : d <= 128 ? 128 : 256; }

// Calls f.template operator()<Tr, D>() for the traits of p's dtype/precision
// and the padded head dim.
template <class F>
void dispatch(const FlashAttentionParams& p, F&& f) {
  auto by_dim = [&]<class Tr>() {
    switch (padded_dim(p.d)) {
      case 32: return f.template operator()<Tr, 32>();
      case 64: return f.template operator()<Tr, 64>();
      case 128: return f.template operator()<Tr, 128>();
      default: return f.template operator()<Tr, 256>();
    }
  };
  switch (p.dtype) {
    case DType::bf16: return by_dim.template operator()<MmaHalf<bf16>>();
    case DType::f16: return by_dim.template operator()<MmaHalf<f16>>();
    case DType::f32:
      if (p.allow_tf32) return by_dim.template operator()<MmaTf32<false>>();
      return by_dim.template operator()<MmaTf32<true>>();
    default: break;
  }
}

void check_cuda_params(const FlashAttentionParams& p, bool backward, const char* op) {
  check_flash_attention_params(p, backward, op);
  COLT5_CHECK(p.dtype == DType::f32 || p.dtype == DType::bf16 || p.dtype == DType::f16, op,
              ": dtype must be f32, bf16 or f16, got ", dtype_name(p.dtype));
  COLT5_CHECK(p.d <= 256, op, ": head dim d must be <= 256, got d=", p.d);
  COLT5_CHECK(p.B * p.H <= 65535, op, ": B*H must be <= 65535, got B=", p.B, " H=", p.H);
  COLT5_CHECK(p.Nq < (int64_t(1) << 30) && p.Nk < (int64_t(1) << 30), op, ": sequence too long: Nq=", p.Nq,
              " Nk=", p.Nk);
}

size_t elem_size(DType t) { return dtype_size(t); }

struct BwdWorkspace {
  size_t lse2 = 0, Dv = 0, dq_acc = 0, part = 0, total = 0;
  int nblk = 0;
};
BwdWorkspace bwd_workspace(const FlashAttentionParams& p) {
  BwdWorkspace w;
  const size_t rows = size_t(p.B * p.H * p.Nq);
  w.nblk = int((p.Nq + kPreRows - 1) / kPreRows);
  w.lse2 = 0;
  w.Dv = round_up(rows * 4);
  w.dq_acc = w.Dv + round_up(rows * 4);
  w.part = w.dq_acc + round_up(rows * size_t(p.d) * 4);
  w.total = w.part + (p.has_null() ? round_up(size_t(p.B * p.H) * w.nblk * 2 * size_t(p.d) * 4) : 0);
  return w;
}

}  // namespace

void set_flash_attention_variants(int forward_variant, int backward_variant) {
  COLT5_CHECK(forward_variant >= -1 && forward_variant < kFwdVariants && backward_variant >= -1 &&
                  backward_variant < kBwdVariants,
              "cuda::set_flash_attention_variants: forward variant must be in [-1, ", kFwdVariants,
              "), backward in [-1, ", kBwdVariants, "), got ", forward_variant, ", ", backward_variant);
  g_fwd_variant = forward_variant;
  g_bwd_variant = backward_variant;
}

size_t flash_attention_forward_workspace_bytes(const FlashAttentionParams&) { return 0; }

void flash_attention_forward(const FlashAttentionParams& p, void*, size_t, cudaStream_t stream) {
  const char* op = "cuda::flash_attention_forward";
  check_cuda_params(p, false, op);
  if (p.B * p.H * p.Nq == 0) return;
  const int64_t ce = 16 / int64_t(elem_size(p.dtype));
  FwdArgs a{};
  a.q = p.q, a.k = p.k, a.v = p.v, a.nk = p.null_k, a.nv = p.null_v, a.o = p.out;
  a.lse = static_cast<float*>(p.lse);
  a.mask = p.mask, a.msb = p.mask_stride_b, a.msh = p.mask_stride_h;
  a.qsb = p.q_stride.b, a.qsh = p.q_stride.h, a.qsn = p.q_stride.n;
  a.ksb = p.k_stride.b, a.ksh = p.k_stride.h, a.ksn = p.k_stride.n;
  a.vsb = p.v_stride.b, a.vsh = p.v_stride.h, a.vsn = p.v_stride.n;
  a.osb = p.out_stride.b, a.osh = p.out_stride.h, a.osn = p.out_stride.n;
  a.H = int(p.H), a.Nq = int(p.Nq), a.Nk = int(p.Nk), a.d = int(p.d);
  a.causal = p.causal, a.offset = int(p.Nk - p.Nq);
  a.scale_log2 = float(p.scale * 1.4426950408889634);
  a.vec_in = p.d % ce == 0 && aligned(p.q, 16) && aligned(p.k, 16) && aligned(p.v, 16) && strides_ok(p.q_stride, ce) &&
             strides_ok(p.k_stride, ce) && strides_ok(p.v_stride, ce);
  a.vec_out = aligned(p.out, 2 * elem_size(p.dtype)) && strides_ok(p.out_stride, 2);
  const int BH = int(p.B * p.H);
  dispatch(p, [&]<class Tr, int D>() { launch_fwd<Tr, D>(a, BH, stream); });
}

size_t flash_attention_backward_workspace_bytes(const FlashAttentionParams& p) { return bwd_workspace(p).total; }

void flash_attention_backward(const FlashAttentionParams& p, void* workspace, size_t workspace_bytes,
                              cudaStream_t stream) {
  const char* op = "cuda::flash_attention_backward";
  check_cuda_params(p, true, op);
  const BwdWorkspace w = bwd_workspace(p);
  COLT5_CHECK(workspace_bytes >= w.total && (w.total == 0 || workspace != nullptr), op, ": workspace of ",
              workspace_bytes, " bytes given, ", w.total, " needed");
  const int BH = int(p.B * p.H);
  const size_t es = elem_size(p.dtype);

  // Degenerate sizes: no query rows means zero dk, dv, dnull.
  if (p.B * p.H * p.Nq == 0) {
    auto zero = [&]<class T>() {
      if (p.B * p.H * p.Nk > 0) {
        const long long tot = p.B * p.H * p.Nk * p.d;
        zero_kernel<T><<<grid_for(tot), 256, 0, stream>>>(static_cast<T*>(p.dk), p.dk_stride.b, p.dk_stride.h,
                                                            p.dk_stride.n, int(p.H), int(p.Nk), int(p.d), tot);
        CUDA_CHECK_LAUNCH();
        zero_kernel<T><<<grid_for(tot), 256, 0, stream>>>(static_cast<T*>(p.dv), p.dv_stride.b, p.dv_stride.h,
                                                            p.dv_stride.n, int(p.H), int(p.Nk), int(p.d), tot);
        CUDA_CHECK_LAUNCH();
      }
      if (p.has_null() && p.H > 0) {
        const long long tot = p.H * p.d;
        zero_kernel<T><<<grid_for(tot), 256, 0, stream>>>(static_cast<T*>(p.dnull_k), 0, 0, 0, 1, 1, int(tot), tot);
        CUDA_CHECK_LAUNCH();
        zero_kernel<T><<<grid_for(tot), 256, 0, stream>>>(static_cast<T*>(p.dnull_v), 0, 0, 0, 1, 1, int(tot), tot);
        CUDA_CHECK_LAUNCH();
      }
    };
    if (p.dtype == DType::f32) zero.template operator()<float>();
    else if (p.dtype == DType::bf16) zero.template operator()<bf16>();
    else zero.template operator()<f16>();
    return;
  }

  char* ws = static_cast<char*>(workspace);
  float* lse2 = reinterpret_cast<float*>(ws + w.lse2);
  float* Dv = reinterpret_cast<float*>(ws + w.Dv);
  float* dq_acc = reinterpret_cast<float*>(ws + w.dq_acc);
  float* part = reinterpret_cast<float*>(ws + w.part);

  // (1) row pass
  PreArgs pa{};
  pa.q = p.q, pa.o = p.out, pa.dout = p.dout, pa.nk = p.null_k, pa.nv = p.null_v;
  pa.lse = static_cast<const float*>(p.lse);
  pa.qsb = p.q_stride.b, pa.qsh = p.q_stride.h, pa.qsn = p.q_stride.n;
  pa.osb = p.out_stride.b, pa.osh = p.out_stride.h, pa.osn = p.out_stride.n;
  pa.dosb = p.dout_stride.b, pa.dosh = p.dout_stride.h, pa.dosn = p.dout_stride.n;
  pa.lse2 = lse2, pa.Dv = Dv, pa.dq_acc = dq_acc, pa.part = part;
  pa.H = int(p.H), pa.Nq = int(p.Nq), pa.d = int(p.d), pa.nblk = w.nblk;
  pa.scale = float(p.scale);
  const dim3 pre_grid(w.nblk, BH);
  if (p.dtype == DType::f32) fa_bwd_pre_kernel<float><<<pre_grid, 256, 0, stream>>>(pa);
  else if (p.dtype == DType::bf16) fa_bwd_pre_kernel<bf16><<<pre_grid, 256, 0, stream>>>(pa);
  else fa_bwd_pre_kernel<f16><<<pre_grid, 256, 0, stream>>>(pa);
  CUDA_CHECK_LAUNCH();

  // (2) main kernel
  if (p.Nk > 0) {
    const int64_t ce = 16 / int64_t(es);
    BwdArgs a{};
    a.q = p.q, a.k = p.k, a.v = p.v, a.dout = p.dout;
    a.mask = p.mask, a.msb = p.mask_stride_b, a.msh = p.mask_stride_h;
    a.qsb = p.q_stride.b, a.qsh = p.q_stride.h, a.qsn = p.q_stride.n;
    a.ksb = p.k_stride.b, a.ksh = p.k_stride.h, a.ksn = p.k_stride.n;
    a.vsb = p.v_stride.b, a.vsh = p.v_stride.h, a.vsn = p.v_stride.n;
    a.dosb = p.dout_stride.b, a.dosh = p.dout_stride.h, a.dosn = p.dout_stride.n;
    a.dk = p.dk, a.dv = p.dv;
    a.dksb = p.dk_stride.b, a.dksh = p.dk_stride.h, a.dksn = p.dk_stride.n;
    a.dvsb = p.dv_stride.b, a.dvsh = p.dv_stride.h, a.dvsn = p.dv_stride.n;
    a.lse2 = lse2, a.Dv = Dv, a.dq_acc = dq_acc;
    a.H = int(p.H), a.Nq = int(p.Nq), a.Nk = int(p.Nk), a.d = int(p.d);
    a.causal = p.causal, a.offset = int(p.Nk - p.Nq);
    a.scale_log2 = float(p.scale * 1.4426950408889634), a.scale = float(p.scale);
    a.vec_in = p.d % ce == 0 && aligned(p.q, 16) && aligned(p.k, 16) && aligned(p.v, 16) && aligned(p.dout, 16) &&
               strides_ok(p.q_stride, ce) && strides_ok(p.k_stride, ce) && strides_ok(p.v_stride, ce) &&
               strides_ok(p.dout_stride, ce);
    a.vec_out = aligned(p.dk, 2 * es) && aligned(p.dv, 2 * es) && strides_ok(p.dk_stride, 2) &&
                strides_ok(p.dv_stride, 2);
    dispatch(p, [&]<class Tr, int D>() { launch_bwd<Tr, D>(a, BH, stream); });
  }

  // (3) dq into the caller's layout; null kv gradients.
  const long long tot = p.B * p.H * p.Nq * p.d;
  auto post = [&]<class T>() {
    fa_dq_convert_kernel<T><<<grid_for(tot), 256, 0, stream>>>(static_cast<T*>(p.dq), p.dq_stride.b, p.dq_stride.h,
                                                                 p.dq_stride.n, dq_acc, int(p.H), int(p.Nq),
                                                                 int(p.d), float(p.scale), tot);
    CUDA_CHECK_LAUNCH();
    if (p.has_null()) {
      const int n = int(p.H * p.d);
      fa_dnull_reduce_kernel<T><<<(n + 127) / 128, 128, 0, stream>>>(
          static_cast<T*>(p.dnull_k), static_cast<T*>(p.dnull_v), part, int(p.B), int(p.H), w.nblk, int(p.d),
          float(p.scale));
      CUDA_CHECK_LAUNCH();
    }
  };
  if (p.dtype == DType::f32) post.template operator()<float>();
  else if (p.dtype == DType::bf16) post.template operator()<bf16>();
  else post.template operator()<f16>();
}

// ------------------------------------------------------------------ unfused reference pieces

namespace {

template <class T>
__global__ void ref_softmax_fwd_kernel(const float* S, T* P, long long n, float scale) {
  __shared__ float red[32];
  const float* s = S + blockIdx.x * n;
  T* p = P + blockIdx.x * n;
  auto block_reduce = [&](float x, bool is_max) {
    for (int o = 16; o > 0; o >>= 1) {
      const float y = __shfl_xor_sync(0xffffffffu, x, o);
      x = is_max ? fmaxf(x, y) : x + y;
    }
    __syncthreads();
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = x;
    __syncthreads();
    const int nw = blockDim.x >> 5;
    x = threadIdx.x < nw ? red[threadIdx.x] : (is_max ? -kInf : 0.f);
    if (threadIdx.x < 32)
      for (int o = 16; o > 0; o >>= 1) {
        const float y = __shfl_xor_sync(0xffffffffu, x, o);
        x = is_max ? fmaxf(x, y) : x + y;
      }
    if (threadIdx.x == 0) red[0] = x;
    __syncthreads();
    return red[0];
  };
  float mx = -kInf;
  for (long long j = threadIdx.x; j < n; j += blockDim.x) mx = fmaxf(mx, s[j] * scale);
  mx = block_reduce(mx, true);
  float sum = 0.f;
  for (long long j = threadIdx.x; j < n; j += blockDim.x) sum += __expf(s[j] * scale - mx);
  sum = block_reduce(sum, false);
  const float inv = 1.f / sum;
  for (long long j = threadIdx.x; j < n; j += blockDim.x) p[j] = from_f<T>(__expf(s[j] * scale - mx) * inv);
}

template <class T>
__global__ void ref_softmax_bwd_kernel(const T* P, const float* dP, T* dS, long long n, float scale) {
  __shared__ float red[32];
  const T* p = P + blockIdx.x * n;
  const float* dp = dP + blockIdx.x * n;
  T* ds = dS + blockIdx.x * n;
  float x = 0.f;
  for (long long j = threadIdx.x; j < n; j += blockDim.x) x += to_f(p[j]) * dp[j];
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = x;
  __syncthreads();
  if (threadIdx.x < 32) {
    float y = threadIdx.x < (blockDim.x >> 5) ? red[threadIdx.x] : 0.f;
    for (int o = 16; o > 0; o >>= 1) y += __shfl_xor_sync(0xffffffffu, y, o);
    if (threadIdx.x == 0) red[0] = y;
  }
  __syncthreads();
  const float D = red[0];
  for (long long j = threadIdx.x; j < n; j += blockDim.x) ds[j] = from_f<T>(scale * to_f(p[j]) * (dp[j] - D));
}

}  // namespace

void reference_softmax_forward(DType dtype, const float* S, void* P, int64_t rows, int64_t n, float scale,
                               cudaStream_t stream) {
  COLT5_CHECK(rows <= 2147483647, "reference_softmax_forward: too many rows: ", rows);
  if (rows == 0) return;
  switch (dtype) {
    case DType::f32: ref_softmax_fwd_kernel<float><<<unsigned(rows), 256, 0, stream>>>(S, static_cast<float*>(P), n, scale); break;
    case DType::bf16: ref_softmax_fwd_kernel<bf16><<<unsigned(rows), 256, 0, stream>>>(S, static_cast<bf16*>(P), n, scale); break;
    case DType::f16: ref_softmax_fwd_kernel<f16><<<unsigned(rows), 256, 0, stream>>>(S, static_cast<f16*>(P), n, scale); break;
    default: COLT5_FAIL("reference_softmax_forward: dtype must be f32, bf16 or f16, got ", dtype_name(dtype));
  }
  CUDA_CHECK_LAUNCH();
}

void reference_softmax_backward(DType dtype, const void* P, const float* dP, void* dS, int64_t rows, int64_t n,
                                float scale, cudaStream_t stream) {
  COLT5_CHECK(rows <= 2147483647, "reference_softmax_backward: too many rows: ", rows);
  if (rows == 0) return;
  switch (dtype) {
    case DType::f32: ref_softmax_bwd_kernel<float><<<unsigned(rows), 256, 0, stream>>>(static_cast<const float*>(P), dP, static_cast<float*>(dS), n, scale); break;
    case DType::bf16: ref_softmax_bwd_kernel<bf16><<<unsigned(rows), 256, 0, stream>>>(static_cast<const bf16*>(P), dP, static_cast<bf16*>(dS), n, scale); break;
    case DType::f16: ref_softmax_bwd_kernel<f16><<<unsigned(rows), 256, 0, stream>>>(static_cast<const f16*>(P), dP, static_cast<f16*>(dS), n, scale); break;
    default: COLT5_FAIL("reference_softmax_backward: dtype must be f32, bf16 or f16, got ", dtype_name(dtype));
  }
  CUDA_CHECK_LAUNCH();
}

}  // namespace colt5::kernels::cuda
