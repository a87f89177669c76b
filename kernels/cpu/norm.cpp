// CPU LayerNorm / RMSNorm / l2norm kernels (semantics in the header).
#include "kernels/cpu/norm.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "engine/parallel.h"
#include "kernels/cpu/softmax.h"  // row helpers: Acc, row_sum, row_dot, kLineGrain, kLanes

namespace colt5::kernels::cpu {
namespace {

template <class Row>
void for_rows(int64_t rows, int64_t n, Row&& row) {
  parallel_for(0, rows, std::max<int64_t>(1, kLineGrain / std::max<int64_t>(n, 1)), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) row(r);
  });
}

// Rows with parameter gradients: rows are cut into fixed chunks (independent
// of the thread count); chunk c accumulates into its own np partial vectors of
// length n (part + c * np * n), zeroed first. merge(which, dst) then sums
// partial vector `which` over the chunks, in chunk order, into dst.
constexpr int64_t kMaxChunks = 32;

template <class A>
struct ChunkedRows {
  int64_t rows, n, np, per, nchunks;
  std::vector<A> part;

  ChunkedRows(int64_t rows_, int64_t n_, int64_t np_) : rows(rows_), n(n_), np(np_) {
    per = std::max((kLineGrain + n - 1) / std::max<int64_t>(n, 1), (rows + kMaxChunks - 1) / kMaxChunks);
    per = std::max<int64_t>(per, 1);
    nchunks = (rows + per - 1) / per;
    part.assign(static_cast<size_t>(nchunks * np * n), A(0));
  }
  template <class Row>  // row(r, partials of this chunk)
  void run(Row&& row) {
    parallel_chunks(nchunks, [&](int64_t c) {
      A* p = part.data() + c * np * n;
      for (int64_t r = c * per, e = std::min(rows, (c + 1) * per); r < e; ++r) row(r, p);
    });
  }
  template <class T>
  void merge(int64_t which, T* dst) {
    parallel_for(0, n, std::max<int64_t>(1, kLineGrain / std::max<int64_t>(nchunks, 1)), [&](int64_t b, int64_t e) {
      for (int64_t j = b; j < e; ++j) {
        A s = 0;
        for (int64_t c = 0; c < nchunks; ++c) s += part[(c * np + which) * n + j];
        dst[j] = static_cast<T>(s);
      }
    });
  }
};

// ------------------------------------------------------------ LayerNorm

template <class T>
void ln_row_forward(T* y, T& mean_out, T& rstd_out, const T* x, const T* w, const T* b, int64_t n, double eps) {
  using A = Acc<T>;
  const A mu = row_sum<T, A>(x, n) / static_cast<A>(n);
  A lane[kLanes] = {};
  int64_t k = 0;
  for (; k + kLanes <= n; k += kLanes)
    for (int j = 0; j < kLanes; ++j) {
      const A d = static_cast<A>(x[k + j]) - mu;
      lane[j] += d * d;
    }
  A ss = 0;
  for (int j = 0; j < kLanes; ++j) ss += lane[j];
  for (; k < n; ++k) {
    const A d = static_cast<A>(x[k]) - mu;
    ss += d * d;
  }
  const A rs = A(1) / std::sqrt(ss / static_cast<A>(n) + static_cast<A>(eps));
  const T m = static_cast<T>(mu), r = static_cast<T>(rs);
  mean_out = m;
  rstd_out = r;
  if (w && b) {
    for (int64_t i = 0; i < n; ++i) y[i] = (x[i] - m) * r * w[i] + b[i];
  } else if (w) {
    for (int64_t i = 0; i < n; ++i) y[i] = (x[i] - m) * r * w[i];
  } else if (b) {
    for (int64_t i = 0; i < n; ++i) y[i] = (x[i] - m) * r + b[i];
  } else {
    for (int64_t i = 0; i < n; ++i) y[i] = (x[i] - m) * r;
  }
}

// dx of one row (g = dout * w, w null: 1); with Partials, also adds the
// row's dweight and dbias terms to pw and pb in the same pass.
template <class T, bool HasW, bool Partials>
void ln_row_backward(T* dx, Acc<T>* pw, Acc<T>* pb, const T* dy, const T* x, const T* w, T m, T r, int64_t n) {
  using A = Acc<T>;
  A lg[kLanes] = {}, lgx[kLanes] = {};
  int64_t k = 0;
  for (; k + kLanes <= n; k += kLanes)
    for (int j = 0; j < kLanes; ++j) {
      const T xh = (x[k + j] - m) * r;
      const T g = HasW ? dy[k + j] * w[k + j] : dy[k + j];
      lg[j] += static_cast<A>(g);
      lgx[j] += static_cast<A>(g) * static_cast<A>(xh);
    }
  A sg = 0, sgx = 0;
  for (int j = 0; j < kLanes; ++j) sg += lg[j], sgx += lgx[j];
  for (; k < n; ++k) {
    const T xh = (x[k] - m) * r;
    const T g = HasW ? dy[k] * w[k] : dy[k];
    sg += static_cast<A>(g);
    sgx += static_cast<A>(g) * static_cast<A>(xh);
  }
  const T a = static_cast<T>(sg / static_cast<A>(n)), c = static_cast<T>(sgx / static_cast<A>(n));
  for (int64_t i = 0; i < n; ++i) {
    const T xh = (x[i] - m) * r;
    const T g = HasW ? dy[i] * w[i] : dy[i];
    dx[i] = r * (g - a - xh * c);
    if (Partials) {
      pw[i] += static_cast<A>(dy[i]) * static_cast<A>(xh);
      pb[i] += static_cast<A>(dy[i]);
    }
  }
}

template <class T>
void ln_forward(T* y, T* mean, T* rstd, const T* x, const T* w, const T* b, int64_t rows, int64_t n, double eps) {
  if (rows == 0) return;
  for_rows(rows, n, [&](int64_t r) { ln_row_forward(y + r * n, mean[r], rstd[r], x + r * n, w, b, n, eps); });
}

template <class T>
void ln_backward(T* dx, T* dw, T* db, const T* dy, const T* x, const T* w, const T* mean, const T* rstd,
                 int64_t rows, int64_t n) {
  using A = Acc<T>;
  if (!dw && !db) {
    if (!dx || rows == 0) return;
    for_rows(rows, n, [&](int64_t r) {
      if (w) ln_row_backward<T, true, false>(dx + r * n, nullptr, nullptr, dy + r * n, x + r * n, w, mean[r], rstd[r], n);
      else ln_row_backward<T, false, false>(dx + r * n, nullptr, nullptr, dy + r * n, x + r * n, w, mean[r], rstd[r], n);
    });
    return;
  }
  ChunkedRows<A> cr(rows, n, 2);
  cr.run([&](int64_t r, A* p) {
    const T* xr = x + r * n;
    const T* dyr = dy + r * n;
    const T m = mean[r], rs = rstd[r];
    if (dx) {  // one pass for dx and the parameter terms
      if (w) ln_row_backward<T, true, true>(dx + r * n, p, p + n, dyr, xr, w, m, rs, n);
      else ln_row_backward<T, false, true>(dx + r * n, p, p + n, dyr, xr, w, m, rs, n);
      return;
    }
    for (int64_t j = 0; j < n; ++j) {
      p[j] += static_cast<A>(dyr[j]) * static_cast<A>((xr[j] - m) * rs);
      p[n + j] += static_cast<A>(dyr[j]);
    }
  });
  if (dw) cr.merge(0, dw);
  if (db) cr.merge(1, db);
}

// ------------------------------------------------------------ RMSNorm / l2norm rows

// out = x * scale / max(r, eps) * gamma; saves r.
template <class T>
void l2_row_forward(T* y, T& norm_out, const T* x, const T* gamma, double scale, int64_t n, double eps) {
  using A = Acc<T>;
  const A r = std::sqrt(row_dot<T, A>(x, x, n));
  norm_out = static_cast<T>(r);
  const T k = static_cast<T>(static_cast<A>(scale) / std::max(r, static_cast<A>(eps)));
  if (gamma) {
    for (int64_t i = 0; i < n; ++i) y[i] = x[i] * k * gamma[i];
  } else {
    for (int64_t i = 0; i < n; ++i) y[i] = x[i] * k;
  }
}

// dx = (u - x * c) * a with u = dout * gamma * scale: a = 1/r, c = <u, x>/r^2
// when the norm is not clamped, a = 1/eps, c = 0 when it is. With Partials,
// also adds the row's dgamma term dout * x * scale / max(r, eps) to pg in the
// same pass.
template <class T, bool HasG, bool Partials = false>
void l2_row_dx(T* dx, const T* dy, const T* x, const T* gamma, double scale, T norm, int64_t n, double eps,
               Acc<T>* pg = nullptr) {
  using A = Acc<T>;
  const T sc = static_cast<T>(scale);
  const A r = static_cast<A>(norm);
  T a, c;
  if (r >= static_cast<A>(eps) && r > A(0)) {
    A lane[kLanes] = {};
    int64_t k = 0;
    for (; k + kLanes <= n; k += kLanes)
      for (int j = 0; j < kLanes; ++j) {
        const T u = HasG ? dy[k + j] * gamma[k + j] * sc : dy[k + j] * sc;
        lane[j] += static_cast<A>(u) * static_cast<A>(x[k + j]);
      }
    A dot = 0;
    for (int j = 0; j < kLanes; ++j) dot += lane[j];
    for (; k < n; ++k) {
      const T u = HasG ? dy[k] * gamma[k] * sc : dy[k] * sc;
      dot += static_cast<A>(u) * static_cast<A>(x[k]);
    }
    a = static_cast<T>(A(1) / r);
    c = static_cast<T>(dot / (r * r));
  } else {
    a = static_cast<T>(1.0 / eps);
    c = 0;
  }
  const T kg = static_cast<T>(scale / std::max(static_cast<double>(norm), eps));
  for (int64_t i = 0; i < n; ++i) {
    const T u = HasG ? dy[i] * gamma[i] * sc : dy[i] * sc;
    dx[i] = (u - x[i] * c) * a;
    if (Partials) pg[i] += static_cast<A>(dy[i] * x[i] * kg);
  }
}

template <class T>
void rms_forward(T* y, T* norm, const T* x, const T* gamma, int64_t rows, int64_t n, double eps) {
  if (rows == 0) return;
  const double scale = std::sqrt(static_cast<double>(n));
  for_rows(rows, n, [&](int64_t r) { l2_row_forward(y + r * n, norm[r], x + r * n, gamma, scale, n, eps); });
}

template <class T>
void rms_backward(T* dx, T* dgamma, const T* dy, const T* x, const T* gamma, const T* norm, int64_t rows, int64_t n,
                  double eps) {
  using A = Acc<T>;
  const double scale = std::sqrt(static_cast<double>(n));
  auto row_dx = [&](int64_t r) {
    if (gamma) l2_row_dx<T, true>(dx + r * n, dy + r * n, x + r * n, gamma, scale, norm[r], n, eps);
    else l2_row_dx<T, false>(dx + r * n, dy + r * n, x + r * n, gamma, scale, norm[r], n, eps);
  };
  if (!dgamma) {
    if (dx && rows > 0) for_rows(rows, n, row_dx);
    return;
  }
  ChunkedRows<A> cr(rows, n, 1);
  cr.run([&](int64_t r, A* p) {
    if (dx) {  // one pass for dx and the dgamma term
      if (gamma) l2_row_dx<T, true, true>(dx + r * n, dy + r * n, x + r * n, gamma, scale, norm[r], n, eps, p);
      else l2_row_dx<T, false, true>(dx + r * n, dy + r * n, x + r * n, gamma, scale, norm[r], n, eps, p);
      return;
    }
    const T* xr = x + r * n;
    const T* dyr = dy + r * n;
    const T k = static_cast<T>(scale / std::max(static_cast<double>(norm[r]), eps));
    for (int64_t j = 0; j < n; ++j) p[j] += static_cast<A>(dyr[j] * xr[j] * k);
  });
  cr.merge(0, dgamma);
}

// ------------------------------------------------------------ l2norm along a middle dim

constexpr int64_t kCols = 256;

// f(o, j0, w) for blocks of up to kCols adjacent columns of one outer index.
template <class F>
void for_col_blocks(int64_t outer, int64_t n, int64_t inner, F&& f) {
  const int64_t nblocks = (inner + kCols - 1) / kCols;
  const int64_t grain = std::max<int64_t>(1, kLineGrain / std::max<int64_t>(n * std::min(inner, kCols), 1));
  parallel_for(0, outer * nblocks, grain, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const int64_t o = t / nblocks, j0 = (t % nblocks) * kCols;
      f(o, j0, std::min(kCols, inner - j0));
    }
  });
}

template <class T>
void l2_cols_forward(T* y, T* norm, const T* x, int64_t outer, int64_t n, int64_t inner, double eps) {
  using A = Acc<T>;
  for_col_blocks(outer, n, inner, [&](int64_t o, int64_t j0, int64_t w) {
    A ss[kCols];
    T inv[kCols];
    for (int64_t j = 0; j < w; ++j) ss[j] = 0;
    for (int64_t k = 0; k < n; ++k) {
      const T* xr = x + (o * n + k) * inner + j0;
      for (int64_t j = 0; j < w; ++j) ss[j] += static_cast<A>(xr[j]) * static_cast<A>(xr[j]);
    }
    for (int64_t j = 0; j < w; ++j) {
      const A r = std::sqrt(ss[j]);
      norm[o * inner + j0 + j] = static_cast<T>(r);
      inv[j] = static_cast<T>(A(1) / std::max(r, static_cast<A>(eps)));
    }
    for (int64_t k = 0; k < n; ++k) {
      const T* xr = x + (o * n + k) * inner + j0;
      T* yr = y + (o * n + k) * inner + j0;
      for (int64_t j = 0; j < w; ++j) yr[j] = xr[j] * inv[j];
    }
  });
}

template <class T>
void l2_cols_backward(T* dx, const T* dy, const T* x, const T* norm, int64_t outer, int64_t n, int64_t inner,
                      double eps) {
  using A = Acc<T>;
  for_col_blocks(outer, n, inner, [&](int64_t o, int64_t j0, int64_t w) {
    A dot[kCols];
    T a[kCols], c[kCols];
    for (int64_t j = 0; j < w; ++j) dot[j] = 0;
    for (int64_t k = 0; k < n; ++k) {
      const T* xr = x + (o * n + k) * inner + j0;
      const T* dyr = dy + (o * n + k) * inner + j0;
      for (int64_t j = 0; j < w; ++j) dot[j] += static_cast<A>(dyr[j]) * static_cast<A>(xr[j]);
    }
    for (int64_t j = 0; j < w; ++j) {
      const A r = static_cast<A>(norm[o * inner + j0 + j]);
      const bool open = r >= static_cast<A>(eps) && r > A(0);
      a[j] = static_cast<T>(open ? A(1) / r : A(1) / static_cast<A>(eps));
      c[j] = static_cast<T>(open ? dot[j] / (r * r) : A(0));
    }
    for (int64_t k = 0; k < n; ++k) {
      const T* xr = x + (o * n + k) * inner + j0;
      const T* dyr = dy + (o * n + k) * inner + j0;
      T* dxr = dx + (o * n + k) * inner + j0;
      for (int64_t j = 0; j < w; ++j) dxr[j] = (dyr[j] - xr[j] * c[j]) * a[j];
    }
  });
}

template <class T>
void l2_forward(T* y, T* norm, const T* x, int64_t outer, int64_t n, int64_t inner, double eps) {
  if (outer * inner == 0) return;
  if (inner == 1) {
    for_rows(outer, n, [&](int64_t r) { l2_row_forward(y + r * n, norm[r], x + r * n, (const T*)nullptr, 1.0, n, eps); });
  } else {
    l2_cols_forward(y, norm, x, outer, n, inner, eps);
  }
}

template <class T>
void l2_backward(T* dx, const T* dy, const T* x, const T* norm, int64_t outer, int64_t n, int64_t inner,
                 double eps) {
  if (outer * inner == 0) return;
  if (inner == 1) {
    for_rows(outer, n, [&](int64_t r) {
      l2_row_dx<T, false>(dx + r * n, dy + r * n, x + r * n, nullptr, 1.0, norm[r], n, eps);
    });
  } else {
    l2_cols_backward(dx, dy, x, norm, outer, n, inner, eps);
  }
}

}  // namespace

// ------------------------------------------------------------ entry points

void layer_norm_forward(float* out, float* mean, float* rstd, const float* x, const float* weight,
                        const float* bias, int64_t rows, int64_t n, double eps) {
  ln_forward(out, mean, rstd, x, weight, bias, rows, n, eps);
}
void layer_norm_forward(double* out, double* mean, double* rstd, const double* x, const double* weight,
                        const double* bias, int64_t rows, int64_t n, double eps) {
  ln_forward(out, mean, rstd, x, weight, bias, rows, n, eps);
}
void layer_norm_backward(float* dx, float* dweight, float* dbias, const float* dout, const float* x,
                         const float* weight, const float* mean, const float* rstd, int64_t rows, int64_t n) {
  ln_backward(dx, dweight, dbias, dout, x, weight, mean, rstd, rows, n);
}
void layer_norm_backward(double* dx, double* dweight, double* dbias, const double* dout, const double* x,
                         const double* weight, const double* mean, const double* rstd, int64_t rows, int64_t n) {
  ln_backward(dx, dweight, dbias, dout, x, weight, mean, rstd, rows, n);
}

void rms_norm_forward(float* out, float* norm, const float* x, const float* gamma, int64_t rows, int64_t n,
                      double eps) {
  rms_forward(out, norm, x, gamma, rows, n, eps);
}
void rms_norm_forward(double* out, double* norm, const double* x, const double* gamma, int64_t rows, int64_t n,
                      double eps) {
  rms_forward(out, norm, x, gamma, rows, n, eps);
}
void rms_norm_backward(float* dx, float* dgamma, const float* dout, const float* x, const float* gamma,
                       const float* norm, int64_t rows, int64_t n, double eps) {
  rms_backward(dx, dgamma, dout, x, gamma, norm, rows, n, eps);
}
void rms_norm_backward(double* dx, double* dgamma, const double* dout, const double* x, const double* gamma,
                       const double* norm, int64_t rows, int64_t n, double eps) {
  rms_backward(dx, dgamma, dout, x, gamma, norm, rows, n, eps);
}

void l2norm_forward(float* out, float* norm, const float* x, int64_t outer, int64_t n, int64_t inner, double eps) {
  l2_forward(out, norm, x, outer, n, inner, eps);
}
void l2norm_forward(double* out, double* norm, const double* x, int64_t outer, int64_t n, int64_t inner,
                    double eps) {
  l2_forward(out, norm, x, outer, n, inner, eps);
}
void l2norm_backward(float* dx, const float* dout, const float* x, const float* norm, int64_t outer, int64_t n,
                     int64_t inner, double eps) {
  l2_backward(dx, dout, x, norm, outer, n, inner, eps);
}
void l2norm_backward(double* dx, const double* dout, const double* x, const double* norm, int64_t outer, int64_t n,
                     int64_t inner, double eps) {
  l2_backward(dx, dout, x, norm, outer, n, inner, eps);
}

}  // namespace colt5::kernels::cpu
