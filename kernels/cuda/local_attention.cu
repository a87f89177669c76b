// Fused local (windowed) attention, CUDA (semantics: kernels/cpu/local_attention.h).
//
// Built on the dense flash-attention kernels (kernels/cuda/flash_attention.cu):
// the same mma.sync tiles (TF32 m16n8k8 for f32, m16n8k16 for bf16/f16), the
// same fragment traits and tile loads (both from kernels/cuda/mma_tiles.cuh),
// cp.async double buffering and online softmax in log2 units; the differences
// are all about *which* tiles are visited:
//
// Forward: one block per (tile of BM query rows, b*h). The visible keys of
// query t form the interval [local_band_lo(t), local_band_hi(t)) (minus the
// key mask) and both ends grow with t, so the block's keys are
// [lo(first row), hi(last row)): the block streams only those key tiles
// (at most (look_backward + 1 + look_forward) windows plus one tile), never a
// padded copy. Warps skip whole key tiles outside their rows' band; inside
// a tile every 16-row x 8-key MMA tile is classified (warp-uniform, from the
// monotone band ends): wholly visible tiles are only scaled, wholly invisible
// ones are set to -inf without exp2 and their P V steps skipped, and only the
// mixed tiles at the band's edges test lo(t) <= j < hi(t) && mask[j] per
// element. Saves lse (natural log, f32).
//
// Backward: (1) a row pass computes D = rowsum(dO * O), lse in log2 units and
// zeroes the f32 dq accumulator (dq itself for f32); (2) one block per (tile
// of BN keys, b*h) loops over the query tiles that can see it (an interval
// found by binary search on the monotone band ends), recomputes S^T and dP^T
// per warp (16*MK keys), classifies each 16-key x 8-query tile the same way
// (visible: exp2 without tests; invisible: zero, its dV dK steps skipped),
// accumulates dK, dV in registers and adds dQ = scale dS K with atomics
// (16-row groups wholly outside the block's keys add nothing; dS^T goes
// through shared memory, reusing the query tile's Q|dO buffer where it fits
// and that buys a third block per SM); (3) bf16/f16 only: dq converted from
// the f32 accumulator.
//
// The MMAs themselves are not skipped per tile inside the band's bounding
// tiles: band tests inside the unrolled MMA loops cost more than the MMAs
// they save (measured, see the variants below).
//
// Measured on an H100 (kernels alone, ms fwd / bwd / fwd+bwd; attended pairs
// x 4d flops, x3.5 for fwd+bwd; `colt5 bench local-attention`):
//   non-causal exact w=64 look 1/1 2x8x32768x64  f32  0.453 / 1.189 / 1.649 (36.7 TFLOP/s)
//                                                bf16 0.256 / 0.916 / 1.173 (51.6 TFLOP/s)
//   causal w=128 look 1/0 2x8x8192x64            f32  0.128 / 0.383 / 0.523 (42.8 TFLOP/s)
//                                                bf16 0.084 / 0.272 / 0.361 (61.9 TFLOP/s)
//   every key in the band, w=N=1024 2x8x1024x64  f32  0.101 / 0.194 / 0.309 (18.43 ps per pair)
// (before tile classification: 0.526 / 1.732 / 2.267 for the first row;
// before the backward reused the Q|dO buffer for dS^T: bwd 1.38; bf16 before
// the tile changes listed at Cfg: 0.323 / 1.147 / 1.479 and 0.094 / 0.307 / 0.410.)
// Per attended pair the f32 non-causal case costs 24.4 ps: 1.32x these same
// kernels with every key in the band, 2.26x the dense flash kernel on
// 2x8x8192x8192x64 (10.8 ps). What remains: each key block of the backward
// walks only ~6 query tiles, so its K/V load, pipeline start and epilogue are
// not amortised; 3 dq atomic passes per query row after a bandwidth-bound
// row pass (0.146 ms: D, lse2 and zeroing dq); 8-key MMA granularity
// (160 keys computed per 129 attended); and at w=64, d=64 the kernels move
// ~1 KB per query for ~33 kFLOP, close to the H100's memory/compute balance
// (ncu: 0.54 GB of DRAM traffic in the forward).
#include "kernels/cuda/local_attention.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>
#include <type_traits>

#include "engine/cuda/check.h"
#include "kernels/cuda/launch_util.h"
#include "kernels/cuda/mma_tiles.cuh"

namespace colt5::kernels::cuda {
namespace {

using namespace tiles;   // kernels/cuda/mma_tiles.cuh
using namespace launch;  // kernels/cuda/launch_util.h
using Band = colt5::kernels::LocalBand<int>;

// ------------------------------------------------------------------ band on the device

__device__ __forceinline__ int band_lo(const Band& b, int t) { return colt5::kernels::local_band_lo(b, t); }
__device__ __forceinline__ int band_hi(const Band& b, int t) { return colt5::kernels::local_band_hi(b, t); }

// ------------------------------------------------------------------ forward

struct FwdArgs {
  const void *q, *k, *v;
  void* o;
  float* lse;
  const uint8_t* mask;
  long long msb;
  long long qsb, qsh, qsn, ksb, ksh, ksn, vsb, vsh, vsn, osb, osh, osn;
  int H, N, d, vec_in, vec_out;
  Band band;
  float scale_log2;
};

template <class Tr, int D, int NW, int MT, int BN, bool QREG>
struct FwdKernel {
  using T = typename Tr::Elem;
  static constexpr int kK = Tr::kK, LD = D + Tr::kPad, BM = NW * 16 * MT, NT = NW * 32;
  static constexpr int KS = D / kK, NS = BN / 8, NO = D / 8;
  // Q (BM x LD) fits in the second K|V buffer (2 x BN x LD).
  static constexpr bool kCanAliasQ = QREG && BM <= 2 * BN;
  static constexpr size_t smem_bytes(bool alias_q) {
    return ((alias_q ? 0 : size_t(BM) * LD) + 4 * size_t(BN) * LD) * sizeof(T) + 2 * BM * sizeof(int) + 2 * BN +
           2 * NS;
  }
};

// OPT bits (both kernels): kOptClassify: each 8-key x 16-row (forward) or
// 16-key x 8-query (backward) MMA tile is classified, warp-uniformly, as wholly
// visible (scale only, no per-element band/mask test), wholly invisible (no
// exp2, its P V / dV dK steps skipped) or mixed (per-element test);
// kOptSkip: MMA steps outside the warp's band are skipped by band tests.
// kOptAliasDS (backward): dS^T reuses the current Q|dO buffer once dV, dK
// are done (one more barrier per query tile, 9-18 KB less shared memory, so
// 3 blocks per SM instead of 2 for the f32 d = 64 tiles). kOptAliasQ
// (forward, Q in registers): Q is staged in the second K|V buffer, dead once
// it is in registers (34 KB less shared memory).
constexpr int kOptClassify = 1, kOptSkip = 2, kOptAliasDS = 4, kOptAliasQ = 8;
// Bits 8-11: minimum blocks per SM for __launch_bounds__ (0: no bound).
template <int N> constexpr int kOptMinBlocks = N << 8;
constexpr int min_blocks(int opt) { return (opt >> 8) & 15; }

template <class Tr, int D, int NW, int MT, int BN, bool QREG, int OPT>
__global__ void __launch_bounds__(NW * 32, min_blocks(OPT)) la_fwd_kernel(const FwdArgs a) {
  constexpr bool kClassify = (OPT & kOptClassify) != 0, kSkip = (OPT & kOptSkip) != 0;
  using K = FwdKernel<Tr, D, NW, MT, BN, QREG>;
  constexpr bool kAlias = (OPT & kOptAliasQ) != 0;
  static_assert(!kAlias || K::kCanAliasQ, "Q does not fit in a K|V buffer");
  using T = typename K::T;
  using AF = typename Tr::AF;
  using BF = typename Tr::BF;
  constexpr int kK = K::kK, LD = K::LD, BM = K::BM, NT = K::NT, KS = K::KS, NS = K::NS, NO = K::NO;
  static_assert(MT * NS <= 32, "emask bits");

  extern __shared__ __align__(16) unsigned char smem[];
  // Two buffers, each K (BN x LD) then V (BN x LD); Q before them, or staged in the second.
  T* sKV = reinterpret_cast<T*>(smem) + (kAlias ? 0 : BM * LD);
  T* sQ = kAlias ? sKV + 2 * BN * LD : reinterpret_cast<T*>(smem);
  int* sLo = reinterpret_cast<int*>(sKV + 4 * BN * LD);  // band of each query row (rows past the end: empty)
  int* sHi = sLo + BM;
  uint8_t* sM = reinterpret_cast<uint8_t*>(sHi + BM);
  uint8_t* sMF = sM + 2 * BN;  // per 8-key group: all 8 keys exist and are unmasked

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int m0 = blockIdx.x * BM;
  const int bh = blockIdx.y, b = bh / a.H, h = bh % a.H;
  const T* q = static_cast<const T*>(a.q) + b * a.qsb + h * a.qsh;
  const T* k = static_cast<const T*>(a.k) + b * a.ksb + h * a.ksh;
  const T* v = static_cast<const T*>(a.v) + b * a.vsb + h * a.vsh;
  const uint8_t* mrow = a.mask ? a.mask + b * a.msb : nullptr;
  const bool vec = a.vec_in != 0;

  // The block's keys: [lo(first row), hi(last row)).
  const int kbeg = band_lo(a.band, m0);
  const int kend = max(kbeg, band_hi(a.band, min(m0 + BM, a.N) - 1));
  const int ntiles = (kend - kbeg + BN - 1) / BN;

  auto load_kv = [&](int jt, int buf) {
    const int n0 = kbeg + jt * BN;
    load_tile<T, D, LD, BN, NT>(sKV + buf * 2 * BN * LD, k, a.ksn, n0, a.N, a.d, vec);
    load_tile<T, D, LD, BN, NT>(sKV + buf * 2 * BN * LD + BN * LD, v, a.vsn, n0, a.N, a.d, vec);
    for (int j = tid; j < BN; j += NT) {
      const int key = n0 + j;
      sM[buf * BN + j] = key < a.N && (!mrow || mrow[key]);
    }
    if constexpr (kClassify) {
      for (int j = tid; j < NS; j += NT) {
        const int k0 = n0 + 8 * j;
        bool ok = k0 + 8 <= a.N;
        if (ok && mrow)
          for (int e = 0; e < 8; ++e) ok = ok && mrow[k0 + e] != 0;
        sMF[buf * NS + j] = ok;
      }
    }
  };

  load_tile<T, D, LD, BM, NT>(sQ, q, a.qsn, m0, a.N, a.d, vec);
  for (int r = tid; r < BM; r += NT) {
    const int row = m0 + r;
    sLo[r] = row < a.N ? band_lo(a.band, row) : 0;
    sHi[r] = row < a.N ? band_hi(a.band, row) : 0;
  }
  if (ntiles > 0) load_kv(0, 0);
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();

  const int wrow = warp * 16 * MT;
  AF qf[QREG ? MT : 1][QREG ? KS : 1];
  if constexpr (QREG) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int ks = 0; ks < KS; ++ks) Tr::load_a(qf[mt][ks], sQ, LD, wrow + mt * 16, ks * kK);
    if constexpr (kAlias) __syncthreads();  // the loop's first load overwrites the staged Q
  }

  // This warp's band (empty for warps wholly past the end).
  int wlo = 0, whi = 0;
  if (m0 + wrow < a.N) {
    wlo = sLo[wrow];
    whi = sHi[min(wrow + 16 * MT, a.N - m0) - 1];
  }
  float m_i[MT][2], l_i[MT][2], acc[MT][NO][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int r = 0; r < 2; ++r) m_i[mt][r] = -kInf, l_i[mt][r] = 0.f;
#pragma unroll
    for (int no = 0; no < NO; ++no)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[mt][no][e] = 0.f;
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
    const T* cK = sKV + buf * 2 * BN * LD;
    const T* cV = cK + BN * LD;
    const uint8_t* cM = sM + buf * BN;
    const uint8_t* cMF = sMF + buf * NS;
    const int n0 = kbeg + jt * BN;
    // 8-key MMA tile ns of this key tile meets the warp's band.
    auto live = [&](int ns) { return n0 + 8 * ns < whi && n0 + 8 * ns + 8 > wlo; };

    if (n0 < whi && n0 + BN > wlo) {
      // S = Q K^T on the live tiles.
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
          if (kSkip && !live(2 * np) && !live(2 * np + 1)) continue;
          BF bk[2];
          Tr::load_b_nt2(bk, cK, LD, ks * kK, np * 16);
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) {
            Tr::mma(s[mt][2 * np], af[mt], bk[0]);
            Tr::mma(s[mt][2 * np + 1], af[mt], bk[1]);
          }
        }
      }

      // Log2 units; invisible keys (outside the row's band, masked) -inf.
      // emask bit mt*NS+ns: that 16-row x 8-key tile has no visible key.
      uint32_t emask = 0;
      if constexpr (kClassify) {
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          // Bands are monotone in the row: rows [r0, rz] see keys within [sLo[r0], sHi[rz]),
          // and all of [sLo[rz], sHi[r0]).
          const int r0 = wrow + mt * 16, rz = min(r0 + 15, a.N - 1 - m0);
          const bool rows = r0 <= rz;
          const int loA = rows ? sLo[r0] : 0, loZ = rows ? sLo[rz] : 0;
          const int hiA = rows ? sHi[r0] : 0, hiZ = rows ? sHi[rz] : 0;
          int lo[2], hi[2];
#pragma unroll
          for (int r = 0; r < 2; ++r) {
            const int rl = r0 + g + 8 * r;
            lo[r] = sLo[rl] - n0, hi[r] = sHi[rl] - n0;
          }
#pragma unroll
          for (int ns = 0; ns < NS; ++ns) {
            const int k0 = n0 + 8 * ns;
            const bool empty = !rows || hiZ <= k0 || loA >= k0 + 8;
            const bool full = !empty && loZ <= k0 && k0 + 8 <= hiA && cMF[ns];
            if (full) {
#pragma unroll
              for (int e = 0; e < 4; ++e) s[mt][ns][e] *= a.scale_log2;
            } else if (empty) {
              emask |= 1u << (mt * NS + ns);
#pragma unroll
              for (int e = 0; e < 4; ++e) s[mt][ns][e] = -kInf;
            } else {
#pragma unroll
              for (int e = 0; e < 4; ++e) {
                const int jl = ns * 8 + 2 * t + (e & 1), r = e >> 1;
                const bool vis = jl >= lo[r] && jl < hi[r] && cM[jl];
                s[mt][ns][e] = vis ? s[mt][ns][e] * a.scale_log2 : -kInf;
              }
            }
          }
        }
      } else {
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
          for (int r = 0; r < 2; ++r) {
            const int rl = wrow + mt * 16 + g + 8 * r, lo = sLo[rl] - n0, hi = sHi[rl] - n0;
#pragma unroll
            for (int ns = 0; ns < NS; ++ns)
#pragma unroll
              for (int e = 0; e < 2; ++e) {
                const int jl = ns * 8 + 2 * t + e;
                const bool vis = jl >= lo && jl < hi && cM[jl];
                s[mt][ns][2 * r + e] = vis ? s[mt][ns][2 * r + e] * a.scale_log2 : -kInf;
              }
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
            const bool none = kClassify && ((emask >> (mt * NS + ns)) & 1u);
            const float p0 = none ? 0.f : ex2(s[mt][ns][2 * r] - m_use);
            const float p1 = none ? 0.f : ex2(s[mt][ns][2 * r + 1] - m_use);
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

      // O += P V over the live key steps.
#pragma unroll
      for (int ks = 0; ks < BN / kK; ++ks) {
        if (kSkip && !(n0 + ks * kK < whi && n0 + ks * kK + kK > wlo)) continue;
        if constexpr (kClassify) {
          // skip when every tile of this k-step is invisible in every m-tile
          constexpr uint32_t kStep = (1u << (kK / 8)) - 1u;
          uint32_t m = 0;
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) m |= kStep << (mt * NS + ks * (kK / 8));
          if ((emask & m) == m) continue;
        }
        AF pa[MT];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) Tr::c_to_a(pa[mt], &s[mt][ks * (kK / 8)]);
#pragma unroll
        for (int np = 0; np < NO / 2; ++np) {
          BF bv[2];
          Tr::load_b_t2(bv, cV, LD, ks * kK, np * 16);
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) {
            Tr::mma(acc[mt][2 * np], pa[mt], bv[0]);
            Tr::mma(acc[mt][2 * np + 1], pa[mt], bv[1]);
          }
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
      if (row < a.N) {
        if (t == 0) a.lse[(long long)bh * a.N + row] = l > 0.f ? (m_i[mt][r] + __log2f(l)) * kLn2 : -kInf;
        T* orow = o + (long long)row * a.osn;
#pragma unroll
        for (int no = 0; no < NO; ++no) {
          const int col = no * 8 + 2 * t;
          const float x0 = acc[mt][no][2 * r] * inv, x1 = acc[mt][no][2 * r + 1] * inv;
          store_pair(orow, col, a.d, a.vec_out, x0, x1);
        }
      }
    }
}

// ------------------------------------------------------------------ backward

// Row pass: D = <dO, O>, lse in log2 units (+inf for rows without visible
// keys, so that every P of theirs is 0), and a zeroed dq accumulator row.
// One warp per row; lane owns columns lane + 32*c (d <= 128).
struct PreArgs {
  const void *o, *dout;
  const float* lse;
  long long osb, osh, osn, dosb, dosh, dosn;
  float *lse2, *Dv, *acc;
  long long asb, ash, asn;
  int H, N, d;
};

template <class T>
__global__ void __launch_bounds__(256) la_bwd_pre_kernel(const PreArgs a) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int i = blockIdx.x * 8 + warp;
  const int bh = blockIdx.y, b = bh / a.H, h = bh % a.H;
  if (i >= a.N) return;
  const T* orow = static_cast<const T*>(a.o) + b * a.osb + h * a.osh + (long long)i * a.osn;
  const T* drow = static_cast<const T*>(a.dout) + b * a.dosb + h * a.dosh + (long long)i * a.dosn;
  float* arow = a.acc + b * a.asb + h * a.ash + (long long)i * a.asn;
  float D = 0.f;
#pragma unroll
  for (int c = 0; c < 4; ++c) {
    const int col = lane + 32 * c;
    if (col < a.d) {
      D += to_f(drow[col]) * to_f(orow[col]);
      arow[col] = 0.f;
    }
  }
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) D += __shfl_xor_sync(0xffffffffu, D, off);
  if (lane == 0) {
    const long long ri = (long long)bh * a.N + i;
    const float lse = a.lse[ri];
    a.Dv[ri] = D;
    a.lse2[ri] = lse == -kInf ? kInf : lse * kLog2e;
  }
}

struct BwdArgs {
  const void *q, *k, *v, *dout;
  const uint8_t* mask;
  long long msb;
  long long qsb, qsh, qsn, ksb, ksh, ksn, vsb, vsh, vsn, dosb, dosh, dosn;
  void *dk, *dv;
  long long dksb, dksh, dksn, dvsb, dvsh, dvsn;
  const float* lse2;  // (B*H, N)
  const float* Dv;    // (B*H, N)
  float* acc;         // dq accumulator, strides asb, ash, asn (dq itself for f32)
  long long asb, ash, asn;
  int H, N, d, vec_in, vec_out, acc_vec2;
  Band band;
  float scale_log2, scale;
};

template <class Tr, int D, int NW, int MK, int BM>
struct BwdKernel {
  using T = typename Tr::Elem;
  static constexpr int kK = Tr::kK, LD = D + Tr::kPad, BN = NW * 16 * MK, NT = NW * 32;
  static constexpr int LDS = BM + Tr::kPad;
  static constexpr int KS = D / kK, NQ = BM / 8, NO = D / 8;
  // dS^T (BN x LDS) fits in one Q|dO buffer (2 x BM x LD), so it can reuse it.
  static constexpr bool kCanAliasDS = size_t(BN) * LDS <= 2 * size_t(BM) * LD;
  static constexpr size_t smem_bytes(bool alias_ds) {
    return (2 * size_t(BN) * LD + 4 * size_t(BM) * LD + (alias_ds ? 0 : size_t(BN) * LDS)) * sizeof(T) +
           8 * BM * sizeof(float) + BN;
  }
};

// First t in [0, N) with pred(t) true (N if none), pred monotone false -> true.
template <class P>
__device__ __forceinline__ int first_true(int N, P pred) {
  int lo = 0, hi = N;
  while (lo < hi) {
    const int mid = lo + (hi - lo) / 2;
    if (pred(mid)) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

template <class Tr, int D, int NW, int MK, int BM, int OPT>
__global__ void __launch_bounds__(NW * 32, min_blocks(OPT)) la_bwd_kernel(const BwdArgs a) {
  using K = BwdKernel<Tr, D, NW, MK, BM>;
  constexpr bool kClassify = (OPT & kOptClassify) != 0, kSkip = (OPT & kOptSkip) != 0;
  constexpr bool kAlias = (OPT & kOptAliasDS) != 0;
  static_assert(!kAlias || K::kCanAliasDS, "dS^T does not fit in a Q|dO buffer");
  using T = typename K::T;
  using AF = typename Tr::AF;
  using BF = typename Tr::BF;
  constexpr int kK = K::kK, LD = K::LD, BN = K::BN, NT = K::NT, LDS = K::LDS, KS = K::KS, NQ = K::NQ, NO = K::NO;
  static_assert(D % 32 == 0 && BM % 16 == 0, "tile shape");
  static_assert(MK * NQ <= 32, "emask bits");

  extern __shared__ __align__(16) unsigned char smem[];
  T* sK = reinterpret_cast<T*>(smem);
  T* sV = sK + BN * LD;
  T* sQO = sV + BN * LD;  // 2 buffers, each Q (BM x LD) then dO (BM x LD)
  T* sdSx = sQO + 4 * BM * LD;  // dS^T when it does not reuse a Q|dO buffer
  float* sL = reinterpret_cast<float*>(kAlias ? sdSx : sdSx + BN * LDS);  // 2 buffers
  float* sD = sL + 2 * BM;                               // 2 buffers
  int* sLo = reinterpret_cast<int*>(sD + 2 * BM);        // 2 buffers: band of each query row
  int* sHi = sLo + 2 * BM;                               // 2 buffers
  uint8_t* sMk = reinterpret_cast<uint8_t*>(sHi + 2 * BM);

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int n0 = blockIdx.x * BN, n1 = min(n0 + BN, a.N);
  const int bh = blockIdx.y, b = bh / a.H, h = bh % a.H;
  const T* q = static_cast<const T*>(a.q) + b * a.qsb + h * a.qsh;
  const T* k = static_cast<const T*>(a.k) + b * a.ksb + h * a.ksh;
  const T* v = static_cast<const T*>(a.v) + b * a.vsb + h * a.vsh;
  const T* dout = static_cast<const T*>(a.dout) + b * a.dosb + h * a.dosh;
  const uint8_t* mrow = a.mask ? a.mask + b * a.msb : nullptr;
  const float* lse2 = a.lse2 + (long long)bh * a.N;
  const float* Dv = a.Dv + (long long)bh * a.N;
  float* acc = a.acc + b * a.asb + h * a.ash;
  const bool vec = a.vec_in != 0;
  const Band band = a.band;

  // Queries that see some key of [n0, n1): hi(t) > n0 and lo(t) < n1.
  const int tq0 = first_true(a.N, [&](int x) { return band_hi(band, x) > n0; });
  const int tq1 = first_true(a.N, [&](int x) { return band_lo(band, x) >= n1; });
  const int nit = tq1 > tq0 ? (tq1 - tq0 + BM - 1) / BM : 0;
  const int hi_last = band_hi(band, a.N - 1);

  load_tile<T, D, LD, BN, NT>(sK, k, a.ksn, n0, a.N, a.d, vec);
  load_tile<T, D, LD, BN, NT>(sV, v, a.vsn, n0, a.N, a.d, vec);
  for (int j = tid; j < BN; j += NT) {
    const int key = n0 + j;
    sMk[j] = key < a.N && (!mrow || mrow[key]);
  }
  auto load_q = [&](int it, int buf) {
    const int i0 = tq0 + it * BM;
    load_tile<T, D, LD, BM, NT>(sQO + buf * 2 * BM * LD, q, a.qsn, i0, a.N, a.d, vec);
    load_tile<T, D, LD, BM, NT>(sQO + buf * 2 * BM * LD + BM * LD, dout, a.dosn, i0, a.N, a.d, vec);
    for (int j = tid; j < BM; j += NT) {
      const int i = i0 + j;
      const bool in = i < a.N;
      sL[buf * BM + j] = in ? lse2[i] : kInf;
      sD[buf * BM + j] = in ? Dv[i] : 0.f;
      // Rows past the end see nothing (lo = INT_MAX) but keep hi monotone.
      sLo[buf * BM + j] = in ? band_lo(band, i) : 0x7fffffff;
      sHi[buf * BM + j] = in ? band_hi(band, i) : hi_last;
    }
  };
  if (nit > 0) load_q(0, 0);
  cp_async_commit();

  float dk[MK][NO][4], dv[MK][NO][4];
#pragma unroll
  for (int mk = 0; mk < MK; ++mk)
#pragma unroll
    for (int no = 0; no < NO; ++no)
#pragma unroll
      for (int e = 0; e < 4; ++e) dk[mk][no][e] = 0.f, dv[mk][no][e] = 0.f;

  const int wkey = warp * 16 * MK;
  const int k0w = n0 + wkey, k1w = min(n0 + wkey + 16 * MK, a.N);  // this warp's keys
  // kok bit mk: the warp's 16 keys of m-tile mk all exist and are unmasked.
  uint32_t kok = 0;
  if constexpr (kClassify) {
#pragma unroll
    for (int mk = 0; mk < MK; ++mk) {
      const int key = k0w + mk * 16 + (lane & 15);
      const bool ok = key < a.N && (!mrow || mrow[key]);
      if (__all_sync(0xffffffffu, ok)) kok |= 1u << mk;
    }
  }
  for (int it = 0; it < nit; ++it) {
    const int buf = it & 1;
    if (it + 1 < nit) {
      load_q(it + 1, buf ^ 1);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const T* cQ = sQO + buf * 2 * BM * LD;
    const T* cdO = cQ + BM * LD;
    T* sdS = kAlias ? sQO + buf * 2 * BM * LD : sdSx;
    const float* cL = sL + buf * BM;
    const float* cD = sD + buf * BM;
    const int* cLo = sLo + buf * BM;
    const int* cHi = sHi + buf * BM;
    const int i0 = tq0 + it * BM;
    // Queries [x0, x1) (local) meet this warp's keys.
    auto live = [&](int x0, int x1) { return cLo[x0] < k1w && cHi[x1 - 1] > k0w; };
    const bool any = k0w < k1w && live(0, BM);

    float st[MK][NQ][4], dpt[MK][NQ][4];
#pragma unroll
    for (int mk = 0; mk < MK; ++mk)
#pragma unroll
      for (int nq = 0; nq < NQ; ++nq)
#pragma unroll
        for (int e = 0; e < 4; ++e) st[mk][nq][e] = 0.f, dpt[mk][nq][e] = 0.f;
    if (any) {
      // S^T = K Q^T and dP^T = V dO^T on the live 8-query tiles.
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
          if (kSkip && !live(np * 16, np * 16 + 16)) continue;
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
    }

    // P^T = exp2(S^T * scale_log2 - lse2) where visible, dS^T = P^T (dP^T - D).
    // emask bit mk*NQ+nq: that 16-key x 8-query tile has no visible pair.
    uint32_t emask = 0;
#pragma unroll
    for (int mk = 0; mk < MK; ++mk)
#pragma unroll
      for (int nq = 0; nq < NQ; ++nq) {
        bool full = false, empty = false;
        if constexpr (kClassify) {
          // Query bands are monotone (rows past the end: lo = INT_MAX, hi = hi_last).
          const int kb = k0w + mk * 16, q0 = nq * 8;
          empty = !any || cHi[q0 + 7] <= kb || cLo[q0] >= kb + 16;
          full = !empty && ((kok >> mk) & 1u) && cLo[q0 + 7] <= kb && cHi[q0] >= kb + 16;
        }
        if (full) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int ql = nq * 8 + 2 * t + (e & 1);
            const float p = ex2(st[mk][nq][e] * a.scale_log2 - cL[ql]);
            st[mk][nq][e] = p;
            dpt[mk][nq][e] = p * (dpt[mk][nq][e] - cD[ql]);
          }
        } else if (empty) {
          emask |= 1u << (mk * NQ + nq);
#pragma unroll
          for (int e = 0; e < 4; ++e) st[mk][nq][e] = 0.f, dpt[mk][nq][e] = 0.f;
        } else {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int kl = wkey + mk * 16 + g + 8 * (e >> 1), key = n0 + kl;
            const int ql = nq * 8 + 2 * t + (e & 1);
            const bool vis = any && key >= cLo[ql] && key < cHi[ql] && sMk[kl];
            const float p = vis ? ex2(st[mk][nq][e] * a.scale_log2 - cL[ql]) : 0.f;
            st[mk][nq][e] = p;
            dpt[mk][nq][e] = p * (dpt[mk][nq][e] - cD[ql]);
          }
        }
      }

    if (any) {
      // dV += P^T dO, dK += dS^T Q over the live query steps.
#pragma unroll
      for (int ks = 0; ks < BM / kK; ++ks) {
        if (kSkip && !live(ks * kK, ks * kK + kK)) continue;
        if constexpr (kClassify) {
          constexpr uint32_t kStep = (1u << (kK / 8)) - 1u;
          uint32_t m = 0;
#pragma unroll
          for (int mk = 0; mk < MK; ++mk) m |= kStep << (mk * NQ + ks * (kK / 8));
          if ((emask & m) == m) continue;
        }
        AF pa[MK], da[MK];
#pragma unroll
        for (int mk = 0; mk < MK; ++mk) {
          Tr::c_to_a(pa[mk], &st[mk][ks * (kK / 8)]);
          Tr::c_to_a(da[mk], &dpt[mk][ks * (kK / 8)]);
        }
#pragma unroll
        for (int np = 0; np < NO / 2; ++np) {
          BF bo[2], bq[2];
          Tr::load_b_t2(bo, cdO, LD, ks * kK, np * 16);
          Tr::load_b_t2(bq, cQ, LD, ks * kK, np * 16);
#pragma unroll
          for (int mk = 0; mk < MK; ++mk) {
            Tr::mma(dv[mk][2 * np], pa[mk], bo[0]);
            Tr::mma(dv[mk][2 * np + 1], pa[mk], bo[1]);
            Tr::mma(dk[mk][2 * np], da[mk], bq[0]);
            Tr::mma(dk[mk][2 * np + 1], da[mk], bq[1]);
          }
        }
      }
    }

    // dS^T to shared memory for dQ = dS K (zeros where invisible); when it
    // reuses this tile's Q|dO buffer, every warp must be done with dV, dK.
    if constexpr (kAlias) __syncthreads();
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

    // dQ (BM x D) += scale dS K in tasks of 16 rows x 32 columns; key steps
    // outside the 16 rows' band are skipped, and so are tasks with none.
    constexpr int MQ = BM / 16, NCH = D / 32;
    for (int task = warp; task < MQ * NCH; task += NW) {
      const int mq = task % MQ, ch = task / MQ;
      const int glo = cLo[mq * 16], ghi = cHi[mq * 16 + 15];
      float c[4][4];
#pragma unroll
      for (int n = 0; n < 4; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) c[n][e] = 0.f;
      bool touched = false;
#pragma unroll
      for (int ks = 0; ks < BN / kK; ++ks) {
        const bool in_band = n0 + ks * kK < ghi && n0 + ks * kK + kK > glo;
        touched = touched || in_band;
        if (kSkip && !in_band) continue;
        AF af;
        Tr::load_a_t(af, sdS, LDS, mq * 16, ks * kK);
#pragma unroll
        for (int np = 0; np < 2; ++np) {
          BF bk[2];
          Tr::load_b_t2(bk, sK, LD, ks * kK, ch * 32 + np * 16);
          Tr::mma(c[2 * np], af, bk[0]);
          Tr::mma(c[2 * np + 1], af, bk[1]);
        }
      }
      if (!touched) continue;
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int row = i0 + mq * 16 + g + 8 * r;
        if (row >= a.N) continue;
        float* dst = acc + (long long)row * a.asn;
#pragma unroll
        for (int n = 0; n < 4; ++n) {
          const int col = ch * 32 + n * 8 + 2 * t;
          const float x0 = c[n][2 * r] * a.scale, x1 = c[n][2 * r + 1] * a.scale;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
          if (a.acc_vec2 && col + 1 < a.d) {
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
  }

  // Epilogue: dK (scaled) and dV for this warp's keys.
  T* dkp = static_cast<T*>(a.dk) + b * a.dksb + h * a.dksh;
  T* dvp = static_cast<T*>(a.dv) + b * a.dvsb + h * a.dvsh;
#pragma unroll
  for (int mk = 0; mk < MK; ++mk)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int key = n0 + wkey + mk * 16 + g + 8 * r;
      if (key >= a.N) continue;
      T* krow = dkp + (long long)key * a.dksn;
      T* vrow = dvp + (long long)key * a.dvsn;
#pragma unroll
      for (int no = 0; no < NO; ++no) {
        const int col = no * 8 + 2 * t;
        const float k0 = dk[mk][no][2 * r] * a.scale, k1 = dk[mk][no][2 * r + 1] * a.scale;
        const float v0 = dv[mk][no][2 * r], v1 = dv[mk][no][2 * r + 1];
        store_pair(krow, col, a.d, a.vec_out, k0, k1);
        store_pair(vrow, col, a.d, a.vec_out, v0, v1);
      }
    }
}

template <class T>
__global__ void la_dq_convert_kernel(T* dq, long long sb, long long sh, long long sn, const float* acc, int H, int N,
                                     int d, long long total) {
  for (long long x = blockIdx.x * (long long)blockDim.x + threadIdx.x; x < total;
       x += (long long)gridDim.x * blockDim.x) {
    const int c = int(x % d);
    const long long row = x / d;
    const int i = int(row % N);
    const long long bh = row / N;
    dq[(bh / H) * sb + (bh % H) * sh + i * sn + c] = from_f<T>(acc[x]);
  }
}

// ------------------------------------------------------------------ configurations and dispatch

// Fwd: NW warps, MT m-tiles of 16 query rows per warp, BN keys per tile, QREG:
// Q fragments in registers. Bwd: NW warps, MK m-tiles of 16 keys per warp, BM
// queries per tile. Starting points: the dense kernel's tuned choices;
// kFwdOpt / kBwdOpt: the OPT bits. Measured on an H100 (ms, w=64 2x8xNxd
// non-causal exact, N = 32768 (16384 at d = 128) / w=128 2x8x8192xd causal):
//   * f32 d = 64 (TF32 and 3xTF32) backward: dS^T reuses the Q|dO buffer
//     (80 -> 71 KB of shared memory, 3 blocks per SM instead of 2 at 165
//     registers): TF32 bwd 1.38 -> 1.18 / 0.414 -> 0.380, 3xTF32 2.28 -> 2.26
//     / 0.88 -> 0.86.
//   * bf16/f16 d = 64: backward 4 warps x 16 keys, 32-query tiles with dS^T
//     reuse (was 8 warps x 16 keys, 64-query tiles: 255 registers, 1 block per
//     SM): bf16 bwd 1.162 -> 0.916 / 0.311 -> 0.271; forward 16 rows per
//     warp, Q staged in a K|V buffer and kept in registers, 3 blocks per SM
//     (was 32 rows per warp, Q in shared memory, 2 blocks): fwd 0.328 -> 0.256
//     / 0.095 -> 0.085.
//   * bf16/f16 d = 32 forward: 16 rows per warp, Q staged, 4 blocks per SM
//     (was 32 rows, 2 blocks): 0.273 -> 0.179 / 0.074 -> 0.058 (the d = 64
//     backward tiles were slower here: 0.603 -> 0.695, kept out).
//   * bf16/f16 d = 128 backward: as at d = 64: 0.914 -> 0.859 / 0.484 ->
//     0.482 (the d = 64 forward tiles were not faster: 0.238 -> 0.243).
//   * TF32 d = 32 (the GPU training preset's light heads) forward: 16 rows per
//     warp, Q staged, 4 blocks per SM (was 32 rows, 2 blocks at 247
//     registers): 0.353 -> 0.264 / 0.099 -> 0.092, and 0.361 -> 0.314 at the
//     preset's causal w=128 16x8x4096x32. Its backward with 32-query tiles and
//     dS^T reuse was mixed (0.856 -> 0.834 / 0.261 -> 0.268, 0.970 -> 0.977),
//     so it keeps 64-query tiles.
// The other tiles are limited by registers or stay at the same block count,
// so they keep the extra barriers out.
template <class Tr, int D> struct Cfg;
template <class T> struct Cfg<MmaHalf<T>, 32> {
  using Fwd = FwdKernel<MmaHalf<T>, 32, 4, 1, 64, true>;
  using Bwd = BwdKernel<MmaHalf<T>, 32, 4, 1, 64>;
  static constexpr int kFwdOpt = kOptClassify | kOptAliasQ | kOptMinBlocks<4>, kBwdOpt = kOptClassify;
};
template <class T> struct Cfg<MmaHalf<T>, 64> {
  using Fwd = FwdKernel<MmaHalf<T>, 64, 4, 1, 64, true>;
  using Bwd = BwdKernel<MmaHalf<T>, 64, 4, 1, 32>;
  static constexpr int kFwdOpt = kOptClassify | kOptAliasQ | kOptMinBlocks<3>;
  static constexpr int kBwdOpt = kOptClassify | kOptAliasDS;
};
template <class T> struct Cfg<MmaHalf<T>, 128> {
  using Fwd = FwdKernel<MmaHalf<T>, 128, 4, 2, 64, false>;
  using Bwd = BwdKernel<MmaHalf<T>, 128, 4, 1, 32>;
  static constexpr int kFwdOpt = kOptClassify, kBwdOpt = kOptClassify | kOptAliasDS;
};
template <bool X3> struct Cfg<MmaTf32<X3>, 32> {
  using Fwd = FwdKernel<MmaTf32<X3>, 32, 4, 1, 64, true>;
  using Bwd = BwdKernel<MmaTf32<X3>, 32, 4, 1, 64>;
  static constexpr int kFwdOpt = X3 ? kOptClassify : kOptClassify | kOptAliasQ | kOptMinBlocks<4>;
  static constexpr int kBwdOpt = kOptClassify;
};
template <bool X3> struct Cfg<MmaTf32<X3>, 64> {
  using Fwd = FwdKernel<MmaTf32<X3>, 64, 4, X3 ? 1 : 2, 64, !X3>;
  using Bwd = BwdKernel<MmaTf32<X3>, 64, 4, 1, 32>;
  static constexpr int kFwdOpt = kOptClassify, kBwdOpt = kOptClassify | kOptAliasDS;
};
template <bool X3> struct Cfg<MmaTf32<X3>, 128> {
  using Fwd = FwdKernel<MmaTf32<X3>, 128, 4, 1, 32, !X3>;
  using Bwd = BwdKernel<MmaTf32<X3>, 128, 4, 1, 32>;
  static constexpr int kFwdOpt = kOptClassify, kBwdOpt = kOptClassify;
};

std::atomic<int> g_fwd_variant{-1}, g_bwd_variant{-1};  // -1: automatic (variant 0)

template <class F, int OPT> struct FwdLaunch;
template <class Tr, int D, int NW, int MT, int BN, bool QREG, int OPT>
struct FwdLaunch<FwdKernel<Tr, D, NW, MT, BN, QREG>, OPT> {
  using K = FwdKernel<Tr, D, NW, MT, BN, QREG>;
  static void run(const FwdArgs& a, int BH, cudaStream_t s) {
    auto fn = la_fwd_kernel<Tr, D, NW, MT, BN, QREG, OPT>;
    constexpr size_t smem = K::smem_bytes((OPT & kOptAliasQ) != 0);
    prepare(fn, smem, "cuda::local_attention_forward");
    dim3 grid((a.N + K::BM - 1) / K::BM, BH);
    fn<<<grid, K::NT, smem, s>>>(a);
    CUDA_CHECK_LAUNCH();
  }
};
template <class F, int OPT> struct BwdLaunch;
template <class Tr, int D, int NW, int MK, int BM, int OPT>
struct BwdLaunch<BwdKernel<Tr, D, NW, MK, BM>, OPT> {
  using K = BwdKernel<Tr, D, NW, MK, BM>;
  static void run(const BwdArgs& a, int BH, cudaStream_t s) {
    auto fn = la_bwd_kernel<Tr, D, NW, MK, BM, OPT>;
    constexpr size_t smem = K::smem_bytes((OPT & kOptAliasDS) != 0);
    prepare(fn, smem, "cuda::local_attention_backward");
    dim3 grid((a.N + K::BN - 1) / K::BN, BH);
    fn<<<grid, K::NT, smem, s>>>(a);
    CUDA_CHECK_LAUNCH();
  }
};

// Variants of the f32 (TF32) d = 64 kernels, the shape the light branch uses
// (set_local_attention_variants; `colt5 bench local-attention --variants`
// times them all). Variant 0 is the default (Cfg). Measured on an H100 (ms,
// kernels alone; nc: non-causal exact w=64 2x8x32768x64, causal: w=128
// 2x8x8192x64, all: every key in the band, w=N=1024 2x8x1024x64):
//   fwd 1-3: the default tiles with OPT = skip only (the kernels before tile
//            classification), classify + skip, neither:
//            nc 0.443 (default) / 0.518 / 0.552 / 0.436, causal 0.128 / 0.146 / 0.154 / 0.122
//            (band-test branches inside the unrolled MMA loops cost more than the MMAs they skip)
//       4: NW 4, MT 1, BN 64 (BM 64)   5: NW 4, MT 2, BN 64, Q from smem
//       6: NW 8, MT 1, BN 64 (BM 128)  7: NW 4, MT 2, BN 32
//       8: NW 4, MT 1, BN 32, Q staged in a K|V buffer, 3 blocks per SM (168 registers):
//          nc 0.431 vs 0.453, causal 0.138 vs 0.129, all 0.083 vs 0.101 (mixed, so not the default)
//   bwd 1-3: as fwd 1-3 (without the dS^T reuse): nc 1.726 / 1.575 / 1.401
//       4: NW 2, BM 32 (BN 32)         5: NW 8, BM 32 (BN 128)
//       6: NW 4, BM 64 (BN 64)         7: NW 4, MK 2, BM 32 (BN 128)
//          (4-7 were all slower than the default: 1.59-2.43 ms at nc)
//       8: the default tiles without the dS^T reuse (the previous default, 2 blocks per SM):
//          nc 1.382 vs 1.184, causal 0.414 vs 0.380, all 0.195 vs 0.194
// Measured and dropped: BM = 16 query tiles (4 blocks per SM by shared
// memory; 3 by registers, or 4 with 312 bytes of spills): bwd 1.43 / 1.76 ms
// at nc; issuing the next tile's loads after the loop's top barrier so that
// the end-of-iteration barrier goes: bwd 1.194 vs 1.189, fwd 0.477 vs 0.454
// (36 bytes of spills); a row pass reading 16-byte chunks: 1.184 vs 1.193.
// The row pass alone takes 0.146 ms at nc: it moves O, dO and the zeroed dq
// (402 MB) at 2.8 TB/s, so it is bandwidth-bound.
constexpr int kFwdVariants = kLocalAttentionForwardVariants, kBwdVariants = kLocalAttentionBackwardVariants;
static_assert(kFwdVariants == 9 && kBwdVariants == 9, "variant lists below");
constexpr int kVariantOpt[4] = {kOptClassify, kOptSkip, kOptClassify | kOptSkip, 0};
using TF = MmaTf32<false>;
template <class Tr, int D>
void launch_fwd(const FwdArgs& a, int BH, cudaStream_t s) {
  using K = typename Cfg<Tr, D>::Fwd;
  const int v = g_fwd_variant.load();
  if constexpr (std::is_same_v<Tr, MmaTf32<false>> && D == 64) {
    switch (v) {
      case 1: return FwdLaunch<K, kVariantOpt[1]>::run(a, BH, s);
      case 2: return FwdLaunch<K, kVariantOpt[2]>::run(a, BH, s);
      case 3: return FwdLaunch<K, kVariantOpt[3]>::run(a, BH, s);
      case 4: return FwdLaunch<FwdKernel<TF, 64, 4, 1, 64, true>, kOptClassify>::run(a, BH, s);
      case 5: return FwdLaunch<FwdKernel<TF, 64, 4, 2, 64, false>, kOptClassify>::run(a, BH, s);
      case 6: return FwdLaunch<FwdKernel<TF, 64, 8, 1, 64, true>, kOptClassify>::run(a, BH, s);
      case 7: return FwdLaunch<FwdKernel<TF, 64, 4, 2, 32, true>, kOptClassify>::run(a, BH, s);
      case 8:
        return FwdLaunch<FwdKernel<TF, 64, 4, 1, 32, true>, kOptClassify | kOptAliasQ | kOptMinBlocks<3>>::run(a, BH, s);
      default: break;
    }
  }
  return FwdLaunch<K, Cfg<Tr, D>::kFwdOpt>::run(a, BH, s);
}
template <class Tr, int D>
void launch_bwd(const BwdArgs& a, int BH, cudaStream_t s) {
  using K = typename Cfg<Tr, D>::Bwd;
  const int v = g_bwd_variant.load();
  if constexpr (std::is_same_v<Tr, MmaTf32<false>> && D == 64) {
    switch (v) {
      case 1: return BwdLaunch<K, kVariantOpt[1]>::run(a, BH, s);
      case 2: return BwdLaunch<K, kVariantOpt[2]>::run(a, BH, s);
      case 3: return BwdLaunch<K, kVariantOpt[3]>::run(a, BH, s);
      case 4: return BwdLaunch<BwdKernel<TF, 64, 2, 1, 32>, kOptClassify>::run(a, BH, s);
      case 5: return BwdLaunch<BwdKernel<TF, 64, 8, 1, 32>, kOptClassify>::run(a, BH, s);
      case 6: return BwdLaunch<BwdKernel<TF, 64, 4, 1, 64>, kOptClassify>::run(a, BH, s);
      case 7: return BwdLaunch<BwdKernel<TF, 64, 4, 2, 32>, kOptClassify>::run(a, BH, s);
      case 8: return BwdLaunch<K, kOptClassify>::run(a, BH, s);
      default: break;
    }
  }
  return BwdLaunch<K, Cfg<Tr, D>::kBwdOpt>::run(a, BH, s);
}

int padded_dim(int64_t d) { return d <= 32 ? 32 : d <= 64 ? 64 : 128; }

// Calls f.template operator()<Tr, D>() for p's dtype/precision and padded head dim.
template <class F>
void dispatch(const LocalAttentionParams& p, F&& f) {
  auto by_dim = [&]<class Tr>() {
    switch (padded_dim(p.d)) {
      case 32: return f.template operator()<Tr, 32>();
      case 64: return f.template operator()<Tr, 64>();
      default: return f.template operator()<Tr, 128>();
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

void check_cuda_params(const LocalAttentionParams& p, bool backward, const char* op) {
  check_local_attention_params(p, backward, op);
  COLT5_CHECK(p.dtype == DType::f32 || p.dtype == DType::bf16 || p.dtype == DType::f16, op,
              ": dtype must be f32, bf16 or f16, got ", dtype_name(p.dtype));
  COLT5_CHECK(p.d <= 128, op, ": head dim d must be <= 128 on CUDA, got d=", p.d);
  COLT5_CHECK(p.B * p.H <= 65535, op, ": B*H must be <= 65535, got B=", p.B, " H=", p.H);
  COLT5_CHECK(p.N < (int64_t(1) << 29) && p.window < (int64_t(1) << 29), op, ": sequence too long: N=", p.N,
              " window=", p.window);
}

struct BwdWorkspace {
  size_t lse2 = 0, Dv = 0, acc = 0, total = 0;
};
BwdWorkspace bwd_workspace(const LocalAttentionParams& p) {
  BwdWorkspace w;
  const size_t rows = size_t(p.B * p.H * p.N);
  w.Dv = round_up(rows * 4);
  w.acc = w.Dv + round_up(rows * 4);
  w.total = w.acc + (p.dtype == DType::f32 ? 0 : round_up(rows * size_t(p.d) * 4));
  return w;
}

}  // namespace

void set_local_attention_variants(int forward_variant, int backward_variant) {
  COLT5_CHECK(forward_variant >= -1 && forward_variant < kFwdVariants && backward_variant >= -1 &&
                  backward_variant < kBwdVariants,
              "cuda::set_local_attention_variants: forward variant must be in [-1, ", kFwdVariants,
              "), backward in [-1, ", kBwdVariants, "), got ", forward_variant, ", ", backward_variant);
  g_fwd_variant = forward_variant;
  g_bwd_variant = backward_variant;
}

void local_attention_forward(const LocalAttentionParams& p, cudaStream_t stream) {
  const char* op = "cuda::local_attention_forward";
  check_cuda_params(p, false, op);
  if (p.B * p.H * p.N == 0) return;
  const int64_t es = int64_t(dtype_size(p.dtype)), ce = 16 / es;
  FwdArgs a{};
  a.q = p.q, a.k = p.k, a.v = p.v, a.o = p.out;
  a.lse = static_cast<float*>(p.lse);
  a.mask = p.mask, a.msb = p.mask_stride_b;
  a.qsb = p.q_stride.b, a.qsh = p.q_stride.h, a.qsn = p.q_stride.n;
  a.ksb = p.k_stride.b, a.ksh = p.k_stride.h, a.ksn = p.k_stride.n;
  a.vsb = p.v_stride.b, a.vsh = p.v_stride.h, a.vsn = p.v_stride.n;
  a.osb = p.out_stride.b, a.osh = p.out_stride.h, a.osn = p.out_stride.n;
  a.H = int(p.H), a.N = int(p.N), a.d = int(p.d);
  a.band = p.band<int>();
  a.scale_log2 = float(p.scale * 1.4426950408889634);
  a.vec_in = p.d % ce == 0 && aligned(p.q, 16) && aligned(p.k, 16) && aligned(p.v, 16) &&
             strides_ok(p.q_stride, ce) && strides_ok(p.k_stride, ce) && strides_ok(p.v_stride, ce);
  a.vec_out = aligned(p.out, 2 * es) && strides_ok(p.out_stride, 2);
  const int BH = int(p.B * p.H);
  dispatch(p, [&]<class Tr, int D>() { launch_fwd<Tr, D>(a, BH, stream); });
}

size_t local_attention_backward_workspace_bytes(const LocalAttentionParams& p) { return bwd_workspace(p).total; }

void local_attention_backward(const LocalAttentionParams& p, void* workspace, size_t workspace_bytes,
                              cudaStream_t stream) {
  const char* op = "cuda::local_attention_backward";
  check_cuda_params(p, true, op);
  const BwdWorkspace w = bwd_workspace(p);
  COLT5_CHECK(workspace_bytes >= w.total && (w.total == 0 || workspace != nullptr), op, ": workspace of ",
              workspace_bytes, " bytes given, ", w.total, " needed");
  if (p.B * p.H * p.N == 0) return;
  const int BH = int(p.B * p.H);
  const int64_t es = int64_t(dtype_size(p.dtype)), ce = 16 / es;
  char* ws = static_cast<char*>(workspace);
  float* lse2 = reinterpret_cast<float*>(ws + w.lse2);
  float* Dv = reinterpret_cast<float*>(ws + w.Dv);
  // dq accumulator: dq itself for f32 (atomics straight into the output),
  // else a contiguous f32 (B, H, N, d) buffer converted at the end.
  const bool direct = p.dtype == DType::f32;
  float* acc = direct ? static_cast<float*>(p.dq) : reinterpret_cast<float*>(ws + w.acc);
  const AttnStrides as = direct ? p.dq_stride : colt5::kernels::strides_bhnd(p.H, p.N, p.d);

  // (1) row pass
  PreArgs pa{};
  pa.o = p.out, pa.dout = p.dout, pa.lse = static_cast<const float*>(p.lse);
  pa.osb = p.out_stride.b, pa.osh = p.out_stride.h, pa.osn = p.out_stride.n;
  pa.dosb = p.dout_stride.b, pa.dosh = p.dout_stride.h, pa.dosn = p.dout_stride.n;
  pa.lse2 = lse2, pa.Dv = Dv, pa.acc = acc, pa.asb = as.b, pa.ash = as.h, pa.asn = as.n;
  pa.H = int(p.H), pa.N = int(p.N), pa.d = int(p.d);
  const dim3 pre_grid(unsigned((p.N + 7) / 8), unsigned(BH));
  if (p.dtype == DType::f32) la_bwd_pre_kernel<float><<<pre_grid, 256, 0, stream>>>(pa);
  else if (p.dtype == DType::bf16) la_bwd_pre_kernel<bf16><<<pre_grid, 256, 0, stream>>>(pa);
  else la_bwd_pre_kernel<f16><<<pre_grid, 256, 0, stream>>>(pa);
  CUDA_CHECK_LAUNCH();

  // (2) main kernel
  BwdArgs a{};
  a.q = p.q, a.k = p.k, a.v = p.v, a.dout = p.dout;
  a.mask = p.mask, a.msb = p.mask_stride_b;
  a.qsb = p.q_stride.b, a.qsh = p.q_stride.h, a.qsn = p.q_stride.n;
  a.ksb = p.k_stride.b, a.ksh = p.k_stride.h, a.ksn = p.k_stride.n;
  a.vsb = p.v_stride.b, a.vsh = p.v_stride.h, a.vsn = p.v_stride.n;
  a.dosb = p.dout_stride.b, a.dosh = p.dout_stride.h, a.dosn = p.dout_stride.n;
  a.dk = p.dk, a.dv = p.dv;
  a.dksb = p.dk_stride.b, a.dksh = p.dk_stride.h, a.dksn = p.dk_stride.n;
  a.dvsb = p.dv_stride.b, a.dvsh = p.dv_stride.h, a.dvsn = p.dv_stride.n;
  a.lse2 = lse2, a.Dv = Dv, a.acc = acc, a.asb = as.b, a.ash = as.h, a.asn = as.n;
  a.H = int(p.H), a.N = int(p.N), a.d = int(p.d);
  a.band = p.band<int>();
  a.scale_log2 = float(p.scale * 1.4426950408889634), a.scale = float(p.scale);
  a.vec_in = p.d % ce == 0 && aligned(p.q, 16) && aligned(p.k, 16) && aligned(p.v, 16) && aligned(p.dout, 16) &&
             strides_ok(p.q_stride, ce) && strides_ok(p.k_stride, ce) && strides_ok(p.v_stride, ce) &&
             strides_ok(p.dout_stride, ce);
  a.vec_out = aligned(p.dk, 2 * es) && aligned(p.dv, 2 * es) && strides_ok(p.dk_stride, 2) &&
              strides_ok(p.dv_stride, 2);
  a.acc_vec2 = aligned(acc, 8) && strides_ok(as, 2);
  dispatch(p, [&]<class Tr, int D>() { launch_bwd<Tr, D>(a, BH, stream); });

  // (3) bf16/f16: dq from the accumulator into the caller's layout.
  if (!direct) {
    const long long tot = p.B * p.H * p.N * p.d;
    if (p.dtype == DType::bf16)
      la_dq_convert_kernel<bf16><<<grid_for(tot), 256, 0, stream>>>(static_cast<bf16*>(p.dq), p.dq_stride.b,
                                                                      p.dq_stride.h, p.dq_stride.n, acc, int(p.H),
                                                                      int(p.N), int(p.d), tot);
    else
      la_dq_convert_kernel<f16><<<grid_for(tot), 256, 0, stream>>>(static_cast<f16*>(p.dq), p.dq_stride.b,
                                                                     p.dq_stride.h, p.dq_stride.n, acc, int(p.H),
                                                                     int(p.N), int(p.d), tot);
    CUDA_CHECK_LAUNCH();
  }
}

}  // namespace colt5::kernels::cuda
