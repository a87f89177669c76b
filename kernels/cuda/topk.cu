// Hard top-k on the GPU: radix select + gather + shared-memory bitonic sort.
// Results are bit-identical to kernels/cpu/topk.cpp (same order, same ties).
//
// Shape letters: R rows, n entries per row, k kept per row, B blocks per row
// (multi-block path), P = next power of two of the part being sorted.
//
// Order keys: key(v) = IEEE bits with the sign bit flipped for positives and all
// bits flipped for negatives (monotone in v), with -0 folded onto +0 and every
// NaN mapped to 0 (below -inf, whose key is 0x007FFFFF). Ranking = key desc,
// then index asc; the composite used for sorting is (~key, index) ascending.
//
// Select: pass p looks at an 11-bit digit of the key (f32: bits 31..21, 20..10,
// 9..0; f64: six passes). It histograms the digit over the entries whose
// higher digits equal the prefix chosen so far, then picks the digit d where
// the count of entries above reaches `krem` (how many of the k are still to be
// placed), and sets krem -= (count above d). After the last pass, T = the k-th
// key, krem = how many entries equal to T are kept, cnt_gt = k - krem.
// Gather: every entry with key > T goes to the sort buffer (cnt_gt of them);
// the first krem entries with key == T, in index order (block-wide scans, plus
// per-block tie counts from the last pass across blocks), are written straight
// to outputs [cnt_gt, k) -- they are already in final order. Sort: bitonic
// sort of the cnt_gt composites in shared memory (CUB segmented radix sort
// when k exceeds the shared-memory capacity).
#include "kernels/cuda/topk.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <cub/device/device_segmented_radix_sort.cuh>
#include <cub/device/device_segmented_sort.cuh>
#include <mutex>
#include <set>
#include <utility>

#include "engine/cuda/check.h"
#include "engine/error.h"

namespace colt5::kernels::cuda {
namespace {

constexpr int kDigitBits = 11;
constexpr int kHistBins = 1 << kDigitBits;        // 2048
constexpr int kItems = 4;                          // contiguous entries per thread per tile
constexpr size_t kSortCapBytes = 128 * 1024;       // shared-memory bitonic capacity
constexpr size_t kStaticSmemMargin = 1024;         // static shared memory of the block kernel, at most
constexpr int64_t kMinChunk = 8192;                // multi-block: entries per block, at least
constexpr int kPassThreads = 512;                  // multi-block pass / gather kernels

using u32 = uint32_t;
using u64 = unsigned long long;

struct CompD {  // f64 sort element: (~key, index) compared lexicographically
  u64 key;
  u32 idx;
  u32 pad;
};

template <class T>
struct Tr;
template <>
struct Tr<float> {
  using Bits = u32;
  using Comp = u64;  // (~key << 32) | index
  static constexpr int kBits = 32;
  static constexpr Bits kSign = 0x80000000u;
  static constexpr Bits kInf = 0x7F800000u;
  __device__ static Comp comp(Bits nkey, u32 idx) { return (Comp(nkey) << 32) | idx; }
  __device__ static u32 idx_of(Comp c) { return u32(c); }
  __device__ static bool less(Comp a, Comp b) { return a < b; }
  __device__ static Comp sentinel() { return ~Comp(0); }
  __device__ static float from_bits(Bits b) { return __uint_as_float(b); }
};
template <>
struct Tr<double> {
  using Bits = u64;
  using Comp = CompD;
  static constexpr int kBits = 64;
  static constexpr Bits kSign = 0x8000000000000000ull;
  static constexpr Bits kInf = 0x7FF0000000000000ull;
  __device__ static Comp comp(Bits nkey, u32 idx) { return CompD{nkey, idx, 0u}; }
  __device__ static u32 idx_of(const Comp& c) { return c.idx; }
  __device__ static bool less(const Comp& a, const Comp& b) {
    return a.key < b.key || (a.key == b.key && a.idx < b.idx);
  }
  __device__ static Comp sentinel() { return CompD{~0ull, ~0u, 0u}; }
  __device__ static double from_bits(Bits b) { return __longlong_as_double((long long)b); }
};

template <class T>
struct Passes {
  static constexpr int kBits = Tr<T>::kBits;
  static constexpr int kCount = (kBits + kDigitBits - 1) / kDigitBits;  // f32: 3, f64: 6
  __host__ __device__ static constexpr int hi(int p) { return kBits - kDigitBits * p; }
  __host__ __device__ static constexpr int shift(int p) { return hi(p) > kDigitBits ? hi(p) - kDigitBits : 0; }
  __host__ __device__ static constexpr int width(int p) { return hi(p) - shift(p); }
  static constexpr int kLastBins = 1 << width(kCount - 1);  // f32: 1024, f64: 512
};

template <class T>
__device__ __forceinline__ typename Tr<T>::Bits order_key(typename Tr<T>::Bits u) {
  using Bits = typename Tr<T>::Bits;
  const bool nan = (u & ~Tr<T>::kSign) > Tr<T>::kInf;
  if (u == Tr<T>::kSign) u = 0;  // -0 -> +0
  const Bits key = (u & Tr<T>::kSign) ? ~u : (u | Tr<T>::kSign);
  return nan ? Bits(0) : key;
}

// Does `key` agree with `prefix` on the digits above pass p?
template <class T>
__device__ __forceinline__ bool matches(typename Tr<T>::Bits key, typename Tr<T>::Bits prefix, int p) {
  const int h = Passes<T>::hi(p);
  return p == 0 || (key >> h) == (prefix >> h);
}

// kItems contiguous entries starting at i0 (< end); `vec`: row + i0 is 16-byte aligned.
template <bool kGlobal, class Bits>
__device__ __forceinline__ void load_items(const Bits* row, int64_t i0, int64_t end, bool vec, Bits (&v)[kItems]) {
  if (vec && i0 + kItems <= end) {
    if constexpr (sizeof(Bits) == 4) {
      const uint4* p = reinterpret_cast<const uint4*>(row + i0);
      const uint4 q = kGlobal ? __ldg(p) : *p;
      v[0] = q.x, v[1] = q.y, v[2] = q.z, v[3] = q.w;
    } else {
      const ulonglong2* p = reinterpret_cast<const ulonglong2*>(row + i0);
      const ulonglong2 a = kGlobal ? __ldg(p) : p[0];
      const ulonglong2 b = kGlobal ? __ldg(p + 1) : p[1];
      v[0] = a.x, v[1] = a.y, v[2] = b.x, v[3] = b.y;
    }
  } else {
#pragma unroll
    for (int j = 0; j < kItems; ++j) v[j] = (i0 + j < end) ? (kGlobal ? __ldg(row + i0 + j) : row[i0 + j]) : Bits(0);
  }
}

// Histogram increments with runs of equal digits merged into one atomic
// (exact ties, the common case in the router, then cost one atomic per run).
struct RunCounter {
  u32 cur = ~0u, cnt = 0;
  __device__ __forceinline__ void add(u32* hist, u32 d) {
    if (d == cur) {
      ++cnt;
    } else {
      if (cnt) atomicAdd(hist + cur, cnt);
      cur = d;
      cnt = 1;
    }
  }
  __device__ __forceinline__ void flush(u32* hist) {
    if (cnt) atomicAdd(hist + cur, cnt);
  }
};

// Block-wide exclusive sum; *total = sum over the block. warp_tot: >= 32 words
// of shared memory. Contains barriers: call from every thread.
template <int THREADS>
__device__ __forceinline__ u32 block_exclusive_sum(u32 v, u32* warp_tot, u32* total) {
  constexpr int W = THREADS / 32;
  const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
  u32 inc = v;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const u32 t = __shfl_up_sync(0xffffffffu, inc, o);
    if (lane >= o) inc += t;
  }
  if (lane == 31) warp_tot[wid] = inc;
  __syncthreads();
  if (wid == 0) {
    u32 w = lane < W ? warp_tot[lane] : 0u;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const u32 t = __shfl_up_sync(0xffffffffu, w, o);
      if (lane >= o) w += t;
    }
    if (lane < W) warp_tot[lane] = w;
  }
  __syncthreads();
  const u32 before = wid ? warp_tot[wid - 1] : 0u;
  *total = warp_tot[W - 1];
  __syncthreads();
  return before + inc - v;
}

// Picks the digit whose bucket holds the krem-th largest entry of `hist`
// (shared, kHistBins counts). Writes sel[0] = digit, sel[1] = krem within it.
template <int THREADS>
__device__ __forceinline__ void select_digit(const u32* hist, u32 krem, u32* warp_tot, u32* sel) {
  constexpr int BPT = kHistBins / THREADS;
  static_assert(BPT >= 1 && kHistBins % THREADS == 0, "select_digit: THREADS must divide 2048");
  const int top = kHistBins - int(threadIdx.x) * BPT;  // this thread: bins [top - BPT, top), high first
  u32 h[BPT];
  u32 s = 0;
#pragma unroll
  for (int j = 0; j < BPT; ++j) {
    h[j] = hist[top - 1 - j];
    s += h[j];
  }
  u32 total;
  u32 above = block_exclusive_sum<THREADS>(s, warp_tot, &total);
  if (above < krem && above + s >= krem) {
#pragma unroll
    for (int j = 0; j < BPT; ++j) {
      if (above + h[j] >= krem) {
        sel[0] = u32(top - 1 - j);
        sel[1] = krem - above;
        break;
      }
      above += h[j];
    }
  }
  __syncthreads();
}

template <class C>
__device__ __forceinline__ C shfl_xor_comp(const C& v, int mask) {
  if constexpr (sizeof(C) == 8) {
    return __shfl_xor_sync(0xffffffffu, v, mask);
  } else {
    C r;
    r.key = __shfl_xor_sync(0xffffffffu, v.key, mask);
    r.idx = __shfl_xor_sync(0xffffffffu, v.idx, mask);
    r.pad = 0;
    return r;
  }
}

// Bitonic compare-exchange of element i (held in `a` by this lane) with element
// i ^ stride (held by lane ^ stride), stride < 32; `up`: this block of `size`
// is being sorted ascending.
template <class T>
__device__ __forceinline__ void warp_cas(typename Tr<T>::Comp& a, u32 lane, u32 stride, bool up) {
  const auto b = shfl_xor_comp(a, int(stride));
  const bool keep_min = ((lane & stride) == 0) == up;
  const bool b_less = Tr<T>::less(b, a);
  if (keep_min == b_less) a = b;
}

// Ascending bitonic sort of c[0, P), P a power of two (shared memory, whole
// block). Element i is handled by thread i % THREADS; compare distances below
// 32 stay inside a warp and run on registers with shuffles, so only the larger
// distances go through shared memory with a barrier each.
template <class T, int THREADS>
__device__ __forceinline__ void bitonic_sort(typename Tr<T>::Comp* c, u32 P, bool use_shuffles = true) {
  if (P < 64 || !use_shuffles) {
    for (u32 size = 2; size <= P; size <<= 1) {
      for (u32 stride = size >> 1; stride > 0; stride >>= 1) {
        for (u32 t = threadIdx.x; t < P / 2; t += THREADS) {
          const u32 i = 2 * t - (t & (stride - 1));
          const u32 j = i + stride;
          const auto a = c[i];
          const auto b = c[j];
          const bool up = (i & size) == 0;
          if (Tr<T>::less(b, a) == up) {
            c[i] = b;
            c[j] = a;
          }
        }
        __syncthreads();
      }
    }
    return;
  }
  const u32 lane = threadIdx.x & 31u;
  // sizes 2..32: entirely within warps (P and THREADS are multiples of 32, so
  // every warp that enters the loop is full)
  for (u32 i = threadIdx.x; i < P; i += THREADS) {
    auto a = c[i];
#pragma unroll
    for (u32 size = 2; size <= 32; size <<= 1) {
#pragma unroll
      for (u32 stride = size >> 1; stride > 0; stride >>= 1) warp_cas<T>(a, lane, stride, (i & size) == 0);
    }
    c[i] = a;
  }
  __syncthreads();
  for (u32 size = 64; size <= P; size <<= 1) {
    for (u32 stride = size >> 1; stride >= 32; stride >>= 1) {
      for (u32 t = threadIdx.x; t < P / 2; t += THREADS) {
        const u32 i = 2 * t - (t & (stride - 1));
        const u32 j = i + stride;
        const auto a = c[i];
        const auto b = c[j];
        const bool up = (i & size) == 0;
        if (Tr<T>::less(b, a) == up) {
          c[i] = b;
          c[j] = a;
        }
      }
      __syncthreads();
    }
    for (u32 i = threadIdx.x; i < P; i += THREADS) {
      auto a = c[i];
      const bool up = (i & size) == 0;
#pragma unroll
      for (u32 stride = 16; stride > 0; stride >>= 1) warp_cas<T>(a, lane, stride, up);
      c[i] = a;
    }
    __syncthreads();
  }
}

__host__ __device__ inline u32 pow2_ceil(u32 v) {
  u32 p = 1;
  while (p < v) p <<= 1;
  return p;
}

__host__ __device__ constexpr size_t round_up(size_t v, size_t a) { return (v + a - 1) / a * a; }

// ------------------------------------------------------------------ block path
// One block per row; the row's bits live in shared memory:
//   [ raw bits (n, rounded to 16 B) | hist (2048 u32) aliased by comp (pow2(k)) ]
template <class T, int THREADS>
__global__ void __launch_bounds__(THREADS) topk_block_kernel(const T* __restrict__ x, int64_t n, int64_t k,
                                                             T* __restrict__ values, int64_t* __restrict__ indices,
                                                             bool shuffles) {
  using Bits = typename Tr<T>::Bits;
  using Comp = typename Tr<T>::Comp;
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ u32 warp_tot[32];
  __shared__ u32 sel[2];
  Bits* raw = reinterpret_cast<Bits*>(smem);
  unsigned char* tail = smem + round_up(size_t(n) * sizeof(Bits), 16);
  u32* hist = reinterpret_cast<u32*>(tail);
  Comp* comp = reinterpret_cast<Comp*>(tail);

  const int64_t row = blockIdx.x;
  const Bits* xr = reinterpret_cast<const Bits*>(x + row * n);
  constexpr int V = 16 / sizeof(Bits);
  // 1. the row into shared memory
  if ((reinterpret_cast<uintptr_t>(xr) & 15) == 0) {
    const int64_t nv = n / V;
#pragma unroll 4
    for (int64_t q = threadIdx.x; q < nv; q += THREADS)
      reinterpret_cast<uint4*>(raw)[q] = __ldg(reinterpret_cast<const uint4*>(xr) + q);
    for (int64_t i = nv * V + threadIdx.x; i < n; i += THREADS) raw[i] = __ldg(xr + i);
  } else {
    for (int64_t i = threadIdx.x; i < n; i += THREADS) raw[i] = __ldg(xr + i);
  }

  // 2. radix select
  Bits prefix = 0;
  u32 krem = u32(k);
#pragma unroll 1
  for (int p = 0; p < Passes<T>::kCount; ++p) {
    const int shift = Passes<T>::shift(p);
    const u32 dmask = (1u << Passes<T>::width(p)) - 1u;
    for (int d = threadIdx.x; d < kHistBins; d += THREADS) hist[d] = 0;
    __syncthreads();
    RunCounter rc;
    for (int64_t i0 = int64_t(threadIdx.x) * kItems; i0 < n; i0 += int64_t(THREADS) * kItems) {
      Bits v[kItems];
      load_items<false>(raw, i0, n, true, v);
#pragma unroll
      for (int j = 0; j < kItems; ++j) {
        const Bits key = order_key<T>(v[j]);
        if (i0 + j < n && matches<T>(key, prefix, p)) rc.add(hist, u32(key >> shift) & dmask);
      }
    }
    rc.flush(hist);
    __syncthreads();
    select_digit<THREADS>(hist, krem, warp_tot, sel);
    prefix |= Bits(sel[0]) << shift;
    krem = sel[1];
  }

  // 3. gather: > T to the sort buffer, the first krem == T straight to the output
  const Bits tkey = prefix;
  const u32 cnt_gt = u32(k) - krem;
  T* vrow = values + row * k;
  int64_t* irow = indices + row * k;
  u32 run_gt = 0, run_eq = 0;
  for (int64_t base = 0; base < n; base += int64_t(THREADS) * kItems) {
    const int64_t i0 = base + int64_t(threadIdx.x) * kItems;
    Bits v[kItems];
    Bits key[kItems];
    u32 cg = 0, ce = 0;
    if (i0 < n) load_items<false>(raw, i0, n, true, v);
#pragma unroll
    for (int j = 0; j < kItems; ++j) {
      key[j] = i0 + j < n ? order_key<T>(v[j]) : Bits(0);
      const bool valid = i0 + j < n;
      cg += (valid && key[j] > tkey);
      ce += (valid && key[j] == tkey);
    }
    u32 tot;
    const u32 excl = block_exclusive_sum<THREADS>(cg | (ce << 16), warp_tot, &tot);
    u32 pg = run_gt + (excl & 0xFFFFu), pe = run_eq + (excl >> 16);
#pragma unroll
    for (int j = 0; j < kItems; ++j) {
      if (i0 + j >= n) break;
      if (key[j] > tkey) {
        comp[pg++] = Tr<T>::comp(~key[j], u32(i0 + j));
      } else if (key[j] == tkey) {
        if (pe < krem) {
          vrow[cnt_gt + pe] = Tr<T>::from_bits(v[j]);
          irow[cnt_gt + pe] = i0 + j;
        }
        ++pe;
      }
    }
    run_gt += tot & 0xFFFFu;
    run_eq += tot >> 16;
    if (run_gt >= cnt_gt && run_eq >= krem) break;  // uniform
  }
  __syncthreads();

  // 4. sort the > T part
  if (cnt_gt == 0) return;
  const u32 P = pow2_ceil(cnt_gt);
  for (u32 i = cnt_gt + threadIdx.x; i < P; i += THREADS) comp[i] = Tr<T>::sentinel();
  __syncthreads();
  bitonic_sort<T, THREADS>(comp, P, shuffles);
  for (u32 j = threadIdx.x; j < cnt_gt; j += THREADS) {
    const u32 idx = Tr<T>::idx_of(comp[j]);
    vrow[j] = Tr<T>::from_bits(raw[idx]);
    irow[j] = idx;
  }
}

// ------------------------------------------------------------------ multi-block path
struct RowState {
  u64 prefix;  // key bits chosen so far (the k-th key after the last pass)
  u32 krem;    // entries still to place within the prefix
  u32 pad;
};

template <class T>
struct MbWs {
  u32* hist;       // (R, 2048) merged histogram of the current pass; zero between passes
  u32* counter;    // (R) blocks done in the current pass
  u32* gtctr;      // (R) slots taken in the sort buffer
  RowState* state; // (R)
  u32* blockhist;  // (R, B, kLastBins) per-block histogram of the last pass
  typename Tr<T>::Bits* keys_a;  // (R, k) ~key of the > T entries
  u32* idx_a;                    // (R, k) their indices
  typename Tr<T>::Bits* keys_b;  // fallback sort only
  u32* idx_b;
  int* seg_begin;  // (R) fallback sort only
  int* seg_end;
  void* cub_temp;
  size_t cub_bytes;
};

template <class T, int THREADS>
__global__ void __launch_bounds__(THREADS) mb_pass_kernel(const T* __restrict__ x, int64_t n, int64_t k, int64_t chunk,
                                                          int B, int p, MbWs<T> ws, bool fallback) {
  using Bits = typename Tr<T>::Bits;
  __shared__ u32 hist[kHistBins];
  __shared__ u32 warp_tot[32];
  __shared__ u32 sel[2];
  __shared__ int is_last;
  const int64_t row = blockIdx.x / B;
  const int b = blockIdx.x % B;
  const bool last_pass = p == Passes<T>::kCount - 1;
  Bits prefix = 0;
  u32 krem = u32(k);
  if (p > 0) {
    prefix = Bits(ws.state[row].prefix);
    krem = ws.state[row].krem;
  }
  const int shift = Passes<T>::shift(p);
  const int nb = 1 << Passes<T>::width(p);
  for (int d = threadIdx.x; d < kHistBins; d += THREADS) hist[d] = 0;
  __syncthreads();

  const Bits* xr = reinterpret_cast<const Bits*>(x + row * n);
  const bool vec = (reinterpret_cast<uintptr_t>(xr) & 15) == 0;
  const int64_t begin = int64_t(b) * chunk;
  const int64_t end = min(n, begin + chunk);
  RunCounter rc;
  // kBatch tiles' loads are issued before any is used (latency, not bandwidth,
  // bounds these kernels when few rows leave most of the GPU idle)
  constexpr int kBatch = 4;
  constexpr int64_t kTile = int64_t(THREADS) * kItems;
  for (int64_t i00 = begin + int64_t(threadIdx.x) * kItems; i00 < end; i00 += kTile * kBatch) {
    Bits v[kBatch][kItems];
#pragma unroll
    for (int u = 0; u < kBatch; ++u)
      if (i00 + u * kTile < end) load_items<true>(xr, i00 + u * kTile, end, vec, v[u]);
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      const int64_t i0 = i00 + u * kTile;
#pragma unroll
      for (int j = 0; j < kItems; ++j) {
        const Bits key = order_key<T>(v[u][j]);
        if (i0 + j < end && matches<T>(key, prefix, p)) rc.add(hist, u32(key >> shift) & u32(nb - 1));
      }
    }
  }
  rc.flush(hist);
  __syncthreads();

  u32* rhist = ws.hist + row * kHistBins;
  for (int d = threadIdx.x; d < nb; d += THREADS) {
    const u32 h = hist[d];
    if (h) atomicAdd(rhist + d, h);
    if (last_pass) ws.blockhist[(row * B + b) * Passes<T>::kLastBins + d] = h;
  }
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) is_last = atomicAdd(ws.counter + row, 1u) == u32(B - 1);
  __syncthreads();
  if (!is_last) return;

  // Last block of this row: merge, pick the digit, reset for the next pass.
  __threadfence();
  for (int d = threadIdx.x; d < kHistBins; d += THREADS) hist[d] = d < nb ? __ldcg(rhist + d) : 0u;
  __syncthreads();
  for (int d = threadIdx.x; d < nb; d += THREADS) rhist[d] = 0;
  select_digit<THREADS>(hist, krem, warp_tot, sel);
  if (threadIdx.x == 0) {
    RowState st;
    st.prefix = u64(prefix | (Bits(sel[0]) << shift));
    st.krem = sel[1];
    st.pad = 0;
    ws.state[row] = st;
    ws.counter[row] = 0;
    if (last_pass && fallback) {
      ws.seg_begin[row] = int(row * k);
      ws.seg_end[row] = int(row * k + (k - sel[1]));
    }
  }
}

template <class T, int THREADS>
__global__ void __launch_bounds__(THREADS) mb_gather_kernel(const T* __restrict__ x, int64_t n, int64_t k, int64_t chunk,
                                                            int B, MbWs<T> ws, T* __restrict__ values,
                                                            int64_t* __restrict__ indices) {
  using Bits = typename Tr<T>::Bits;
  __shared__ u32 warp_tot[32];
  __shared__ u32 tile_base;
  const int64_t row = blockIdx.x / B;
  const int b = blockIdx.x % B;
  const RowState st = ws.state[row];
  const Bits tkey = Bits(st.prefix);
  const u32 krem = st.krem;
  const u32 cnt_gt = u32(k) - krem;
  const u32 dl = u32(tkey) & u32(Passes<T>::kLastBins - 1);

  // entries == T in the blocks before this one (last-pass histograms)
  u32 s = 0;
  for (int b2 = threadIdx.x; b2 < b; b2 += THREADS) s += ws.blockhist[(row * B + b2) * Passes<T>::kLastBins + dl];
  u32 run_eq;
  block_exclusive_sum<THREADS>(s, warp_tot, &run_eq);

  const Bits* xr = reinterpret_cast<const Bits*>(x + row * n);
  const bool vec = (reinterpret_cast<uintptr_t>(xr) & 15) == 0;
  const int64_t begin = int64_t(b) * chunk;
  const int64_t end = min(n, begin + chunk);
  T* vrow = values + row * k;
  int64_t* irow = indices + row * k;
  Bits* kout = ws.keys_a + row * k;
  u32* iout = ws.idx_a + row * k;
  for (int64_t base = begin; base < end; base += int64_t(THREADS) * kItems) {
    const int64_t i0 = base + int64_t(threadIdx.x) * kItems;
    Bits v[kItems];
    Bits key[kItems];
    u32 cg = 0, ce = 0;
    if (i0 < end) load_items<true>(xr, i0, end, vec, v);
#pragma unroll
    for (int j = 0; j < kItems; ++j) {
      const bool valid = i0 + j < end;
      key[j] = valid ? order_key<T>(v[j]) : Bits(0);
      cg += (valid && key[j] > tkey);
      ce += (valid && key[j] == tkey);
    }
    // one atomic per tile for the > T slots; ranks of the == T entries
    u32 tot;
    const u32 excl = block_exclusive_sum<THREADS>(cg | (ce << 16), warp_tot, &tot);
    if (tot & 0xFFFFu) {  // uniform
      if (threadIdx.x == 0) tile_base = atomicAdd(ws.gtctr + row, tot & 0xFFFFu);
      __syncthreads();
    }
    u32 slot = tile_base + (excl & 0xFFFFu);
    u32 pe = run_eq + (excl >> 16);
#pragma unroll
    for (int j = 0; j < kItems; ++j) {
      if (i0 + j >= end) break;
      if (key[j] > tkey) {
        kout[slot] = ~key[j];
        iout[slot] = u32(i0 + j);
        ++slot;
      } else if (key[j] == tkey) {
        if (pe < krem) {
          vrow[cnt_gt + pe] = Tr<T>::from_bits(v[j]);
          irow[cnt_gt + pe] = i0 + j;
        }
        ++pe;
      }
    }
    run_eq += tot >> 16;
  }
}

// Sorts each row's cnt_gt (~key, index) pairs in shared memory; writes outputs [0, cnt_gt).
template <class T, int THREADS>
__global__ void __launch_bounds__(THREADS) mb_sort_kernel(const T* __restrict__ x, int64_t n, int64_t k, MbWs<T> ws,
                                                          T* __restrict__ values, int64_t* __restrict__ indices,
                                                          bool shuffles) {
  using Comp = typename Tr<T>::Comp;
  extern __shared__ __align__(16) unsigned char smem[];
  Comp* comp = reinterpret_cast<Comp*>(smem);
  const int64_t row = blockIdx.x;
  const u32 cnt_gt = u32(k) - ws.state[row].krem;
  if (cnt_gt == 0) return;
  const u32 P = pow2_ceil(cnt_gt);
#pragma unroll 4
  for (u32 i = threadIdx.x; i < P; i += THREADS)
    comp[i] = i < cnt_gt ? Tr<T>::comp(ws.keys_a[row * k + i], ws.idx_a[row * k + i]) : Tr<T>::sentinel();
  __syncthreads();
  bitonic_sort<T, THREADS>(comp, P, shuffles);
  const T* xr = x + row * n;
#pragma unroll 4
  for (u32 j = threadIdx.x; j < cnt_gt; j += THREADS) {
    const u32 idx = Tr<T>::idx_of(comp[j]);
    values[row * k + j] = xr[idx];
    indices[row * k + j] = idx;
  }
}

// After the CUB fallback sort: outputs [0, cnt_gt) from the sorted indices.
template <class T>
__global__ void mb_decode_kernel(const T* __restrict__ x, int64_t rows, int64_t n, int64_t k, MbWs<T> ws,
                                 T* __restrict__ values, int64_t* __restrict__ indices) {
  for (int64_t row = blockIdx.y; row < rows; row += gridDim.y) {
    const u32 cnt_gt = u32(k) - ws.state[row].krem;
    for (int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; j < cnt_gt; j += int64_t(gridDim.x) * blockDim.x) {
      const u32 idx = ws.idx_a[row * k + j];
      values[row * k + j] = x[row * n + idx];
      indices[row * k + j] = idx;
    }
  }
}

// ------------------------------------------------------------------ host side
struct DeviceInfo {
  int device = 0;
  int sms = 132;
  int smem_optin = 227 * 1024;
};

DeviceInfo device_info() {
  DeviceInfo d;
  CUDA_CHECK(cudaGetDevice(&d.device));
  CUDA_CHECK(cudaDeviceGetAttribute(&d.sms, cudaDevAttrMultiProcessorCount, d.device));
  CUDA_CHECK(cudaDeviceGetAttribute(&d.smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, d.device));
  return d;
}

// Raises a kernel's dynamic shared-memory limit (to the most the device allows
// beside the kernel's static shared memory) once per device.
void allow_smem(const void* kernel, int device, size_t bytes) {
  if (bytes <= 48 * 1024) return;
  static std::mutex mu;
  static std::set<std::pair<const void*, int>> done;
  std::lock_guard<std::mutex> lk(mu);
  if (done.count({kernel, device})) return;
  int optin = 0;
  cudaFuncAttributes fa;
  CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  CUDA_CHECK(cudaFuncGetAttributes(&fa, kernel));
  const int limit = optin - int(fa.sharedSizeBytes);
  const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, limit);
  if (e != cudaSuccess) {
    cudaGetLastError();  // leave no stale error behind (CUB would pick it up)
    COLT5_FAIL("cuda topk: cudaFuncSetAttribute(MaxDynamicSharedMemorySize, ", limit,
               ") failed: ", cudaGetErrorString(e));
  }
  COLT5_CHECK(bytes <= size_t(limit), "cuda topk: needs ", bytes, " bytes of shared memory, the device allows ",
              limit);
  done.insert({kernel, device});
}

// Tuning switches read once from the environment (for benchmarks/tests):
//   COLT5_TOPK_BLOCK_THREADS=256|512 forces the block path's block size;
//   COLT5_TOPK_NO_SHUFFLE=1 sorts with shared-memory-only bitonic stages.
int env_block_threads() {
  static const int v = [] {
    const char* e = std::getenv("COLT5_TOPK_BLOCK_THREADS");
    const int t = e ? std::atoi(e) : 0;
    return (t == 256 || t == 512) ? t : 0;
  }();
  return v;
}
bool env_shuffles() {
  static const bool v = [] {
    const char* e = std::getenv("COLT5_TOPK_NO_SHUFFLE");
    return !(e && e[0] == '1');
  }();
  return v;
}

template <class T>
struct Plan {
  bool block = false;
  int threads = 512;
  size_t smem = 0;  // block path / sort kernel dynamic shared memory
  int64_t chunk = 0;
  int B = 0;
  bool fallback = false;  // CUB sort of the > T part
  // workspace layout (multi-block)
  size_t off_hist = 0, off_counter = 0, off_gtctr = 0, zero_bytes = 0, off_state = 0, off_blockhist = 0,
         off_keys_a = 0, off_idx_a = 0, off_keys_b = 0, off_idx_b = 0, off_seg = 0, off_cub = 0, cub_bytes = 0,
         bytes = 0;
};

template <class T>
int64_t sort_cap() {
  return int64_t(kSortCapBytes / sizeof(typename Tr<T>::Comp));  // f32: 16384, f64: 8192
}

template <class T>
size_t block_smem(int64_t n, int64_t k) {
  using Bits = typename Tr<T>::Bits;
  if (k > sort_cap<T>()) return ~size_t(0);
  return round_up(size_t(n) * sizeof(Bits), 16) +
         std::max<size_t>(kHistBins * sizeof(u32), size_t(pow2_ceil(u32(k))) * sizeof(typename Tr<T>::Comp));
}

template <class T>
Plan<T> make_plan(int64_t rows, int64_t n, int64_t k, TopkPath path) {
  using Bits = typename Tr<T>::Bits;
  COLT5_CHECK(rows >= 0 && n >= 0, "cuda topk: rows and n must be >= 0, got rows=", rows, " n=", n);
  COLT5_CHECK(k >= 0 && k <= n, "cuda topk: k must be in [0, n], got k=", k, " n=", n);
  COLT5_CHECK(n < (int64_t(1) << 32), "cuda topk: rows longer than 2^32 - 1 entries are not supported, got n=", n);
  Plan<T> pl;
  if (rows == 0 || k == 0) return pl;
  const DeviceInfo dev = device_info();
  const size_t bsmem = block_smem<T>(n, k);
  const bool block_ok = k <= sort_cap<T>() && bsmem + kStaticSmemMargin <= size_t(dev.smem_optin);
  if (path == TopkPath::block) {
    COLT5_CHECK(block_ok, "cuda topk: the block path needs k <= ", sort_cap<T>(),
                " and the row plus the sort buffer in one block's shared memory (", dev.smem_optin,
                " bytes), got n=", n, " k=", k);
    pl.block = true;
  } else if (path == TopkPath::automatic) {
    pl.block = block_ok && (n * int64_t(sizeof(T)) <= 64 * 1024 || rows >= 2 * dev.sms);
  }
  if (pl.block) {
    // 512 threads give one row the lowest latency; with many rows, 256-thread
    // blocks (more of them per SM, each waiting at its own barriers) win
    // (H100, 4096x8192 k=256: 0.242 vs 0.267 ms; 16x8192 k=1024: 0.031 vs 0.022 ms).
    const int auto_threads = (n <= 2048 || rows >= 4 * int64_t(dev.sms)) ? 256 : 512;
    pl.threads = env_block_threads() ? env_block_threads() : auto_threads;
    pl.smem = bsmem;
    return pl;
  }
  // multi-block: about 2 blocks per SM in total, each at least kMinChunk entries
  const int64_t want_b = std::max<int64_t>(1, (2 * int64_t(dev.sms) + rows - 1) / rows);
  int64_t chunk = std::max<int64_t>(kMinChunk, (n + want_b - 1) / want_b);
  chunk = int64_t(round_up(size_t(chunk), kItems));
  pl.chunk = chunk;
  pl.B = int(std::max<int64_t>(1, (n + chunk - 1) / chunk));
  COLT5_CHECK(rows * pl.B < (int64_t(1) << 31), "cuda topk: too many rows (", rows, ") for one launch");
  pl.fallback = k > sort_cap<T>();
  if (pl.fallback)
    COLT5_CHECK(rows * k < (int64_t(1) << 31), "cuda topk: rows * k must be < 2^31 when k > ", sort_cap<T>(),
                ", got rows=", rows, " k=", k);
  if (!pl.fallback) {
    pl.threads = pow2_ceil(u32(k)) > 2048 ? 1024 : 256;
    pl.smem = size_t(pow2_ceil(u32(k))) * sizeof(typename Tr<T>::Comp);
  }
  size_t o = 0;
  auto take = [&](size_t bytes) {
    const size_t at = o;
    o = round_up(o + bytes, 256);
    return at;
  };
  pl.off_hist = take(size_t(rows) * kHistBins * sizeof(u32));
  pl.off_counter = take(size_t(rows) * sizeof(u32));
  pl.off_gtctr = take(size_t(rows) * sizeof(u32));
  pl.zero_bytes = o;
  pl.off_state = take(size_t(rows) * sizeof(RowState));
  pl.off_blockhist = take(size_t(rows) * pl.B * Passes<T>::kLastBins * sizeof(u32));
  pl.off_keys_a = take(size_t(rows * k) * sizeof(Bits));
  pl.off_idx_a = take(size_t(rows * k) * sizeof(u32));
  if (pl.fallback) {
    pl.off_keys_b = take(size_t(rows * k) * sizeof(Bits));
    pl.off_idx_b = take(size_t(rows * k) * sizeof(u32));
    pl.off_seg = take(size_t(rows) * 2 * sizeof(int));
    size_t b1 = 0, b2 = 0;
    CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortPairs(nullptr, b1, (const u32*)nullptr, (u32*)nullptr,
                                                        (const Bits*)nullptr, (Bits*)nullptr, int(rows * k), int(rows),
                                                        (const int*)nullptr, (const int*)nullptr, 0, 32));
    CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortPairs(nullptr, b2, (const Bits*)nullptr, (Bits*)nullptr,
                                                        (const u32*)nullptr, (u32*)nullptr, int(rows * k), int(rows),
                                                        (const int*)nullptr, (const int*)nullptr, 0,
                                                        int(sizeof(Bits) * 8)));
    pl.cub_bytes = std::max(b1, b2);
    pl.off_cub = take(pl.cub_bytes);
  }
  pl.bytes = o;
  return pl;
}

template <class T>
void run_topk(const T* x, int64_t rows, int64_t n, int64_t k, T* values, int64_t* indices, void* workspace,
              cudaStream_t stream, TopkPath path) {
  using Bits = typename Tr<T>::Bits;
  const Plan<T> pl = make_plan<T>(rows, n, k, path);
  if (rows == 0 || k == 0) return;
  COLT5_CHECK(x != nullptr && values != nullptr && indices != nullptr, "cuda topk: null pointer");
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  if (pl.block) {
    if (pl.threads == 256) {
      auto kern = topk_block_kernel<T, 256>;
      allow_smem((const void*)kern, device, pl.smem);
      kern<<<unsigned(rows), 256, pl.smem, stream>>>(x, n, k, values, indices, env_shuffles());
    } else {
      auto kern = topk_block_kernel<T, 512>;
      allow_smem((const void*)kern, device, pl.smem);
      kern<<<unsigned(rows), 512, pl.smem, stream>>>(x, n, k, values, indices, env_shuffles());
    }
    CUDA_CHECK_LAUNCH();
    return;
  }
  COLT5_CHECK(workspace != nullptr || pl.bytes == 0, "cuda topk: workspace is null, need ", pl.bytes, " bytes");
  unsigned char* w = static_cast<unsigned char*>(workspace);
  MbWs<T> ws{};
  ws.hist = reinterpret_cast<u32*>(w + pl.off_hist);
  ws.counter = reinterpret_cast<u32*>(w + pl.off_counter);
  ws.gtctr = reinterpret_cast<u32*>(w + pl.off_gtctr);
  ws.state = reinterpret_cast<RowState*>(w + pl.off_state);
  ws.blockhist = reinterpret_cast<u32*>(w + pl.off_blockhist);
  ws.keys_a = reinterpret_cast<Bits*>(w + pl.off_keys_a);
  ws.idx_a = reinterpret_cast<u32*>(w + pl.off_idx_a);
  if (pl.fallback) {
    ws.keys_b = reinterpret_cast<Bits*>(w + pl.off_keys_b);
    ws.idx_b = reinterpret_cast<u32*>(w + pl.off_idx_b);
    ws.seg_begin = reinterpret_cast<int*>(w + pl.off_seg);
    ws.seg_end = ws.seg_begin + rows;
    ws.cub_temp = w + pl.off_cub;
    ws.cub_bytes = pl.cub_bytes;
  }
  CUDA_CHECK(cudaMemsetAsync(w, 0, pl.zero_bytes, stream));
  const unsigned grid = unsigned(rows * pl.B);
  for (int p = 0; p < Passes<T>::kCount; ++p) {
    mb_pass_kernel<T, kPassThreads><<<grid, kPassThreads, 0, stream>>>(x, n, k, pl.chunk, pl.B, p, ws, pl.fallback);
    CUDA_CHECK_LAUNCH();
  }
  mb_gather_kernel<T, kPassThreads><<<grid, kPassThreads, 0, stream>>>(x, n, k, pl.chunk, pl.B, ws, values, indices);
  CUDA_CHECK_LAUNCH();
  if (!pl.fallback) {
    if (pl.threads == 256) {
      auto kern = mb_sort_kernel<T, 256>;
      allow_smem((const void*)kern, device, pl.smem);
      kern<<<unsigned(rows), 256, pl.smem, stream>>>(x, n, k, ws, values, indices, env_shuffles());
    } else {
      auto kern = mb_sort_kernel<T, 1024>;
      allow_smem((const void*)kern, device, pl.smem);
      kern<<<unsigned(rows), 1024, pl.smem, stream>>>(x, n, k, ws, values, indices, env_shuffles());
    }
    CUDA_CHECK_LAUNCH();
    return;
  }
  // Fallback for large k: two stable segmented radix sorts give (~key, index) order.
  size_t bytes = ws.cub_bytes;
  CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortPairs(ws.cub_temp, bytes, ws.idx_a, ws.idx_b, ws.keys_a, ws.keys_b,
                                                      int(rows * k), int(rows), ws.seg_begin, ws.seg_end, 0, 32,
                                                      stream));
  bytes = ws.cub_bytes;
  CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortPairs(ws.cub_temp, bytes, ws.keys_b, ws.keys_a, ws.idx_b, ws.idx_a,
                                                      int(rows * k), int(rows), ws.seg_begin, ws.seg_end, 0,
                                                      int(sizeof(Bits) * 8), stream));
  const dim3 dgrid(unsigned(std::min<int64_t>((k + 255) / 256, 1024)), unsigned(std::min<int64_t>(rows, 65535)));
  mb_decode_kernel<T><<<dgrid, 256, 0, stream>>>(x, rows, n, k, ws, values, indices);
  CUDA_CHECK_LAUNCH();
}

// ------------------------------------------------------------------ baselines
__global__ void baseline_init_kernel(int64_t rows, int64_t n, int* offsets, int* iota) {
  const int64_t total = rows * n;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x)
    iota[i] = int(i % n);
  for (int64_t r = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; r <= rows; r += int64_t(gridDim.x) * blockDim.x)
    offsets[r] = int(r * n);
}

struct BaselineLayout {
  size_t off_offsets = 0, off_iota = 0, off_cub = 0, cub_bytes = 0, bytes = 0;
};

BaselineLayout baseline_layout(int64_t rows, int64_t n, int which) {
  COLT5_CHECK(which == 0 || which == 1, "sort_baseline: which must be 0 or 1, got ", which);
  COLT5_CHECK(rows * n < (int64_t(1) << 31), "sort_baseline: rows * n must be < 2^31");
  BaselineLayout l;
  l.off_offsets = 0;
  l.off_iota = round_up(size_t(rows + 1) * sizeof(int), 256);
  l.off_cub = round_up(l.off_iota + size_t(rows * n) * sizeof(int), 256);
  const int items = int(rows * n), segs = int(rows);
  if (which == 0) {
    CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortPairsDescending(
        nullptr, l.cub_bytes, (const float*)nullptr, (float*)nullptr, (const int*)nullptr, (int*)nullptr, items, segs,
        (const int*)nullptr, (const int*)nullptr));
  } else {
    CUDA_CHECK(cub::DeviceSegmentedSort::SortPairsDescending(nullptr, l.cub_bytes, (const float*)nullptr,
                                                             (float*)nullptr, (const int*)nullptr, (int*)nullptr,
                                                             items, segs, (const int*)nullptr, (const int*)nullptr));
  }
  l.bytes = l.off_cub + l.cub_bytes;
  return l;
}

}  // namespace

size_t topk_workspace_bytes(int64_t rows, int64_t n, int64_t k, TopkPath path) {
  return make_plan<float>(rows, n, k, path).bytes;
}
size_t topk_workspace_bytes_f64(int64_t rows, int64_t n, int64_t k, TopkPath path) {
  return make_plan<double>(rows, n, k, path).bytes;
}

TopkPath topk_auto_path(int64_t rows, int64_t n, int64_t k, bool f64) {
  const bool block = f64 ? make_plan<double>(rows, n, k, TopkPath::automatic).block
                         : make_plan<float>(rows, n, k, TopkPath::automatic).block;
  return block ? TopkPath::block : TopkPath::multi_block;
}

void topk(const float* x, int64_t rows, int64_t n, int64_t k, float* values, int64_t* indices, void* workspace,
          cudaStream_t stream, TopkPath path) {
  run_topk<float>(x, rows, n, k, values, indices, workspace, stream, path);
}
void topk(const double* x, int64_t rows, int64_t n, int64_t k, double* values, int64_t* indices, void* workspace,
          cudaStream_t stream, TopkPath path) {
  run_topk<double>(x, rows, n, k, values, indices, workspace, stream, path);
}

size_t sort_baseline_workspace_bytes(int64_t rows, int64_t n, int which) {
  return baseline_layout(rows, n, which).bytes;
}

void sort_baseline(const float* x, int64_t rows, int64_t n, float* sorted_values, int32_t* sorted_indices,
                   void* workspace, cudaStream_t stream, int which) {
  const BaselineLayout l = baseline_layout(rows, n, which);
  if (rows == 0 || n == 0) return;
  unsigned char* w = static_cast<unsigned char*>(workspace);
  int* offsets = reinterpret_cast<int*>(w + l.off_offsets);
  int* iota = reinterpret_cast<int*>(w + l.off_iota);
  const int64_t total = rows * n;
  baseline_init_kernel<<<unsigned(std::min<int64_t>((total + 255) / 256, 4096)), 256, 0, stream>>>(rows, n, offsets,
                                                                                                   iota);
  CUDA_CHECK_LAUNCH();
  size_t bytes = l.cub_bytes;
  if (which == 0) {
    CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortPairsDescending(w + l.off_cub, bytes, x, sorted_values, iota,
                                                                  sorted_indices, int(total), int(rows), offsets,
                                                                  offsets + 1, 0, 32, stream));
  } else {
    CUDA_CHECK(cub::DeviceSegmentedSort::SortPairsDescending(w + l.off_cub, bytes, x, sorted_values, iota,
                                                             sorted_indices, int(total), int(rows), offsets,
                                                             offsets + 1, stream));
  }
}

}  // namespace colt5::kernels::cuda
