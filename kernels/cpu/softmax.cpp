// CPU softmax / log-softmax kernels (semantics in the header).
#include "kernels/cpu/softmax.h"

#include <algorithm>
#include <type_traits>

#include "engine/parallel.h"

namespace colt5::kernels::cpu {
namespace {

// Rows of n contiguous elements (inner == 1).

template <class T>
void softmax_row(T* y, const T* x, int64_t n) {
  using A = Acc<T>;
  T m = row_max(x, n);
  if (m == -std::numeric_limits<T>::infinity()) m = 0;  // fully masked: exp(-inf - 0) = 0 below, s = 0
  for (int64_t k = 0; k < n; ++k) y[k] = vexp(x[k] - m);
  const A s = row_sum<T, A>(y, n);
  const T inv = s == A(0) ? T(0) : static_cast<T>(A(1) / s);
  for (int64_t k = 0; k < n; ++k) y[k] *= inv;
}

template <class T>
void log_softmax_row(T* y, const T* x, int64_t n) {
  using A = Acc<T>;
  T m;
  A s;
  row_max_sumexp(x, n, m, s);
  if (m == -std::numeric_limits<T>::infinity()) {  // fully masked (or empty)
    std::fill(y, y + n, m);
    return;
  }
  const T c = static_cast<T>(static_cast<A>(m) + std::log(s));
  for (int64_t k = 0; k < n; ++k) y[k] = x[k] - c;
}

template <class T>
void softmax_backward_row(T* dx, const T* dy, const T* y, int64_t n) {
  const T d = static_cast<T>(row_dot<T, Acc<T>>(dy, y, n));
  for (int64_t k = 0; k < n; ++k) dx[k] = y[k] * (dy[k] - d);
}

template <class T>
void log_softmax_backward_row(T* dx, const T* dy, const T* y, int64_t n) {
  const T ninf = -std::numeric_limits<T>::infinity();
  bool masked = true;
  for (int64_t k = 0; k < n && masked; ++k) masked = y[k] == ninf;
  if (masked) {
    std::fill(dx, dx + n, T(0));
    return;
  }
  const T s = static_cast<T>(row_sum<T, Acc<T>>(dy, n));
  for (int64_t k = 0; k < n; ++k) dx[k] = dy[k] - vexp(y[k]) * s;
}

// Lines along a middle dim (inner > 1): a task is a block of up to kCols
// adjacent columns of one outer index; every loop runs along the columns.

constexpr int64_t kCols = 256;

struct ColBlock {
  int64_t base, w;  // element offset of (o, 0, j0); number of columns
};

template <class T, class F>
void for_col_blocks(int64_t outer, int64_t n, int64_t inner, F&& f) {
  const int64_t nblocks = (inner + kCols - 1) / kCols;
  const int64_t grain = std::max<int64_t>(1, kLineGrain / std::max<int64_t>(n * std::min(inner, kCols), 1));
  parallel_for(0, outer * nblocks, grain, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const int64_t o = t / nblocks, j0 = (t % nblocks) * kCols;
      f(ColBlock{o * n * inner + j0, std::min(kCols, inner - j0)});
    }
  });
}

template <class T, bool Log>
void softmax_cols(T* y, const T* x, int64_t outer, int64_t n, int64_t inner) {
  using A = Acc<T>;
  const T ninf = -std::numeric_limits<T>::infinity();
  for_col_blocks<T>(outer, n, inner, [&](ColBlock cb) {
    T m[kCols], e[kCols], c[kCols];
    A s[kCols];
    const int64_t w = cb.w;
    for (int64_t j = 0; j < w; ++j) m[j] = ninf, s[j] = 0;
    for (int64_t k = 0; k < n; ++k) {
      const T* xr = x + cb.base + k * inner;
      for (int64_t j = 0; j < w; ++j) m[j] = (xr[j] > m[j] || xr[j] != xr[j]) ? xr[j] : m[j];
    }
    for (int64_t j = 0; j < w; ++j) m[j] = m[j] == ninf ? T(0) : m[j];  // fully masked column: exp(-inf) = 0
    for (int64_t k = 0; k < n; ++k) {
      const T* xr = x + cb.base + k * inner;
      T* er = Log ? e : y + cb.base + k * inner;  // softmax keeps exp(x - m) in the output
      for (int64_t j = 0; j < w; ++j) er[j] = vexp(xr[j] - m[j]);
      for (int64_t j = 0; j < w; ++j) s[j] += er[j];
    }
    if (Log) {  // y = x - c, c = m + log(s); a fully masked column keeps x = -inf
      for (int64_t j = 0; j < w; ++j) c[j] = s[j] == A(0) ? T(0) : static_cast<T>(m[j] + std::log(s[j]));
      for (int64_t k = 0; k < n; ++k) {
        const T* xr = x + cb.base + k * inner;
        T* yr = y + cb.base + k * inner;
        for (int64_t j = 0; j < w; ++j) yr[j] = xr[j] - c[j];
      }
    } else {  // y *= c, c = 1 / s; a fully masked column gives 0
      for (int64_t j = 0; j < w; ++j) c[j] = s[j] == A(0) ? T(0) : static_cast<T>(A(1) / s[j]);
      for (int64_t k = 0; k < n; ++k) {
        T* yr = y + cb.base + k * inner;
        for (int64_t j = 0; j < w; ++j) yr[j] *= c[j];
      }
    }
  });
}

template <class T, bool Log>
void softmax_backward_cols(T* dx, const T* dy, const T* y, int64_t outer, int64_t n, int64_t inner) {
  using A = Acc<T>;
  const T ninf = -std::numeric_limits<T>::infinity();
  for_col_blocks<T>(outer, n, inner, [&](ColBlock cb) {
    A d[kCols];
    T dd[kCols], ymax[kCols];
    const int64_t w = cb.w;
    for (int64_t j = 0; j < w; ++j) d[j] = 0, ymax[j] = ninf;
    for (int64_t k = 0; k < n; ++k) {
      const T* dyr = dy + cb.base + k * inner;
      const T* yr = y + cb.base + k * inner;
      if (Log) {
        for (int64_t j = 0; j < w; ++j) d[j] += dyr[j];
        for (int64_t j = 0; j < w; ++j) ymax[j] = (yr[j] > ymax[j] || yr[j] != yr[j]) ? yr[j] : ymax[j];
      } else {
        for (int64_t j = 0; j < w; ++j) d[j] += static_cast<A>(dyr[j]) * static_cast<A>(yr[j]);
      }
    }
    for (int64_t j = 0; j < w; ++j) dd[j] = static_cast<T>(d[j]);
    for (int64_t k = 0; k < n; ++k) {
      const T* dyr = dy + cb.base + k * inner;
      const T* yr = y + cb.base + k * inner;
      T* dxr = dx + cb.base + k * inner;
      if (Log) {  // a fully masked column (every y = -inf) gets 0
        for (int64_t j = 0; j < w; ++j) dxr[j] = ymax[j] == ninf ? T(0) : dyr[j] - vexp(yr[j]) * dd[j];
      } else {
        for (int64_t j = 0; j < w; ++j) dxr[j] = yr[j] * (dyr[j] - dd[j]);
      }
    }
  });
}

template <class T, class Row>
void for_rows(int64_t rows, int64_t n, Row&& row) {
  parallel_for(0, rows, std::max<int64_t>(1, kLineGrain / std::max<int64_t>(n, 1)), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) row(r * n);
  });
}

template <class T>
void fwd(T* y, const T* x, int64_t outer, int64_t n, int64_t inner, bool log) {
  if (outer * n * inner == 0) return;
  if (inner == 1) {
    for_rows<T>(outer, n, [&](int64_t off) {
      if (log) log_softmax_row(y + off, x + off, n);
      else softmax_row(y + off, x + off, n);
    });
  } else {
    if (log) softmax_cols<T, true>(y, x, outer, n, inner);
    else softmax_cols<T, false>(y, x, outer, n, inner);
  }
}

template <class T>
void bwd(T* dx, const T* dy, const T* y, int64_t outer, int64_t n, int64_t inner, bool log) {
  if (outer * n * inner == 0) return;
  if (inner == 1) {
    for_rows<T>(outer, n, [&](int64_t off) {
      if (log) log_softmax_backward_row(dx + off, dy + off, y + off, n);
      else softmax_backward_row(dx + off, dy + off, y + off, n);
    });
  } else {
    if (log) softmax_backward_cols<T, true>(dx, dy, y, outer, n, inner);
    else softmax_backward_cols<T, false>(dx, dy, y, outer, n, inner);
  }
}

}  // namespace

void softmax_forward(float* out, const float* x, int64_t outer, int64_t n, int64_t inner) {
  fwd(out, x, outer, n, inner, false);
}
void softmax_forward(double* out, const double* x, int64_t outer, int64_t n, int64_t inner) {
  fwd(out, x, outer, n, inner, false);
}
void log_softmax_forward(float* out, const float* x, int64_t outer, int64_t n, int64_t inner) {
  fwd(out, x, outer, n, inner, true);
}
void log_softmax_forward(double* out, const double* x, int64_t outer, int64_t n, int64_t inner) {
  fwd(out, x, outer, n, inner, true);
}
void softmax_backward(float* dx, const float* dout, const float* out, int64_t outer, int64_t n, int64_t inner) {
  bwd(dx, dout, out, outer, n, inner, false);
}
void softmax_backward(double* dx, const double* dout, const double* out, int64_t outer, int64_t n, int64_t inner) {
  bwd(dx, dout, out, outer, n, inner, false);
}
void log_softmax_backward(float* dx, const float* dout, const float* out, int64_t outer, int64_t n, int64_t inner) {
  bwd(dx, dout, out, outer, n, inner, true);
}
void log_softmax_backward(double* dx, const double* dout, const double* out, int64_t outer, int64_t n,
                          int64_t inner) {
  bwd(dx, dout, out, outer, n, inner, true);
}

}  // namespace colt5::kernels::cpu
