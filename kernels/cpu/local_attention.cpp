// CPU reference for fused local (windowed) attention (semantics in the header).
//
// Readable rather than fast. The forward and the dq pass run one task per
// (b, h, query window): each query reads only the keys of its band
// [local_band_lo(t), local_band_hi(t)), at most (look_backward + 1 +
// look_forward) windows, and nothing is padded or copied. The dk/dv pass runs
// one task per (b, h, key window) over the query windows that can see it
// (window - look_forward ... window + look_backward), recomputing P and dS.
// Every output element is written by exactly one task, so the result does not
// depend on the thread count.
#include "kernels/cpu/local_attention.h"

#include <algorithm>
#include <limits>
#include <vector>

#include "engine/parallel.h"

namespace colt5::kernels::cpu {
namespace {

// Typed views of the parameter pointers for one (b, h).
template <class T>
struct Head {
  const T* q;
  const T* k;
  const T* v;
  const uint8_t* mask;  // (N) or null
  int64_t qn, kn, vn;
};

template <class T>
Head<T> head(const LocalAttentionParams& p, int64_t b, int64_t h) {
  Head<T> r;
  r.q = static_cast<const T*>(p.q) + b * p.q_stride.b + h * p.q_stride.h;
  r.k = static_cast<const T*>(p.k) + b * p.k_stride.b + h * p.k_stride.h;
  r.v = static_cast<const T*>(p.v) + b * p.v_stride.b + h * p.v_stride.h;
  r.mask = p.mask ? p.mask + b * p.mask_stride_b : nullptr;
  r.qn = p.q_stride.n;
  r.kn = p.k_stride.n;
  r.vn = p.v_stride.n;
  return r;
}

template <class T>
T dot(const T* a, const T* b, int64_t d) {
  T s = 0;
  for (int64_t c = 0; c < d; ++c) s += a[c] * b[c];
  return s;
}

// Scores of query t over its band [lo, hi): S[j - lo], scaled, masked keys -inf.
template <class T>
void score_row(const LocalAttentionParams& p, const Head<T>& hd, int64_t t, int64_t lo, int64_t hi, T* S) {
  const T scale = static_cast<T>(p.scale);
  const T* qt = hd.q + t * hd.qn;
  for (int64_t j = lo; j < hi; ++j)
    S[j - lo] = (!hd.mask || hd.mask[j]) ? scale * dot(qt, hd.k + j * hd.kn, p.d) : -std::numeric_limits<T>::infinity();
}

// P = exp(s - lse); 0 for masked keys and for queries with lse = -inf.
template <class T>
T prob(T s, T lse) {
  constexpr T ninf = -std::numeric_limits<T>::infinity();
  return (s == ninf || lse == ninf) ? T(0) : std::exp(s - lse);
}

int64_t max_band(const LocalAttentionParams& p) {
  const auto b = p.band<int64_t>();
  return (b.lb + 1 + b.lf) * b.w;
}

template <class T>
void forward_impl(const LocalAttentionParams& p) {
  const int64_t d = p.d, w = p.window, nw = p.num_windows();
  const LocalBand<int64_t> band = p.band<int64_t>();
  const T ninf = -std::numeric_limits<T>::infinity();
  T* lse_all = static_cast<T*>(p.lse);

  parallel_for(0, p.B * p.H * nw, 1, [&](int64_t t0, int64_t t1) {
    std::vector<T> S(max_band(p)), acc(d);
    for (int64_t task = t0; task < t1; ++task) {
      const int64_t bh = task / nw, b = bh / p.H, h = bh % p.H, win = task % nw;
      const Head<T> hd = head<T>(p, b, h);
      T* out = static_cast<T*>(p.out) + b * p.out_stride.b + h * p.out_stride.h;
      T* lse = lse_all + bh * p.N;
      for (int64_t t = win * w; t < std::min(p.N, (win + 1) * w); ++t) {
        const int64_t lo = local_band_lo(band, t), hi = std::max(lo, local_band_hi(band, t));
        score_row(p, hd, t, lo, hi, S.data());
        T m = ninf;
        for (int64_t j = 0; j < hi - lo; ++j) m = std::max(m, S[j]);
        std::fill(acc.begin(), acc.end(), T(0));
        T l = 0;
        if (m != ninf) {
          for (int64_t j = lo; j < hi; ++j) {
            const T e = std::exp(S[j - lo] - m);  // masked keys: exp(-inf) = 0
            if (e == 0) continue;
            l += e;
            const T* vj = hd.v + j * hd.vn;
            for (int64_t c = 0; c < d; ++c) acc[c] += e * vj[c];
          }
        }
        const T inv = l > 0 ? T(1) / l : T(0);
        T* o = out + t * p.out_stride.n;
        for (int64_t c = 0; c < d; ++c) o[c] = acc[c] * inv;
        lse[t] = l > 0 ? m + std::log(l) : ninf;
      }
    }
  });
}

template <class T>
void backward_impl(const LocalAttentionParams& p) {
  const int64_t d = p.d, w = p.window, nw = p.num_windows(), N = p.N, H = p.H, BH = p.B * p.H;
  const LocalBand<int64_t> band = p.band<int64_t>();
  const T scale = static_cast<T>(p.scale);
  const T* lse_all = static_cast<const T*>(p.lse);

  auto row = [](const void* base, const AttnStrides& s, int64_t b, int64_t h, int64_t i) {
    return static_cast<const T*>(base) + b * s.b + h * s.h + i * s.n;
  };
  auto wrow = [](void* base, const AttnStrides& s, int64_t b, int64_t h, int64_t i) {
    return static_cast<T*>(base) + b * s.b + h * s.h + i * s.n;
  };

  std::vector<T> Dv(BH * N);  // D_t = <dout_t, out_t>

  // Pass 1, over (b, h, query window): D and dq.
  parallel_for(0, BH * nw, 1, [&](int64_t t0, int64_t t1) {
    std::vector<T> S(max_band(p)), dq(d);
    for (int64_t task = t0; task < t1; ++task) {
      const int64_t bh = task / nw, b = bh / H, h = bh % H, win = task % nw;
      const Head<T> hd = head<T>(p, b, h);
      const T* lse = lse_all + bh * N;
      for (int64_t t = win * w; t < std::min(N, (win + 1) * w); ++t) {
        const T* dO = row(p.dout, p.dout_stride, b, h, t);
        const T Dt = dot(dO, row(p.out, p.out_stride, b, h, t), d);
        Dv[bh * N + t] = Dt;
        const int64_t lo = local_band_lo(band, t), hi = std::max(lo, local_band_hi(band, t));
        score_row(p, hd, t, lo, hi, S.data());
        std::fill(dq.begin(), dq.end(), T(0));
        for (int64_t j = lo; j < hi; ++j) {
          const T P = prob(S[j - lo], lse[t]);
          if (P == 0) continue;
          const T dS = P * (dot(dO, hd.v + j * hd.vn, d) - Dt);
          const T* kj = hd.k + j * hd.kn;
          for (int64_t c = 0; c < d; ++c) dq[c] += scale * dS * kj[c];
        }
        T* dqp = wrow(p.dq, p.dq_stride, b, h, t);
        for (int64_t c = 0; c < d; ++c) dqp[c] = dq[c];
      }
    }
  });

  // Pass 2, over (b, h, key window): dk and dv. Query t in window i sees keys
  // of windows i - look_backward ... i + look_forward only, so the keys of
  // window kw are seen from query windows kw - look_forward ... kw + look_backward.
  parallel_for(0, BH * nw, 1, [&](int64_t t0, int64_t t1) {
    std::vector<T> dk(w * d), dv(w * d);
    for (int64_t task = t0; task < t1; ++task) {
      const int64_t bh = task / nw, b = bh / H, h = bh % H, kw = task % nw;
      const Head<T> hd = head<T>(p, b, h);
      const T* lse = lse_all + bh * N;
      const int64_t j0 = kw * w, j1 = std::min(N, j0 + w);
      std::fill(dk.begin(), dk.end(), T(0));
      std::fill(dv.begin(), dv.end(), T(0));
      const int64_t tbeg = std::max<int64_t>(0, (kw - band.lf) * w), tend = std::min(N, (kw + band.lb + 1) * w);
      for (int64_t t = tbeg; t < tend; ++t) {
        const int64_t lo = std::max(j0, local_band_lo(band, t)), hi = std::min(j1, local_band_hi(band, t));
        if (hi <= lo) continue;
        const T* qt = hd.q + t * hd.qn;
        const T* dO = row(p.dout, p.dout_stride, b, h, t);
        for (int64_t j = lo; j < hi; ++j) {
          if (hd.mask && !hd.mask[j]) continue;
          const T P = prob(scale * dot(qt, hd.k + j * hd.kn, d), lse[t]);
          if (P == 0) continue;
          const T dS = P * (dot(dO, hd.v + j * hd.vn, d) - Dv[bh * N + t]);
          T* dkj = &dk[(j - j0) * d];
          T* dvj = &dv[(j - j0) * d];
          for (int64_t c = 0; c < d; ++c) {
            dkj[c] += scale * dS * qt[c];
            dvj[c] += P * dO[c];
          }
        }
      }
      for (int64_t j = j0; j < j1; ++j) {
        T* dkp = wrow(p.dk, p.dk_stride, b, h, j);
        T* dvp = wrow(p.dv, p.dv_stride, b, h, j);
        for (int64_t c = 0; c < d; ++c) {
          dkp[c] = dk[(j - j0) * d + c];
          dvp[c] = dv[(j - j0) * d + c];
        }
      }
    }
  });
}

}  // namespace

void local_attention_forward(const LocalAttentionParams& p) {
  check_local_attention_params(p, false, "cpu::local_attention_forward");
  if (p.B * p.H * p.N == 0) return;
  switch (p.dtype) {
    case DType::f32: return forward_impl<float>(p);
    case DType::f64: return forward_impl<double>(p);
    default: COLT5_FAIL("cpu::local_attention_forward: dtype must be f32 or f64, got ", dtype_name(p.dtype));
  }
}

void local_attention_backward(const LocalAttentionParams& p) {
  check_local_attention_params(p, true, "cpu::local_attention_backward");
  if (p.B * p.H * p.N == 0) return;
  switch (p.dtype) {
    case DType::f32: return backward_impl<float>(p);
    case DType::f64: return backward_impl<double>(p);
    default: COLT5_FAIL("cpu::local_attention_backward: dtype must be f32 or f64, got ", dtype_name(p.dtype));
  }
}

}  // namespace colt5::kernels::cpu
