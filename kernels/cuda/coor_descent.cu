// Coordinate descent (SPEC §1) on CUDA, f32. The algorithm and its backward
// are derived in kernels/cpu/coor_descent.cpp; this file follows the same
// formulas step by step (same exp2 arguments, same saved layout), so the CPU
// kernel is its oracle. Launch paths are described in coor_descent.h.
//
// Forward, per row and per iteration t >= 2, every block does over its slice
//     sum += 2^((s - m)·sc)  for kept s <= thr,   count += 1 for kept s > thr
// with thr = -a_{t-1}, m = min(smax, thr), sc = log2(e)/e_t, then the row's
// blocks combine (sum, count) in a fixed order, so every block computes the
// bit-identical a_t. Block 0's thread 0 records a_t, l_t, S_t.
// Backward: G = sum dout·out over kept unsaturated entries (launch 1), then
// ds = gv (1 - p_T) - G·sum_t P_t (1 - p_{t-1}) 2^((s - m_t)·sc_t - l_t·log2 e)  (launch 2).
#include "kernels/cuda/coor_descent.h"

#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <map>
#include <mutex>
#include <sstream>
#include <tuple>

#include "engine/cuda/check.h"
#include "engine/error.h"

namespace cg = cooperative_groups;

namespace colt5::kernels::cuda {
namespace {

constexpr double kLog2e = 1.4426950408889634074;
constexpr float kLog2ef = float(kLog2e);

constexpr int kClusterMaxC = 16;
constexpr int kMaxElems = 16;                         // scores per thread kept in registers
constexpr int64_t kClusterBlockMax = 1024 * kMaxElems;  // entries per block
constexpr int kSmemT = 512;                           // S_t kept in shared memory up to this n_iters

// ---------------------------------------------------------------- device helpers
__device__ __forceinline__ float ex2(float x) {  // 2^x; -inf -> 0; tiny results flush to 0
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

__device__ __forceinline__ double eps_first(double eps, double eps_init) {
  const double e = eps_init > 0 ? eps_init : eps;
  return e > eps ? e : eps;
}
__device__ __forceinline__ double eps_next(double e, double eps, double decay) {
  const double d = e * decay;
  return d > eps ? d : eps;
}

__device__ __forceinline__ unsigned ld_acquire(const unsigned* p) {
  unsigned v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

template <bool MAX>
__device__ __forceinline__ float combine(float a, float b) {
  return MAX ? fmaxf(a, b) : a + b;
}
template <bool MAX>
__device__ __forceinline__ float identity() {
  return MAX ? -INFINITY : 0.f;
}

// xor butterfly: every lane ends with the same, bit-identical value (the
// operations are commutative, and both partners combine the same two values).
template <bool MAX>
__device__ __forceinline__ void warp_reduce(float& f, unsigned& u) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    f = combine<MAX>(f, __shfl_xor_sync(0xffffffffu, f, o));
    u += __shfl_xor_sync(0xffffffffu, u, o);
  }
}

// ---------------------------------------------------------------- a block's slice of a row
// Registers: ELEMS scores per thread, strided by THREADS (coalesced loads).
template <int THREADS, int ELEMS>
struct RegTile {
  float v[ELEMS];
  unsigned keep = 0;  // bit j: entry j exists and is kept
  int64_t lo = 0, hi = 0;
  __device__ __forceinline__ void load(const float* s, const uint8_t* m, int64_t lo_, int64_t hi_) {
    lo = lo_;
    hi = hi_;
#pragma unroll
    for (int j = 0; j < ELEMS; ++j) {
      const int64_t i = lo + int64_t(j) * THREADS + threadIdx.x;
      bool k = false;
      float x = -INFINITY;
      if (i < hi) {
        k = m ? m[i] != 0 : true;
        if (k) x = s[i];
      }
      v[j] = x;
      keep |= unsigned(k) << j;
    }
  }
  template <class F>
  __device__ __forceinline__ void each(F&& f) const {  // f(score, kept, index); index may be >= hi
#pragma unroll
    for (int j = 0; j < ELEMS; ++j) f(v[j], ((keep >> j) & 1u) != 0, lo + int64_t(j) * THREADS + threadIdx.x);
  }
};

// Streaming: the slice is re-read (from L2) on every pass.
template <int THREADS>
struct StreamTile {
  const float* s = nullptr;
  const uint8_t* m = nullptr;
  int64_t lo = 0, hi = 0;
  __device__ __forceinline__ void load(const float* s_, const uint8_t* m_, int64_t lo_, int64_t hi_) {
    s = s_;
    m = m_;
    lo = lo_;
    hi = hi_;
  }
  template <class F>
  __device__ __forceinline__ void each(F&& f) const {
    for (int64_t i = lo + threadIdx.x; i < hi; i += THREADS) {
      const bool k = m ? m[i] != 0 : true;
      f(k ? s[i] : -INFINITY, k, i);
    }
  }
};

// ---------------------------------------------------------------- row groups
// reduce<MAX>(f, u): combines (f, u) over all threads of all blocks of the row
// (f by max or sum, u by sum); every thread gets the same result.

template <int THREADS>
struct ClusterGroup {
  static constexpr int NW = THREADS / 32;
  float* red_f;
  unsigned* red_u;  // [NW]
  float* slot_f;
  unsigned* slot_u;  // [2], by reduction parity: this block's total, read by the cluster
  float* bc_f;
  unsigned* bc_u;  // [2], by reduction parity: the row's total, for this block's threads
  int C;
  int phase = 0;

  template <bool MAX>
  __device__ __forceinline__ void reduce(float& f, unsigned& u) {
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    warp_reduce<MAX>(f, u);
    if (lane == 0) {
      red_f[w] = f;
      red_u[w] = u;
    }
    __syncthreads();
    const int par = phase & 1;
    if (w == 0) {
      f = lane < NW ? red_f[lane] : identity<MAX>();
      u = lane < NW ? red_u[lane] : 0u;
      warp_reduce<MAX>(f, u);
      if (lane == 0) {
        slot_f[par] = f;
        slot_u[par] = u;
      }
    }
    cg::cluster_group cl = cg::this_cluster();
    cl.sync();
    if (w == 0) {  // one warp gathers the C block totals (fixed order), then broadcasts
      f = identity<MAX>();
      u = 0;
      if (lane < C) {
        f = *cl.map_shared_rank(slot_f + par, lane);
        u = *cl.map_shared_rank(slot_u + par, lane);
      }
      warp_reduce<MAX>(f, u);
      if (lane == 0) {
        bc_f[par] = f;
        bc_u[par] = u;
      }
    }
    __syncthreads();
    f = bc_f[par];
    u = bc_u[par];
    ++phase;
  }
};

template <int THREADS>
struct GridGroup {
  static constexpr int NW = THREADS / 32;
  float* red_f;
  unsigned* red_u;  // [NW] shared
  unsigned* ctr;    // this row's arrival counter (zeroed before the launch)
  float* wf;
  unsigned* wu;  // this row's partials [2][G] (global)
  float* bc_f;
  unsigned* bc_u;  // [2] shared: the row's total, for this block's threads
  int G, g;
  int phase = 0;

  template <bool MAX>
  __device__ __forceinline__ void reduce(float& f, unsigned& u) {
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    warp_reduce<MAX>(f, u);
    if (lane == 0) {
      red_f[w] = f;
      red_u[w] = u;
    }
    __syncthreads();
    const int par = phase & 1;
    if (w == 0) {
      f = lane < NW ? red_f[lane] : identity<MAX>();
      u = lane < NW ? red_u[lane] : 0u;
      warp_reduce<MAX>(f, u);
      if (lane == 0) {  // publish this block's total, then wait for the row's other blocks
        wf[par * G + g] = f;
        wu[par * G + g] = u;
        __threadfence();
        atomicAdd(ctr, 1u);
        const unsigned target = unsigned(G) * unsigned(phase + 1);
        while (ld_acquire(ctr) < target) {
        }
        __threadfence();
      }
      __syncwarp();
      // this warp gathers the G block totals in a fixed order (same result in every block)
      f = identity<MAX>();
      u = 0;
      for (int j = lane; j < G; j += 32) {
        f = combine<MAX>(f, __ldcg(wf + par * G + j));
        u += __ldcg(wu + par * G + j);
      }
      warp_reduce<MAX>(f, u);
      if (lane == 0) {
        bc_f[par] = f;
        bc_u[par] = u;
      }
    }
    __syncthreads();
    f = bc_f[par];
    u = bc_u[par];
    ++phase;
  }
};

// ---------------------------------------------------------------- forward
struct FwdArgs {
  const float* s;
  const uint8_t* mask;
  const float* k;
  float* out;
  float* saved;
  int64_t n, row0, sv_stride;
  int n_iters;
  float k_scalar;
  double eps, eps_init, eps_decay;
  // grid path
  unsigned* ctr;
  float* wf;
  unsigned* wu;
  int G;
};

// One row, this block's part of it. S_sh: shared scratch for S_t (kSmemT).
template <int THREADS, class Tile, class Group>
__device__ __forceinline__ void fwd_row(const FwdArgs& A, int64_t row, int part, int nparts, Group& grp, float* S_sh) {
  const int64_t chunk = (A.n + nparts - 1) / nparts;
  const int64_t lo = min(A.n, int64_t(part) * chunk);
  const int64_t hi = min(A.n, lo + chunk);
  const float* srow = A.s + row * A.n;
  const uint8_t* mrow = A.mask ? A.mask + row * A.n : nullptr;
  float* orow = A.out + row * A.n;
  float* sv = A.saved + row * A.sv_stride;
  const int T = A.n_iters;
  const bool leader = part == 0 && threadIdx.x == 0;
  float* S = T <= kSmemT ? S_sh : sv + 2 * T;  // where the leader keeps S_t until P_t is known

  Tile tile;
  tile.load(srow, mrow, lo, hi);

  float mx = -INFINITY;
  unsigned cnt = 0;
  tile.each([&](float v, bool keep, int64_t) {
    if (keep) {
      mx = fmaxf(mx, v);
      ++cnt;
    }
  });
  grp.template reduce<true>(mx, cnt);
  if (cnt == 0) {  // fully masked row: zeros everywhere
    tile.each([&](float, bool, int64_t i) {
      if (i < hi) orow[i] = 0.f;
    });
    if (leader)
      for (int64_t j = 0; j < A.sv_stride; ++j) sv[j] = 0.f;
    return;
  }
  const float smax = mx;
  const float kv = A.k ? A.k[row] : A.k_scalar;
  const float logk = logf(fmaxf(kv, 1e-20f));
  double e = eps_first(A.eps, A.eps_init);
  // iteration 1: every kept z is 0, LSE = log |U|
  float l = logf(float(cnt));
  float a = float(e) * (logk - l);
  if (leader) {
    sv[0] = a;
    sv[T] = l;
  }
  for (int t = 2; t <= T; ++t) {
    e = eps_next(e, A.eps, A.eps_decay);
    const float thr = -a;
    const float m = fminf(smax, thr);
    const float sc = float(kLog2e / e);
    float sum = 0.f;
    unsigned c = 0;
    tile.each([&](float v, bool keep, int64_t) {
      const bool sat = v > thr;
      const float w = ex2((v - m) * sc);
      sum += (keep && !sat) ? w : 0.f;
      c += (keep && sat) ? 1u : 0u;
    });
    grp.template reduce<false>(sum, c);
    const float satw = c > 0 ? float(c) * ex2((thr - m) * sc) : 0.f;
    const float Z = sum + satw;
    l = logf(Z);
    a = float(e) * (logk - l) - m;
    if (leader) {
      sv[t - 1] = a;
      sv[T + t - 1] = l;
      S[t - 1] = satw / Z;
    }
  }
  const double ef = eps_next(e, A.eps, A.eps_decay);
  const float scf = float(kLog2e / ef);
  tile.each([&](float v, bool keep, int64_t i) {
    if (i < hi) orow[i] = keep ? ex2(fminf(v + a, 0.f) * scf) : 0.f;
  });
  if (leader) {  // P_T = 1, P_{t-1} = P_t S_t;  Q = sum_t P_t e_t
    float Pt = 1.f;
    double Q = 0;
    for (int t = T; t >= 1; --t) {
      const float St = t >= 2 ? S[t - 1] : 0.f;
      sv[2 * T + t - 1] = Pt;
      if (t >= 2) Pt *= St;
    }
    double ee = eps_first(A.eps, A.eps_init);
    for (int t = 1; t <= T; ++t) {
      Q += double(sv[2 * T + t - 1]) * double(float(ee));
      ee = eps_next(ee, A.eps, A.eps_decay);
    }
    sv[3 * T] = smax;
    sv[3 * T + 1] = float(Q);
  }
}

constexpr int min_blocks(int threads) { return threads >= 1024 ? 1 : 1024 / threads; }

template <int THREADS, int ELEMS>
__global__ void __launch_bounds__(THREADS, min_blocks(THREADS)) cd_fwd_cluster(FwdArgs A) {
  __shared__ float red_f[THREADS / 32];
  __shared__ unsigned red_u[THREADS / 32];
  __shared__ float slot_f[2], bc_f[2];
  __shared__ unsigned slot_u[2], bc_u[2];
  __shared__ float S_sh[kSmemT];
  cg::cluster_group cl = cg::this_cluster();
  const int C = int(cl.num_blocks());
  const int rank = int(cl.block_rank());
  const int64_t row = A.row0 + blockIdx.x / C;
  ClusterGroup<THREADS> grp{red_f, red_u, slot_f, slot_u, bc_f, bc_u, C};
  fwd_row<THREADS, RegTile<THREADS, ELEMS>>(A, row, rank, C, grp, S_sh);
  cl.sync();  // no block leaves while another may still read its shared memory
}

// ELEMS == 0: streaming tile.
template <int THREADS, int ELEMS>
__global__ void __launch_bounds__(THREADS, 1) cd_fwd_grid(FwdArgs A) {
  __shared__ float red_f[THREADS / 32];
  __shared__ unsigned red_u[THREADS / 32];
  __shared__ float bc_f[2];
  __shared__ unsigned bc_u[2];
  __shared__ float S_sh[kSmemT];
  const int G = A.G;
  const int64_t rl = blockIdx.x / G;
  const int g = int(blockIdx.x % G);
  GridGroup<THREADS> grp{red_f, red_u, A.ctr + rl, A.wf + rl * 2 * G, A.wu + rl * 2 * G, bc_f, bc_u, G, g};
  if constexpr (ELEMS == 0)
    fwd_row<THREADS, StreamTile<THREADS>>(A, A.row0 + rl, g, G, grp, S_sh);
  else
    fwd_row<THREADS, RegTile<THREADS, ELEMS>>(A, A.row0 + rl, g, G, grp, S_sh);
}

// ---------------------------------------------------------------- backward
constexpr int kBT = 256;                // threads per block
constexpr int kBE = 4;                  // entries per thread
constexpr int kBChunk = kBT * kBE;      // entries per block
constexpr int kTC = 128;                // iterations per table fill

struct BwdArgs {
  const float* s;
  const uint8_t* mask;
  const float* k;
  const float* out;
  const float* saved;
  const float* dout;
  float* ds;
  float* dk;
  float* part;  // (rows, nb)
  int64_t n, sv_stride;
  int n_iters, nb;
  float k_scalar;
  double eps, eps_init, eps_decay;
};

__device__ __forceinline__ float block_sum(float f, float* red) {  // result in every thread
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  unsigned u = 0;
  warp_reduce<false>(f, u);
  __syncthreads();  // red may be in use by an earlier call
  if (lane == 0) red[w] = f;
  __syncthreads();
  f = lane < kBT / 32 ? red[lane] : 0.f;
  warp_reduce<false>(f, u);
  return f;
}

// part[row, b] = sum over this block's kept entries with s <= -a_T of dout·out
__global__ void __launch_bounds__(kBT) cd_bwd_partial(BwdArgs A) {
  __shared__ float red[kBT / 32];
  const int64_t row = blockIdx.x / A.nb;
  const int b = int(blockIdx.x % A.nb);
  const float thr = -A.saved[row * A.sv_stride + A.n_iters - 1];
  const int64_t base = row * A.n;
  float acc = 0.f;
#pragma unroll
  for (int j = 0; j < kBE; ++j) {
    const int64_t i = int64_t(b) * kBChunk + j * kBT + threadIdx.x;
    if (i < A.n) {
      const bool keep = A.mask ? A.mask[base + i] != 0 : true;
      if (keep && !(A.s[base + i] > thr)) acc += A.dout[base + i] * A.out[base + i];
    }
  }
  acc = block_sum(acc, red);
  if (threadIdx.x == 0) A.part[row * A.nb + b] = acc;
}

__global__ void __launch_bounds__(kBT) cd_bwd_apply(BwdArgs A) {
  __shared__ double c_e[kTC];
  __shared__ float c_thr[kTC], c_m[kTC], c_sc[kTC], c_off[kTC], c_P[kTC];
  __shared__ float sh_gsum, sh_inv_ef;
  const int64_t row = blockIdx.x / A.nb;
  const int b = int(blockIdx.x % A.nb);
  const float* sv = A.saved + row * A.sv_stride;
  const int T = A.n_iters;
  const int64_t base = row * A.n;
  const float smax = sv[3 * T];
  const float thrT = -sv[T - 1];

  if (threadIdx.x < 32) {  // G·e_{T+1}: the row's partials in a fixed order
    float f = 0.f;
    unsigned u = 0;
    for (int j = threadIdx.x; j < A.nb; j += 32) f += A.part[row * A.nb + j];
    warp_reduce<false>(f, u);
    if (threadIdx.x == 0) sh_gsum = f;
  }

  float v[kBE], C[kBE];
  unsigned keep = 0;
#pragma unroll
  for (int j = 0; j < kBE; ++j) {
    const int64_t i = int64_t(b) * kBChunk + j * kBT + threadIdx.x;
    bool kp = false;
    float x = -INFINITY;
    if (i < A.n) {
      kp = A.mask ? A.mask[base + i] != 0 : true;
      if (kp) x = A.s[base + i];
    }
    v[j] = x;
    keep |= unsigned(kp) << j;
    C[j] = 0.f;
  }

  double e_run = eps_first(A.eps, A.eps_init);  // thread 0 walks the schedule
  for (int t0 = 2; t0 <= T; t0 += kTC) {
    const int cnt = min(kTC, T - t0 + 1);
    __syncthreads();  // the previous tables are consumed
    if (threadIdx.x == 0)
      for (int j = 0; j < cnt; ++j) {
        e_run = eps_next(e_run, A.eps, A.eps_decay);
        c_e[j] = e_run;
      }
    __syncthreads();
    for (int j = threadIdx.x; j < cnt; j += kBT) {
      const int t = t0 + j;
      const float thr = -sv[t - 2];
      c_thr[j] = thr;
      c_m[j] = fminf(smax, thr);
      c_sc[j] = float(kLog2e / c_e[j]);
      c_off[j] = sv[T + t - 1] * kLog2ef;
      c_P[j] = sv[2 * T + t - 1];
    }
    __syncthreads();
    for (int j = 0; j < cnt; ++j) {
      const float thr = c_thr[j], m = c_m[j], sc = c_sc[j], off = c_off[j], P = c_P[j];
#pragma unroll
      for (int q = 0; q < kBE; ++q) {
        const float w = ex2((v[q] - m) * sc - off);
        C[q] += (v[q] > thr) ? 0.f : P * w;
      }
    }
  }
  if (threadIdx.x == 0) sh_inv_ef = float(1.0 / eps_next(e_run, A.eps, A.eps_decay));
  __syncthreads();
  const float inv_ef = sh_inv_ef;
  const float G = sh_gsum * inv_ef;
  if (b == 0 && threadIdx.x == 0 && A.dk) {
    const float kv = A.k ? A.k[row] : A.k_scalar;
    const float Q = sv[3 * T + 1];
    A.dk[row] = kv >= 1e-20f ? G * Q / kv : 0.f;
  }
#pragma unroll
  for (int j = 0; j < kBE; ++j) {
    const int64_t i = int64_t(b) * kBChunk + j * kBT + threadIdx.x;
    if (i < A.n) {
      float r = 0.f;
      if ((keep >> j) & 1u) {
        const float gv = A.dout[base + i] * A.out[base + i] * inv_ef;
        const float d = (v[j] > thrT) ? 0.f : gv;
        r = d - G * C[j];
      }
      A.ds[base + i] = r;
    }
  }
}

// ---------------------------------------------------------------- host: plans
using FwdKernel = void (*)(FwdArgs);

FwdKernel cluster_kernel(int threads, int elems) {
#define COLT5_CD_CASE(TH, EL) \
  if (threads == TH && elems == EL) return cd_fwd_cluster<TH, EL>;
  COLT5_CD_CASE(256, 1)
  COLT5_CD_CASE(256, 2)
  COLT5_CD_CASE(256, 4)
  COLT5_CD_CASE(256, 8)
  COLT5_CD_CASE(1024, 4)
  COLT5_CD_CASE(1024, 8)
  COLT5_CD_CASE(1024, 16)
#undef COLT5_CD_CASE
  COLT5_FAIL("coor_descent cuda: no cluster kernel for ", threads, " threads x ", elems);
}

FwdKernel grid_kernel(int elems) {  // 1024 threads; 0 = streaming
  switch (elems) {
    case 0: return cd_fwd_grid<1024, 0>;
    case 4: return cd_fwd_grid<1024, 4>;
    case 8: return cd_fwd_grid<1024, 8>;
    case 16: return cd_fwd_grid<1024, 16>;
  }
  COLT5_FAIL("coor_descent cuda: no grid kernel for ", elems, " entries per thread");
}

int pow2_at_least(int64_t x) {
  int p = 1;
  while (p < x) p *= 2;
  return p;
}

struct DeviceInfo {
  int device = 0, sms = 0;
};

DeviceInfo device_info() {
  DeviceInfo d;
  CUDA_CHECK(cudaGetDevice(&d.device));
  CUDA_CHECK(cudaDeviceGetAttribute(&d.sms, cudaDevAttrMultiProcessorCount, d.device));
  return d;
}

std::mutex g_cache_mu;

// Can clusters of C blocks of this kernel run at all on the device?
bool cluster_ok(FwdKernel kern, int threads, int C, int device) {
  static std::map<std::tuple<void*, int, int>, bool> cache;
  std::lock_guard<std::mutex> lk(g_cache_mu);
  const auto key = std::make_tuple(reinterpret_cast<void*>(kern), C, device);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  if (C > 8) CUDA_CHECK(cudaFuncSetAttribute(kern, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(unsigned(C));
  cfg.blockDim = dim3(unsigned(threads));
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = unsigned(C);
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  int nclusters = 0;
  const cudaError_t err = cudaOccupancyMaxActiveClusters(&nclusters, kern, &cfg);
  if (err != cudaSuccess) {
    cudaGetLastError();
    nclusters = 0;
  }
  return cache[key] = nclusters > 0;
}

// Blocks of this kernel that can be resident at once on the whole device.
int grid_capacity(FwdKernel kern, int threads, const DeviceInfo& d) {
  static std::map<std::pair<void*, int>, int> cache;
  std::lock_guard<std::mutex> lk(g_cache_mu);
  const auto key = std::make_pair(reinterpret_cast<void*>(kern), d.device);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  int per_sm = 0;
  CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kern, threads, 0));
  return cache[key] = per_sm * d.sms;
}

struct Plan {
  CoorDescentPath path = CoorDescentPath::cluster;
  int threads = 256, elems = 1, bpr = 1;
  int64_t rows_per_launch = 0;
  FwdKernel kern = nullptr;
};

void cluster_shape(int64_t chunk, int& threads, int& elems) {
  if (chunk <= 2048) {
    threads = 256;
    elems = pow2_at_least((chunk + 255) / 256);
  } else {
    threads = 1024;
    elems = pow2_at_least((chunk + 1023) / 1024);
  }
}

bool try_cluster(const CoorDescentParams& p, int C, const DeviceInfo& d, Plan& pl) {
  const int64_t chunk = (p.n + C - 1) / C;
  if (chunk > kClusterBlockMax) return false;
  Plan q;
  q.path = CoorDescentPath::cluster;
  q.bpr = C;
  cluster_shape(chunk, q.threads, q.elems);
  q.kern = cluster_kernel(q.threads, q.elems);
  q.rows_per_launch = p.rows;
  if (!cluster_ok(q.kern, q.threads, C, d.device)) return false;
  pl = q;
  return true;
}

bool try_grid(const CoorDescentParams& p, int G, const DeviceInfo& d, Plan& pl) {
  const int64_t chunk = (p.n + G - 1) / G;
  if (chunk > kClusterBlockMax) return false;
  Plan q;
  q.path = CoorDescentPath::grid;
  q.threads = 1024;
  q.elems = std::max(4, pow2_at_least((chunk + 1023) / 1024));
  q.bpr = G;
  q.kern = grid_kernel(q.elems);
  const int cap = grid_capacity(q.kern, q.threads, d);
  if (G > cap) return false;
  q.rows_per_launch = std::max<int64_t>(1, cap / G);
  pl = q;
  return true;
}

Plan make_plan(const CoorDescentParams& p, const CoorDescentLaunch& L) {
  const DeviceInfo d = device_info();
  Plan pl;
  const int want = L.blocks_per_row;
  switch (L.path) {
    case CoorDescentPath::cluster: {
      const int C = want > 0 ? want : 1;
      COLT5_CHECK(C == 1 || C == 2 || C == 4 || C == 8 || C == 16, "coor_descent cuda: cluster size must be 1, 2, 4, 8 or 16, got ", C);
      COLT5_CHECK(try_cluster(p, C, d, pl), "coor_descent cuda: rows of ", p.n, " entries do not fit a cluster of ", C,
                  " blocks on this device");
      return pl;
    }
    case CoorDescentPath::grid: {
      const int G = want > 0 ? want : int((p.n + 8191) / 8192);
      COLT5_CHECK(try_grid(p, G, d, pl), "coor_descent cuda: grid path with ", G, " blocks per row cannot hold rows of ",
                  p.n, " entries on this device");
      return pl;
    }
    case CoorDescentPath::grid_stream: {
      pl.path = CoorDescentPath::grid_stream;
      pl.threads = 1024;
      pl.elems = 0;
      pl.kern = grid_kernel(0);
      const int cap = grid_capacity(pl.kern, pl.threads, d);
      const int G = want > 0 ? want : int(std::min<int64_t>(cap, (p.n + 1023) / 1024));
      COLT5_CHECK(G >= 1 && G <= cap, "coor_descent cuda: grid-stream path needs 1..", cap, " blocks per row, got ", G);
      pl.bpr = G;
      pl.rows_per_launch = std::max<int64_t>(1, cap / G);
      return pl;
    }
    case CoorDescentPath::automatic:
      break;
  }
  // automatic: a cluster per row while the row fits, growing the cluster while
  // the GPU has idle SMs and each block keeps at least 2048 entries.
  if (p.n <= kClusterMaxC * kClusterBlockMax) {
    int C = 1;
    while ((p.n + C - 1) / C > kClusterBlockMax) C *= 2;
    while (C < kClusterMaxC && p.rows * 2 * C <= d.sms && (p.n + 2 * C - 1) / (2 * C) >= 2048) C *= 2;
    for (; C >= 1; C /= 2)
      if (try_cluster(p, C, d, pl)) return pl;
  }
  // grid: 8192 (else 16384) entries per block in registers, else stream from L2.
  for (int per_block : {8192, 16384}) {
    const int64_t G = (p.n + per_block - 1) / per_block;
    if (G <= INT_MAX && try_grid(p, int(G), d, pl)) return pl;
  }
  CoorDescentLaunch s;
  s.path = CoorDescentPath::grid_stream;
  return make_plan(p, s);
}

size_t align256(size_t x) { return (x + 255) / 256 * 256; }

struct FwdWorkspace {
  size_t ctr = 0, wf = 0, wu = 0, total = 0;  // byte offsets
};
FwdWorkspace fwd_workspace(const Plan& pl) {
  FwdWorkspace w;
  if (pl.path == CoorDescentPath::cluster) return w;
  const size_t r = size_t(pl.rows_per_launch), g = size_t(pl.bpr);
  w.ctr = 0;
  w.wf = align256(r * sizeof(unsigned));
  w.wu = w.wf + align256(r * 2 * g * sizeof(float));
  w.total = w.wu + align256(r * 2 * g * sizeof(unsigned));
  return w;
}

int64_t bwd_blocks_per_row(const CoorDescentParams& p) { return (p.n + kBChunk - 1) / kBChunk; }

size_t bwd_workspace(const CoorDescentParams& p) { return align256(size_t(p.rows * bwd_blocks_per_row(p)) * sizeof(float)); }

}  // namespace

size_t coor_descent_workspace_bytes(const CoorDescentParams& p, const CoorDescentLaunch& launch) {
  coor_descent_check_params(p);
  if (p.rows == 0 || p.n == 0) return 0;
  return std::max(fwd_workspace(make_plan(p, launch)).total, bwd_workspace(p));
}

std::string coor_descent_plan(const CoorDescentParams& p, const CoorDescentLaunch& launch) {
  coor_descent_check_params(p);
  if (p.rows == 0 || p.n == 0) return "empty";
  const Plan pl = make_plan(p, launch);
  std::ostringstream os;
  if (pl.path == CoorDescentPath::cluster)
    os << "cluster C=" << pl.bpr << " x " << pl.threads << " thr x " << pl.elems << "/thr";
  else if (pl.path == CoorDescentPath::grid)
    os << "grid G=" << pl.bpr << " x " << pl.threads << " thr x " << pl.elems << "/thr, " << pl.rows_per_launch
       << " rows/launch";
  else
    os << "grid-stream G=" << pl.bpr << " x " << pl.threads << " thr, " << pl.rows_per_launch << " rows/launch";
  return os.str();
}

void coor_descent_forward(const CoorDescentParams& p, const float* s, const uint8_t* mask, const float* k, float* out,
                          float* saved, void* workspace, cudaStream_t stream, const CoorDescentLaunch& launch) {
  coor_descent_check_params(p);
  if (p.rows == 0) return;
  const int64_t W = coor_descent_saved_per_row(p);
  if (p.n == 0) {  // every row is empty: nothing kept
    CUDA_CHECK(cudaMemsetAsync(saved, 0, size_t(p.rows * W) * sizeof(float), stream));
    return;
  }
  const Plan pl = make_plan(p, launch);
  FwdArgs A{};
  A.s = s;
  A.mask = mask;
  A.k = k;
  A.out = out;
  A.saved = saved;
  A.n = p.n;
  A.sv_stride = W;
  A.n_iters = p.n_iters;
  A.k_scalar = float(p.k_scalar);
  A.eps = p.eps;
  A.eps_init = p.eps_init;
  A.eps_decay = p.eps_decay;

  cudaLaunchConfig_t cfg = {};
  cudaLaunchAttribute attr[1];
  cfg.blockDim = dim3(unsigned(pl.threads));
  cfg.dynamicSmemBytes = 0;
  cfg.stream = stream;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  if (pl.path == CoorDescentPath::cluster) {
    const int64_t blocks = p.rows * pl.bpr;
    COLT5_CHECK(blocks <= INT_MAX, "coor_descent cuda: too many rows (", p.rows, ")");
    A.row0 = 0;
    cfg.gridDim = dim3(unsigned(blocks));
    attr[0].id = cudaLaunchAttributeClusterDimension;
    attr[0].val.clusterDim.x = unsigned(pl.bpr);
    attr[0].val.clusterDim.y = 1;
    attr[0].val.clusterDim.z = 1;
    CUDA_CHECK(cudaLaunchKernelEx(&cfg, pl.kern, A));
    return;
  }
  COLT5_CHECK(workspace != nullptr, "coor_descent cuda: the grid path needs a workspace");
  const FwdWorkspace ws = fwd_workspace(pl);
  char* base = static_cast<char*>(workspace);
  A.ctr = reinterpret_cast<unsigned*>(base + ws.ctr);
  A.wf = reinterpret_cast<float*>(base + ws.wf);
  A.wu = reinterpret_cast<unsigned*>(base + ws.wu);
  A.G = pl.bpr;
  attr[0].id = cudaLaunchAttributeCooperative;
  attr[0].val.cooperative = 1;
  for (int64_t r0 = 0; r0 < p.rows; r0 += pl.rows_per_launch) {
    const int64_t nr = std::min(pl.rows_per_launch, p.rows - r0);
    CUDA_CHECK(cudaMemsetAsync(A.ctr, 0, size_t(nr) * sizeof(unsigned), stream));
    A.row0 = r0;
    cfg.gridDim = dim3(unsigned(nr * pl.bpr));
    CUDA_CHECK(cudaLaunchKernelEx(&cfg, pl.kern, A));
  }
}

void coor_descent_backward(const CoorDescentParams& p, const float* s, const uint8_t* mask, const float* k,
                           const float* out, const float* saved, const float* dout, float* ds, float* dk,
                           void* workspace, cudaStream_t stream) {
  coor_descent_check_params(p);
  if (p.rows == 0) return;
  if (p.n == 0) {
    if (dk) CUDA_CHECK(cudaMemsetAsync(dk, 0, size_t(p.rows) * sizeof(float), stream));
    return;
  }
  COLT5_CHECK(workspace != nullptr, "coor_descent cuda: the backward needs a workspace");
  const int64_t nb = bwd_blocks_per_row(p);
  const int64_t blocks = p.rows * nb;
  COLT5_CHECK(blocks <= INT_MAX, "coor_descent cuda: too many blocks (", blocks, ")");
  BwdArgs A{};
  A.s = s;
  A.mask = mask;
  A.k = k;
  A.out = out;
  A.saved = saved;
  A.dout = dout;
  A.ds = ds;
  A.dk = dk;
  A.part = static_cast<float*>(workspace);
  A.n = p.n;
  A.sv_stride = coor_descent_saved_per_row(p);
  A.n_iters = p.n_iters;
  A.nb = int(nb);
  A.k_scalar = float(p.k_scalar);
  A.eps = p.eps;
  A.eps_init = p.eps_init;
  A.eps_decay = p.eps_decay;
  cd_bwd_partial<<<unsigned(blocks), kBT, 0, stream>>>(A);
  CUDA_CHECK_LAUNCH();
  cd_bwd_apply<<<unsigned(blocks), kBT, 0, stream>>>(A);
  CUDA_CHECK_LAUNCH();
}

}  // namespace colt5::kernels::cuda
