// CPU reference for fused flash-style attention (semantics in the header).
//
// Readable rather than fast: tiles of kTileQ query rows against kTileK keys,
// an online softmax over the key tiles, never an Nq x Nk matrix. Work is split
// over (b, h, query tile) for the forward and the dq pass, and over
// (b, h, key tile) for the dk/dv pass, so every output element is written by
// exactly one task and the result does not depend on the thread count.
#include "kernels/cpu/flash_attention.h"

#include <algorithm>
#include <limits>
#include <vector>

#include "engine/parallel.h"

namespace colt5::kernels::cpu {
namespace {

constexpr int64_t kTileQ = 32;
constexpr int64_t kTileK = 64;

// Typed views of the parameter pointers for one (b, h).
template <class T>
struct Head {
  const T* q;   // (Nq, d), row stride qn
  const T* k;   // (Nk, d)
  const T* v;   // (Nk, d)
  const uint8_t* mask;  // (Nk) or null
  const T* nk;  // (d) or null
  const T* nv;  // (d) or null
  int64_t qn, kn, vn;
};

template <class T>
Head<T> head(const FlashAttentionParams& p, int64_t b, int64_t h) {
  Head<T> r;
  r.q = static_cast<const T*>(p.q) + b * p.q_stride.b + h * p.q_stride.h;
  r.k = static_cast<const T*>(p.k) + b * p.k_stride.b + h * p.k_stride.h;
  r.v = static_cast<const T*>(p.v) + b * p.v_stride.b + h * p.v_stride.h;
  r.mask = p.mask ? p.mask + b * p.mask_stride_b + h * p.mask_stride_h : nullptr;
  r.nk = p.null_k ? static_cast<const T*>(p.null_k) + h * p.d : nullptr;
  r.nv = p.null_v ? static_cast<const T*>(p.null_v) + h * p.d : nullptr;
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

// Scores of query rows [i0, i1) against keys [j0, j1): S[(i - i0) * kTileK + (j - j0)],
// scaled, with invisible keys set to -inf.
template <class T>
void score_tile(const FlashAttentionParams& p, const Head<T>& hd, int64_t i0, int64_t i1, int64_t j0, int64_t j1,
                T* S) {
  const T neg_inf = -std::numeric_limits<T>::infinity();
  const T scale = static_cast<T>(p.scale);
  const int64_t offset = p.Nk - p.Nq;  // causal: key j visible from query i iff j <= i + offset
  for (int64_t i = i0; i < i1; ++i) {
    const T* qi = hd.q + i * hd.qn;
    for (int64_t j = j0; j < j1; ++j) {
      const bool visible = (!hd.mask || hd.mask[j]) && (!p.causal || j <= i + offset);
      S[(i - i0) * kTileK + (j - j0)] = visible ? scale * dot(qi, hd.k + j * hd.kn, p.d) : neg_inf;
    }
  }
}

// Last key (exclusive) any query in [i0, i1) can see.
int64_t key_end(const FlashAttentionParams& p, int64_t i1) {
  if (!p.causal) return p.Nk;
  return std::clamp<int64_t>(i1 - 1 + (p.Nk - p.Nq) + 1, 0, p.Nk);
}

template <class T>
void forward_impl(const FlashAttentionParams& p) {
  const int64_t d = p.d;
  const int64_t ntq = (p.Nq + kTileQ - 1) / kTileQ;
  const T neg_inf = -std::numeric_limits<T>::infinity();
  T* lse_all = static_cast<T*>(p.lse);

  parallel_for(0, p.B * p.H * ntq, 1, [&](int64_t t0, int64_t t1) {
    std::vector<T> S(kTileQ * kTileK), acc(kTileQ * d), m(kTileQ), l(kTileQ);
    for (int64_t task = t0; task < t1; ++task) {
      const int64_t bh = task / ntq, b = bh / p.H, h = bh % p.H;
      const int64_t i0 = (task % ntq) * kTileQ, i1 = std::min(p.Nq, i0 + kTileQ), nq = i1 - i0;
      const Head<T> hd = head<T>(p, b, h);

      // Running state per row: max m, sum l, unnormalised output acc.
      // The null key starts the row: m = s_null, l = 1, acc = null_v.
      for (int64_t r = 0; r < nq; ++r) {
        if (hd.nk) {
          m[r] = static_cast<T>(p.scale) * dot(hd.q + (i0 + r) * hd.qn, hd.nk, d);
          l[r] = 1;
          for (int64_t c = 0; c < d; ++c) acc[r * d + c] = hd.nv[c];
        } else {
          m[r] = neg_inf;
          l[r] = 0;
          for (int64_t c = 0; c < d; ++c) acc[r * d + c] = 0;
        }
      }

      const int64_t jend = key_end(p, i1);
      for (int64_t j0 = 0; j0 < jend; j0 += kTileK) {
        const int64_t j1 = std::min(jend, j0 + kTileK), nk = j1 - j0;
        score_tile(p, hd, i0, i1, j0, j1, S.data());
        for (int64_t r = 0; r < nq; ++r) {
          T* s = &S[r * kTileK];
          T mt = neg_inf;
          for (int64_t j = 0; j < nk; ++j) mt = std::max(mt, s[j]);
          const T m_new = std::max(m[r], mt);
          if (m_new == neg_inf) continue;  // nothing visible yet in this row
          const T alpha = std::exp(m[r] - m_new);  // exp(-inf) = 0 on the first visible key
          T rowsum = 0;
          for (int64_t j = 0; j < nk; ++j) {
            s[j] = std::exp(s[j] - m_new);  // invisible keys: exp(-inf) = 0
            rowsum += s[j];
          }
          T* a = &acc[r * d];
          for (int64_t c = 0; c < d; ++c) a[c] *= alpha;
          for (int64_t j = 0; j < nk; ++j) {
            if (s[j] == 0) continue;
            const T* vj = hd.v + (j0 + j) * hd.vn;
            for (int64_t c = 0; c < d; ++c) a[c] += s[j] * vj[c];
          }
          l[r] = l[r] * alpha + rowsum;
          m[r] = m_new;
        }
      }

      T* out = static_cast<T*>(p.out) + b * p.out_stride.b + h * p.out_stride.h;
      T* lse = lse_all + (b * p.H + h) * p.Nq;
      for (int64_t r = 0; r < nq; ++r) {
        const bool any = l[r] > 0;
        const T inv = any ? T(1) / l[r] : T(0);
        T* o = out + (i0 + r) * p.out_stride.n;
        for (int64_t c = 0; c < d; ++c) o[c] = acc[r * d + c] * inv;
        lse[i0 + r] = any ? m[r] + std::log(l[r]) : neg_inf;
      }
    }
  });
}

// P_ij = exp(s_ij - lse_i); 0 for invisible keys and for rows with lse = -inf.
template <class T>
T prob(T s, T lse) {
  return (s == -std::numeric_limits<T>::infinity() || lse == -std::numeric_limits<T>::infinity())
             ? T(0)
             : std::exp(s - lse);
}

template <class T>
void backward_impl(const FlashAttentionParams& p) {
  const int64_t d = p.d, B = p.B, H = p.H, Nq = p.Nq, Nk = p.Nk;
  const T scale = static_cast<T>(p.scale);
  const T* lse_all = static_cast<const T*>(p.lse);
  const int64_t ntq = (Nq + kTileQ - 1) / kTileQ;
  const int64_t ntk = (Nk + kTileK - 1) / kTileK;
  const int64_t offset = Nk - Nq;

  auto dout_row = [&](int64_t b, int64_t h, int64_t i) {
    return static_cast<const T*>(p.dout) + b * p.dout_stride.b + h * p.dout_stride.h + i * p.dout_stride.n;
  };
  auto out_row = [&](int64_t b, int64_t h, int64_t i) {
    return static_cast<const T*>(p.out) + b * p.out_stride.b + h * p.out_stride.h + i * p.out_stride.n;
  };

  // D_i = <dout_i, out_i>, and the null key's P and dS per row.
  std::vector<T> Dv(B * H * Nq), p_null(p.has_null() ? B * H * Nq : 0), ds_null(p_null.size());

  // Pass 1, over (b, h, query tile): D, null-key terms, and dq.
  parallel_for(0, B * H * ntq, 1, [&](int64_t t0, int64_t t1) {
    std::vector<T> S(kTileQ * kTileK), dq(kTileQ * d);
    for (int64_t task = t0; task < t1; ++task) {
      const int64_t bh = task / ntq, b = bh / H, h = bh % H;
      const int64_t i0 = (task % ntq) * kTileQ, i1 = std::min(Nq, i0 + kTileQ), nq = i1 - i0;
      const Head<T> hd = head<T>(p, b, h);
      const T* lse = lse_all + bh * Nq;
      std::fill(dq.begin(), dq.end(), T(0));
      for (int64_t r = 0; r < nq; ++r) {
        const int64_t i = i0 + r;
        const T* dO = dout_row(b, h, i);
        const T Di = dot(dO, out_row(b, h, i), d);
        Dv[bh * Nq + i] = Di;
        if (hd.nk) {
          const T pn = prob(scale * dot(hd.q + i * hd.qn, hd.nk, d), lse[i]);
          const T dsn = pn * (dot(dO, hd.nv, d) - Di);
          p_null[bh * Nq + i] = pn;
          ds_null[bh * Nq + i] = dsn;
          for (int64_t c = 0; c < d; ++c) dq[r * d + c] += scale * dsn * hd.nk[c];
        }
      }
      const int64_t jend = key_end(p, i1);
      for (int64_t j0 = 0; j0 < jend; j0 += kTileK) {
        const int64_t j1 = std::min(jend, j0 + kTileK);
        score_tile(p, hd, i0, i1, j0, j1, S.data());
        for (int64_t r = 0; r < nq; ++r) {
          const int64_t i = i0 + r;
          const T* dO = dout_row(b, h, i);
          for (int64_t j = j0; j < j1; ++j) {
            const T P = prob(S[r * kTileK + (j - j0)], lse[i]);
            if (P == 0) continue;
            const T dS = P * (dot(dO, hd.v + j * hd.vn, d) - Dv[bh * Nq + i]);
            const T* kj = hd.k + j * hd.kn;
            for (int64_t c = 0; c < d; ++c) dq[r * d + c] += scale * dS * kj[c];
          }
        }
      }
      T* dqp = static_cast<T*>(p.dq) + b * p.dq_stride.b + h * p.dq_stride.h;
      for (int64_t r = 0; r < nq; ++r)
        for (int64_t c = 0; c < d; ++c) dqp[(i0 + r) * p.dq_stride.n + c] = dq[r * d + c];
    }
  });

  // Pass 2, over (b, h, key tile): dk and dv, recomputing P and dS.
  parallel_for(0, B * H * ntk, 1, [&](int64_t t0, int64_t t1) {
    std::vector<T> S(kTileQ * kTileK), dk(kTileK * d), dv(kTileK * d);
    for (int64_t task = t0; task < t1; ++task) {
      const int64_t bh = task / ntk, b = bh / H, h = bh % H;
      const int64_t j0 = (task % ntk) * kTileK, j1 = std::min(Nk, j0 + kTileK), nk = j1 - j0;
      const Head<T> hd = head<T>(p, b, h);
      const T* lse = lse_all + bh * Nq;
      std::fill(dk.begin(), dk.end(), T(0));
      std::fill(dv.begin(), dv.end(), T(0));
      // Causal: only queries i with j0 <= i + offset see any key of this tile.
      const int64_t istart = p.causal ? std::clamp<int64_t>(j0 - offset, 0, Nq) : 0;
      for (int64_t i0 = istart; i0 < Nq; i0 += kTileQ) {
        const int64_t i1 = std::min(Nq, i0 + kTileQ);
        score_tile(p, hd, i0, i1, j0, j1, S.data());
        for (int64_t i = i0; i < i1; ++i) {
          const T* dO = dout_row(b, h, i);
          const T* qi = hd.q + i * hd.qn;
          for (int64_t j = j0; j < j1; ++j) {
            const T P = prob(S[(i - i0) * kTileK + (j - j0)], lse[i]);
            if (P == 0) continue;
            const T dS = P * (dot(dO, hd.v + j * hd.vn, d) - Dv[bh * Nq + i]);
            T* dkj = &dk[(j - j0) * d];
            T* dvj = &dv[(j - j0) * d];
            for (int64_t c = 0; c < d; ++c) {
              dkj[c] += scale * dS * qi[c];
              dvj[c] += P * dO[c];
            }
          }
        }
      }
      T* dkp = static_cast<T*>(p.dk) + b * p.dk_stride.b + h * p.dk_stride.h;
      T* dvp = static_cast<T*>(p.dv) + b * p.dv_stride.b + h * p.dv_stride.h;
      for (int64_t r = 0; r < nk; ++r)
        for (int64_t c = 0; c < d; ++c) {
          dkp[(j0 + r) * p.dk_stride.n + c] = dk[r * d + c];
          dvp[(j0 + r) * p.dv_stride.n + c] = dv[r * d + c];
        }
    }
  });

  // Pass 3, over h: null key/value gradients, summed over (b, i) in a fixed order.
  if (p.has_null()) {
    parallel_for(0, H, 1, [&](int64_t h0, int64_t h1) {
      for (int64_t h = h0; h < h1; ++h) {
        T* dnk = static_cast<T*>(p.dnull_k) + h * d;
        T* dnv = static_cast<T*>(p.dnull_v) + h * d;
        std::fill(dnk, dnk + d, T(0));
        std::fill(dnv, dnv + d, T(0));
        for (int64_t b = 0; b < B; ++b) {
          const Head<T> hd = head<T>(p, b, h);
          for (int64_t i = 0; i < Nq; ++i) {
            const T pn = p_null[(b * H + h) * Nq + i], dsn = ds_null[(b * H + h) * Nq + i];
            const T* dO = dout_row(b, h, i);
            const T* qi = hd.q + i * hd.qn;
            for (int64_t c = 0; c < d; ++c) {
              dnk[c] += scale * dsn * qi[c];
              dnv[c] += pn * dO[c];
            }
          }
        }
      }
    });
  }
}

}  // namespace

void flash_attention_forward(const FlashAttentionParams& p) {
  check_flash_attention_params(p, false, "cpu::flash_attention_forward");
  if (p.B * p.H * p.Nq == 0) return;
  switch (p.dtype) {
    case DType::f32: return forward_impl<float>(p);
    case DType::f64: return forward_impl<double>(p);
    default: COLT5_FAIL("cpu::flash_attention_forward: dtype must be f32 or f64, got ", dtype_name(p.dtype));
  }
}

void flash_attention_backward(const FlashAttentionParams& p) {
  check_flash_attention_params(p, true, "cpu::flash_attention_backward");
  switch (p.dtype) {
    case DType::f32: return backward_impl<float>(p);
    case DType::f64: return backward_impl<double>(p);
    default: COLT5_FAIL("cpu::flash_attention_backward: dtype must be f32 or f64, got ", dtype_name(p.dtype));
  }
}

}  // namespace colt5::kernels::cpu
