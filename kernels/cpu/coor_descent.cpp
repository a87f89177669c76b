// Coordinate descent (SPEC §1) on the CPU: fused forward, exact backward.
//
// ---------------------------------------------------------------------------
// How the routing op works, and why its backward is one cheap sweep
// ---------------------------------------------------------------------------
// Forward, one row. U = the unmasked entries (masked scores are -MAX, so they
// drop out of every logsumexp and every output). t = 1..T, e_t the ε schedule
// (a fixed constant per iteration), e_{T+1} the ε after the last decay:
//
//     u_t = s + b_{t-1}                 b_0 = -s, so u_1 = 0 on U
//     a_t = e_t (log k - LSE_U(u_t / e_t))
//     b_t = -relu(s + a_t)
//     out = exp((s + a_T + b_T) / e_{T+1})
//
// 1. Closed forms. Let p_{t,i} = [s_i + a_t > 0] ("saturated"; relu'(0) = 0,
//    so a tie counts as not saturated). Since x - relu(x + a) = min(x, -a):
//        u_{t,i} = min(s_i, -a_{t-1})          (t >= 2)
//        out_i   = exp(min(s_i + a_T, 0) / e_{T+1})
//    Every saturated entry has the same u = -a_{t-1}, which is also the largest
//    u, so the logsumexp's shift is known before the pass:
//        m_t = max_U u_t = min(smax, -a_{t-1}),   smax = max_U s.
//    One pass per iteration then gives the shifted normaliser
//        Z_t = c_t exp((-a_{t-1} - m_t)/e_t) + sum_{unsaturated} exp((s_i - m_t)/e_t)
//    (c_t = number of saturated entries; when c_t > 0 the first term is c_t),
//        l_t = log Z_t,   LSE(u_t/e_t) = m_t/e_t + l_t,   a_t = e_t (log k - l_t) - m_t.
//    Iteration 1 needs no pass: u_1 = 0, m_1 = 0, l_1 = log |U|.
//    Only a_t matters between iterations: b_t is a function of s and a_t.
//
// 2. Reverse mode, written out (bars are adjoints, g = dL/d out).
//    Softmax weights of iteration t: w_{t,i} = exp(u_{t,i}/e_t - LSE_t), sum_U w = 1.
//    Output, v_i = min(s_i + a_T, 0), dv_i/ds_i = dv_i/da_T = 1 - p_{T,i}:
//        gv_i  = g_i out_i / e_{T+1}
//        s̄_i  += gv_i (1 - p_{T,i})
//        ā_T   = G := sum_U gv_i (1 - p_{T,i})
//    Iteration t, from T down to 1 (a_t = e_t log k - e_t LSE(u_t/e_t)):
//        da_t/du_{t,i} = -w_{t,i},    da_t/dlog k = e_t
//        ū_{t,i} = -ā_t w_{t,i},      logk̄ += ā_t e_t
//      t >= 2: u_{t,i} = s_i - relu(s_i + a_{t-1}),
//        du/ds_i = 1 - p_{t-1,i},   du/da_{t-1} = -p_{t-1,i}
//        s̄_i    += -ā_t w_{t,i} (1 - p_{t-1,i})
//        ā_{t-1} = ā_t sum_U w_{t,i} p_{t-1,i} = ā_t S_t     (a_{t-1} has no other use)
//      t = 1: u_1 = s + (-s): the two paths cancel exactly, s̄ gets nothing.
//
// 3. The adjoint chain depends on g only through the scalar G. S_t, the
//    softmax mass on the saturated entries, is a forward quantity:
//        S_t = c_t exp((-a_{t-1} - m_t)/e_t) / Z_t,
//    so ā_t = G P_t with P_T = 1, P_{t-1} = P_t S_t, and
//        s̄_i   = gv_i (1 - p_{T,i}) - G C_i,
//        C_i   = sum_{t=2..T} P_t (1 - p_{t-1,i}) exp((s_i - m_t)/e_t - l_t)
//        logk̄  = G Q,   Q = sum_{t=1..T} P_t e_t,   k̄ = logk̄ / k  (0 below the 1e-20 clamp)
//    The forward keeps a_t, l_t, P_t, smax and Q per row: O(T) scalars
//    (layout in coor_descent.h). The backward is one reduction (G) and one
//    elementwise sweep (C_i: T - 1 exponentials per entry), with no
//    recomputation of earlier iterations and no per-iteration reduction.
//    Masked entries have out = 0 and zero gradient; a fully masked row stores
//    zeros and gets zero gradients (G = 0).
//
// Implementation: all exponentials are exp2 of pre-scaled arguments
// (exp(x/e) = 2^(x·log2(e)/e)), the same formulas the CUDA kernel uses. The hot
// loops work on GCC vector types (one register wide) with a polynomial
// exp2, so they vectorise at any optimisation level; sums are accumulated per
// lane over blocks of 1024 entries and then added in a fixed order in double.
// ---------------------------------------------------------------------------
#include "kernels/cpu/coor_descent.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "engine/error.h"
#include "engine/parallel.h"

namespace colt5::kernels {

void coor_descent_check_params(const CoorDescentParams& p) {
  COLT5_CHECK(p.rows >= 0 && p.n >= 0, "coor_descent: rows and n must be >= 0, got rows=", p.rows, " n=", p.n);
  COLT5_CHECK(p.n_iters >= 1, "coor_descent: n_iters must be >= 1, got ", p.n_iters);
  COLT5_CHECK(p.eps > 0, "coor_descent: eps must be > 0, got ", p.eps);
  COLT5_CHECK(p.eps_decay > 0 && p.eps_decay <= 1, "coor_descent: eps_decay must be in (0, 1], got ", p.eps_decay);
}

}  // namespace colt5::kernels

namespace colt5::kernels::cpu {
namespace {

constexpr double kLog2e = 1.4426950408889634074;

// ---------------------------------------------------------------- vectors
// GCC vector types as wide as the target's registers (64 bytes with AVX-512,
// 32 with AVX, else 16), so they map onto single registers.
#if defined(__AVX512F__)
constexpr int kVecBytes = 64;
#elif defined(__AVX__)
constexpr int kVecBytes = 32;
#else
constexpr int kVecBytes = 16;
#endif

template <class T>
struct Simd;
template <>
struct Simd<float> {
  static constexpr int W = kVecBytes / 4;
  typedef float V __attribute__((vector_size(kVecBytes)));
  typedef int32_t Int;
  typedef int32_t I __attribute__((vector_size(kVecBytes)));
  typedef uint32_t U __attribute__((vector_size(kVecBytes)));
  typedef uint8_t M8 __attribute__((vector_size(kVecBytes / 4)));
  // 2^x for x <= 0 (Cephes exp2f polynomial on [-0.5, 0.5], relative error
  // ~2e-7); results below 2^-125 are flushed to 0 (never denormal).
  static V exp2_neg(V x) {
    I small = x < -125.0f;
    V xc = small ? V{} - 125.0f : x;
    V t = xc + 12582912.0f;  // 1.5 * 2^23: round to nearest integer
    V r = t - 12582912.0f;
    V f = xc - r;
    U eb = ((U)t + 127u) << 23;
    V p = V{} + 1.535336188319500e-4f;
    p = p * f + 1.339887440266574e-3f;
    p = p * f + 9.618437357674640e-3f;
    p = p * f + 5.550332471162809e-2f;
    p = p * f + 2.402264791363012e-1f;
    p = p * f + 6.931472028550421e-1f;
    p = p * f + 1.0f;
    V res = p * (V)eb;
    return small ? V{} : res;
  }
};
template <>
struct Simd<double> {
  static constexpr int W = kVecBytes / 8;
  typedef double V __attribute__((vector_size(kVecBytes)));
  typedef int64_t Int;
  typedef int64_t I __attribute__((vector_size(kVecBytes)));
  typedef uint64_t U __attribute__((vector_size(kVecBytes)));
  typedef uint8_t M8 __attribute__((vector_size(kVecBytes / 8)));
  // 2^x for x <= 0: Taylor series of e^(f ln 2) to degree 13 on [-0.5, 0.5]
  // (truncation < 1e-17); results below 2^-1021 are flushed to 0.
  static V exp2_neg(V x) {
    I small = x < -1021.0;
    V xc = small ? V{} - 1021.0 : x;
    V t = xc + 6755399441055744.0;  // 1.5 * 2^52
    V r = t - 6755399441055744.0;
    V f = xc - r;
    U eb = ((U)t + 1023u) << 52;
    constexpr double c[14] = {1.0,
                              6.931471805599453094e-01,
                              2.402265069591007123e-01,
                              5.550410866482157995e-02,
                              9.618129107628477162e-03,
                              1.333355814642844342e-03,
                              1.540353039338160995e-04,
                              1.525273380405984028e-05,
                              1.321548679014430949e-06,
                              1.017808600923969973e-07,
                              7.054911620801123330e-09,
                              4.445538271870811498e-10,
                              2.567843599348820514e-11,
                              1.369148885390412888e-12};
    V p = V{} + c[13];
    for (int i = 12; i >= 0; --i) p = p * f + c[i];
    V res = p * (V)eb;
    return small ? V{} : res;
  }
};

template <class T>
using VecOf = typename Simd<T>::V;
template <class T>
using MaskOf = typename Simd<T>::I;

// Scalar 2^x through the same polynomial (lane 0), for the few per-row scalars.
template <class T>
T exp2_scalar(T x) {
  VecOf<T> v = VecOf<T>{} + x;
  return Simd<T>::exp2_neg(v)[0];
}

// Loads W entries of a row starting at i (< hi); lanes at or past hi read as
// -inf and masked out. `ok` is all-ones where the entry is present and kept.
template <class T, bool M>
inline void load_row(const T* s, const uint8_t* mk, int64_t i, int64_t hi, VecOf<T>& v, MaskOf<T>& ok) {
  using S = Simd<T>;
  constexpr int W = S::W;
  if (i + W <= hi) {
    std::memcpy(&v, s + i, sizeof(v));
    if constexpr (M) {
      typename S::M8 b;
      std::memcpy(&b, mk + i, sizeof(b));
      ok = __builtin_convertvector(b, typename S::I) != 0;
    } else {
      ok = typename S::I{} == 0;
    }
    return;
  }
  alignas(kVecBytes) T buf[W];
  alignas(kVecBytes) typename S::Int okb[W];
  for (int j = 0; j < W; ++j) {
    bool in = i + j < hi;
    buf[j] = in ? s[i + j] : -std::numeric_limits<T>::infinity();
    okb[j] = (in && (!M || mk[i + j])) ? -1 : 0;
  }
  std::memcpy(&v, buf, sizeof(v));
  std::memcpy(&ok, okb, sizeof(ok));
}

// W plain values from i (< hi); lanes at or past hi read as 0.
template <class T>
inline VecOf<T> load_vals(const T* x, int64_t i, int64_t hi) {
  constexpr int W = Simd<T>::W;
  VecOf<T> v;
  if (i + W <= hi) {
    std::memcpy(&v, x + i, sizeof(v));
  } else {
    v = VecOf<T>{};
    for (int j = 0; i + j < hi; ++j) v[j] = x[i + j];
  }
  return v;
}

template <class T>
inline void store_row(T* dst, int64_t i, int64_t hi, VecOf<T> v) {
  constexpr int W = Simd<T>::W;
  if (i + W <= hi) {
    std::memcpy(dst + i, &v, sizeof(v));
  } else {
    for (int j = 0; i + j < hi; ++j) dst[i + j] = v[j];
  }
}

template <class T>
inline double hsum(VecOf<T> v) {
  double r = 0;
  for (int j = 0; j < Simd<T>::W; ++j) r += double(v[j]);
  return r;
}
template <class T>
inline int64_t hcount(MaskOf<T> c) {
  int64_t r = 0;
  for (int j = 0; j < Simd<T>::W; ++j) r += int64_t(c[j]);
  return r;
}

constexpr int64_t kBlock = 1024;  // entries per lane-accumulator flush

// ---------------------------------------------------------------- passes
// Each pass covers [lo, hi) of one row.

struct MaxCount {
  double mx = -std::numeric_limits<double>::infinity();
  int64_t cnt = 0;
};

// max of the kept scores and how many are kept
template <class T, bool M>
MaxCount pass_init(const T* s, const uint8_t* mk, int64_t lo, int64_t hi) {
  using S = Simd<T>;
  using V = typename S::V;
  using I = typename S::I;
  V mx = V{} - std::numeric_limits<T>::infinity();
  I cnt = I{};
  for (int64_t i = lo; i < hi; i += S::W) {
    V v;
    I ok;
    load_row<T, M>(s, mk, i, hi, v, ok);
    mx = (ok & (v > mx)) ? v : mx;
    cnt -= ok;  // ok is -1 where kept
  }
  MaxCount r;
  for (int j = 0; j < S::W; ++j) r.mx = std::max(r.mx, double(mx[j]));
  r.cnt = hcount<T>(cnt);
  return r;
}

struct SumCount {
  double sum = 0;
  int64_t cnt = 0;
};

// One coordinate-descent iteration: sum of 2^((s - m)·sc) over the kept,
// unsaturated entries (s <= thr = -a_{t-1}), and the count of saturated ones.
template <class T, bool M>
SumCount pass_iter(const T* s, const uint8_t* mk, int64_t lo, int64_t hi, T thr, T m, T sc) {
  using S = Simd<T>;
  using V = typename S::V;
  using I = typename S::I;
  SumCount r;
  for (int64_t b = lo; b < hi; b += kBlock) {
    const int64_t be = std::min(hi, b + kBlock);
    V acc = V{};
    I cnt = I{};
    for (int64_t i = b; i < be; i += S::W) {
      V v;
      I ok;
      load_row<T, M>(s, mk, i, be, v, ok);
      I sat = v > thr;
      V ex = S::exp2_neg((v - m) * sc);
      acc += (ok & ~sat) ? ex : V{};
      cnt -= ok & sat;
    }
    r.sum += hsum<T>(acc);
    r.cnt += hcount<T>(cnt);
  }
  return r;
}

// out = 2^(min(s + a, 0)·sc) on kept entries, 0 elsewhere
template <class T, bool M>
void pass_out(const T* s, const uint8_t* mk, int64_t lo, int64_t hi, T a, T sc, T* out) {
  using S = Simd<T>;
  using V = typename S::V;
  using I = typename S::I;
  for (int64_t i = lo; i < hi; i += S::W) {
    V v;
    I ok;
    load_row<T, M>(s, mk, i, hi, v, ok);
    V x = v + a;
    x = x < 0 ? x : V{};
    V y = S::exp2_neg(x * sc);
    store_row<T>(out, i, hi, ok ? y : V{});
  }
}

// G·e_{T+1} = sum over kept, unsaturated (s <= thr = -a_T) entries of dout·out
template <class T, bool M>
double pass_grad_sum(const T* s, const uint8_t* mk, const T* out, const T* dout, int64_t lo, int64_t hi, T thr) {
  using S = Simd<T>;
  using V = typename S::V;
  using I = typename S::I;
  double r = 0;
  for (int64_t b = lo; b < hi; b += kBlock) {
    const int64_t be = std::min(hi, b + kBlock);
    V acc = V{};
    for (int64_t i = b; i < be; i += S::W) {
      V v;
      I ok;
      load_row<T, M>(s, mk, i, be, v, ok);
      const V y = load_vals<T>(out, i, be), g = load_vals<T>(dout, i, be);
      I use = ok & ~(v > thr);
      acc += use ? g * y : V{};
    }
    r += hsum<T>(acc);
  }
  return r;
}

// Per-row constants of the backward sweep.
template <class T>
struct BwdRow {
  const T* A;  // a_t, t = 1..T at [t-1]
  const T* L;  // l_t
  const T* P;  // P_t
  T smax, thrT, inv_ef, G;
  int n_iters;
  const CoorDescentParams* p;
};

// ds = gv (1 - p_T) - G C  on kept entries, 0 elsewhere; tiles of NV vectors so
// the per-iteration constants are computed once per tile.
template <class T, bool M>
void pass_grad_apply(const T* s, const uint8_t* mk, const T* out, const T* dout, int64_t lo, int64_t hi,
                     const BwdRow<T>& r, T* ds) {
  using S = Simd<T>;
  using V = typename S::V;
  using I = typename S::I;
  constexpr int NV = 8;
  constexpr int64_t TILE = int64_t(NV) * S::W;
  for (int64_t b = lo; b < hi; b += TILE) {
    const int64_t be = std::min(hi, b + TILE);
    const int nv = int((be - b + S::W - 1) / S::W);
    V v[NV], C[NV];
    I ok[NV];
    for (int j = 0; j < nv; ++j) {
      load_row<T, M>(s, mk, b + int64_t(j) * S::W, be, v[j], ok[j]);
      C[j] = V{};
    }
    double e = coor_descent_eps_first(*r.p);
    for (int t = 2; t <= r.n_iters; ++t) {
      e = coor_descent_eps_next(*r.p, e);
      const T thr = -r.A[t - 2];
      const T m = std::min(r.smax, thr);
      const T sc = T(kLog2e / e);
      const T off = r.L[t - 1] * T(kLog2e);
      const T Pt = r.P[t - 1];
      for (int j = 0; j < nv; ++j) {
        V w = S::exp2_neg((v[j] - m) * sc - off);
        C[j] += (v[j] > thr) ? V{} : Pt * w;
      }
    }
    for (int j = 0; j < nv; ++j) {
      const int64_t i = b + int64_t(j) * S::W;
      const V y = load_vals<T>(out, i, be), g = load_vals<T>(dout, i, be);
      V gv = g * y * r.inv_ef;
      V d = (v[j] > r.thrT) ? V{} : gv;
      store_row<T>(ds, i, be, ok[j] ? d - r.G * C[j] : V{});
    }
  }
}

// ---------------------------------------------------------------- row drivers
// A row is cut into fixed chunks when long (kCoorDescentSplit); the chunks run
// on the pool and their partials are combined in chunk order.
struct Chunking {
  int64_t n, nch;
  explicit Chunking(int64_t n_) : n(n_), nch(n_ >= kCoorDescentSplit ? (n_ + kCoorDescentChunk - 1) / kCoorDescentChunk : 1) {}
  int64_t lo(int64_t c) const { return nch == 1 ? 0 : c * kCoorDescentChunk; }
  int64_t hi(int64_t c) const { return nch == 1 ? n : std::min(n, (c + 1) * kCoorDescentChunk); }
  template <class F>
  void run(F&& f) const {  // f(lo, hi)
    if (nch == 1) {
      f(int64_t(0), n);
    } else {
      parallel_chunks(nch, [&](int64_t c) { f(lo(c), hi(c)); });
    }
  }
  template <class R, class F, class Combine>
  R reduce(F&& f, Combine&& combine) const {  // f(lo, hi) -> R; combined in chunk order
    if (nch == 1) return f(int64_t(0), n);
    std::vector<R> parts(static_cast<size_t>(nch));
    parallel_chunks(nch, [&](int64_t c) { parts[size_t(c)] = f(lo(c), hi(c)); });
    R acc = parts[0];
    for (int64_t c = 1; c < nch; ++c) acc = combine(acc, parts[size_t(c)]);
    return acc;
  }
};

template <class T, bool M>
void forward_row(const CoorDescentParams& p, const T* s, const uint8_t* mk, T kval, T* out, T* sv) {
  const Chunking ch(p.n);
  const int nT = p.n_iters;
  const int64_t W = coor_descent_saved_per_row(p);
  const MaxCount mc = ch.reduce<MaxCount>([&](int64_t lo, int64_t hi) { return pass_init<T, M>(s, mk, lo, hi); },
                                          [](MaxCount x, MaxCount y) {
                                            return MaxCount{std::max(x.mx, y.mx), x.cnt + y.cnt};
                                          });
  if (mc.cnt == 0) {
    std::fill(out, out + p.n, T(0));
    std::fill(sv, sv + W, T(0));
    return;
  }
  T* A = sv;
  T* L = sv + nT;
  T* P = sv + 2 * nT;
  const T smax = T(mc.mx);
  const T logk = std::log(std::max(kval, T(1e-20)));
  double e = coor_descent_eps_first(p);
  // iteration 1: u = 0 on every kept entry, so LSE = log |U|
  T l = std::log(T(mc.cnt));
  T a = T(e) * (logk - l);
  A[0] = a;
  L[0] = l;
  P[0] = 0;  // S_1 is never used
  for (int t = 2; t <= nT; ++t) {
    e = coor_descent_eps_next(p, e);
    const T et = T(e);
    const T thr = -a;
    const T m = std::min(smax, thr);
    const T sc = T(kLog2e / e);
    const SumCount sc_ = ch.reduce<SumCount>(
        [&](int64_t lo, int64_t hi) { return pass_iter<T, M>(s, mk, lo, hi, thr, m, sc); },
        [](SumCount x, SumCount y) { return SumCount{x.sum + y.sum, x.cnt + y.cnt}; });
    // saturated entries contribute 2^((thr - m)·sc) each, which is 1 whenever any exist (m = thr)
    const T satw = sc_.cnt > 0 ? T(sc_.cnt) * exp2_scalar<T>((thr - m) * sc) : T(0);
    const T Z = T(sc_.sum) + satw;
    l = std::log(Z);
    a = et * (logk - l) - m;
    A[t - 1] = a;
    L[t - 1] = l;
    P[t - 1] = satw / Z;  // S_t for now; turned into P_t below
  }
  const double ef = coor_descent_eps_next(p, e);
  const T scf = T(kLog2e / ef);
  ch.run([&](int64_t lo, int64_t hi) { pass_out<T, M>(s, mk, lo, hi, a, scf, out); });
  // P_T = 1, P_{t-1} = P_t S_t; Q = sum_t P_t e_t
  T Pt = 1;
  for (int t = nT; t >= 1; --t) {
    const T St = P[t - 1];
    P[t - 1] = Pt;
    if (t >= 2) Pt *= St;
  }
  double Q = 0, et = coor_descent_eps_first(p);
  for (int t = 1; t <= nT; ++t) {
    Q += double(P[t - 1]) * double(T(et));
    et = coor_descent_eps_next(p, et);
  }
  sv[3 * nT] = smax;
  sv[3 * nT + 1] = T(Q);
}

template <class T, bool M>
void backward_row(const CoorDescentParams& p, const T* s, const uint8_t* mk, T kval, const T* out, const T* sv,
                  const T* dout, T* ds, T* dk) {
  const Chunking ch(p.n);
  const int nT = p.n_iters;
  double e = coor_descent_eps_first(p);
  for (int t = 2; t <= nT + 1; ++t) e = coor_descent_eps_next(p, e);
  const T inv_ef = T(1.0 / e);
  const T aT = sv[nT - 1];
  BwdRow<T> r;
  r.A = sv;
  r.L = sv + nT;
  r.P = sv + 2 * nT;
  r.smax = sv[3 * nT];
  r.thrT = -aT;
  r.inv_ef = inv_ef;
  r.n_iters = nT;
  r.p = &p;
  const double gsum = ch.reduce<double>(
      [&](int64_t lo, int64_t hi) { return pass_grad_sum<T, M>(s, mk, out, dout, lo, hi, r.thrT); },
      [](double x, double y) { return x + y; });
  r.G = T(gsum) * inv_ef;
  if (dk) {
    const T Q = sv[3 * nT + 1];
    *dk = kval >= T(1e-20) ? r.G * Q / kval : T(0);
  }
  ch.run([&](int64_t lo, int64_t hi) { pass_grad_apply<T, M>(s, mk, out, dout, lo, hi, r, ds); });
}

template <class T>
int64_t row_grain(const CoorDescentParams& p) {
  const int64_t work = std::max<int64_t>(1, p.n * p.n_iters);
  return std::max<int64_t>(1, (int64_t(1) << 16) / work);
}

}  // namespace

template <class T>
void coor_descent_forward(const CoorDescentParams& p, const T* s, const uint8_t* mask, const T* k, T* out, T* saved) {
  coor_descent_check_params(p);
  const int64_t W = coor_descent_saved_per_row(p);
  auto row = [&](int64_t r) {
    const T kv = k ? k[r] : T(p.k_scalar);
    if (mask)
      forward_row<T, true>(p, s + r * p.n, mask + r * p.n, kv, out + r * p.n, saved + r * W);
    else
      forward_row<T, false>(p, s + r * p.n, nullptr, kv, out + r * p.n, saved + r * W);
  };
  if (p.n >= kCoorDescentSplit) {
    for (int64_t r = 0; r < p.rows; ++r) row(r);  // each row runs its chunks on the pool
  } else {
    parallel_for(0, p.rows, row_grain<T>(p), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) row(r);
    });
  }
}

template <class T>
void coor_descent_backward(const CoorDescentParams& p, const T* s, const uint8_t* mask, const T* k, const T* out,
                           const T* saved, const T* dout, T* ds, T* dk) {
  coor_descent_check_params(p);
  const int64_t W = coor_descent_saved_per_row(p);
  auto row = [&](int64_t r) {
    const T kv = k ? k[r] : T(p.k_scalar);
    const int64_t o = r * p.n;
    if (mask)
      backward_row<T, true>(p, s + o, mask + o, kv, out + o, saved + r * W, dout + o, ds + o, dk ? dk + r : nullptr);
    else
      backward_row<T, false>(p, s + o, nullptr, kv, out + o, saved + r * W, dout + o, ds + o, dk ? dk + r : nullptr);
  };
  if (p.n >= kCoorDescentSplit) {
    for (int64_t r = 0; r < p.rows; ++r) row(r);
  } else {
    parallel_for(0, p.rows, row_grain<T>(p), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) row(r);
    });
  }
}

template void coor_descent_forward<float>(const CoorDescentParams&, const float*, const uint8_t*, const float*, float*,
                                          float*);
template void coor_descent_forward<double>(const CoorDescentParams&, const double*, const uint8_t*, const double*,
                                           double*, double*);
template void coor_descent_backward<float>(const CoorDescentParams&, const float*, const uint8_t*, const float*,
                                           const float*, const float*, const float*, float*, float*);
template void coor_descent_backward<double>(const CoorDescentParams&, const double*, const uint8_t*, const double*,
                                            const double*, const double*, const double*, double*, double*);

}  // namespace colt5::kernels::cpu
