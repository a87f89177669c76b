// CPU routing gathers / scatters (contract in the header).
//
// Work splits: the gathers, route_back and its backward run one task per
// output row of D features; the gather backward (a scatter-add with possibly
// repeated indices) runs one task per (batch, block of feature columns), each
// walking the routed rows in order into an f32/f64 accumulator, so every sum
// has a fixed order whatever the thread count.
#include "kernels/cpu/routing.h"

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "engine/dispatch.h"
#include "engine/error.h"
#include "engine/parallel.h"

namespace colt5::kernels {

void check_routing_dims(const RoutingDims& d, const char* op) {
  COLT5_CHECK(d.B >= 0 && d.N >= 0 && d.D >= 0 && d.R >= 1 && d.n >= 0, op,
              ": sizes must be non-negative (R >= 1), got B=", d.B, " N=", d.N, " D=", d.D, " R=", d.R, " n=", d.n);
  COLT5_CHECK(d.dtype == DType::f32 || d.dtype == DType::f64 || d.dtype == DType::bf16 || d.dtype == DType::f16 ||
                  d.dtype == DType::b8,
              op, ": dtype must be f32, f64, bf16 or f16, got ", dtype_name(d.dtype));
}

}  // namespace colt5::kernels

namespace colt5::kernels::cpu {
namespace {

template <class T> struct AccOf { using type = float; };
template <> struct AccOf<double> { using type = double; };

template <class A, class T>
inline A ld(T v) {
  if constexpr (std::is_same_v<T, f16_t>) return static_cast<A>(f16_to_float(v.bits));
  else if constexpr (std::is_same_v<T, bf16_t>) return static_cast<A>(bf16_to_float(v.bits));
  else return static_cast<A>(v);
}
template <class T, class A>
inline T st(A v) {
  if constexpr (std::is_same_v<T, f16_t>) return T{float_to_f16(static_cast<float>(v))};
  else if constexpr (std::is_same_v<T, bf16_t>) return T{float_to_bf16(static_cast<float>(v))};
  else return static_cast<T>(v);
}

template <class F>
void by_dtype(DType dt, const char* op, F&& f) {
  switch (dt) {
    case DType::f32: f(float{}); return;
    case DType::f64: f(double{}); return;
    case DType::bf16: f(bf16_t{}); return;
    case DType::f16: f(f16_t{}); return;
    default: break;
  }
  COLT5_FAIL(op, ": dtype must be f32, f64, bf16 or f16, got ", dtype_name(dt));
}

// Rows per task so that a task moves about 16k elements.
int64_t grain_rows(int64_t D) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(D, 1)); }

template <class T>
const T* row(RowsIn r, int64_t b, int64_t i) {
  return static_cast<const T*>(r.p) + b * r.sb + i * r.sn;
}
template <class T>
T* row(RowsOut r, int64_t b, int64_t i) {
  return static_cast<T*>(r.p) + b * r.sb + i * r.sn;
}

template <class T>
void gather_impl(const RoutingDims& d, RowsOut out, RowsIn x, const int64_t* idx, const T* scores) {
  using A = typename AccOf<T>::type;
  const int64_t m = d.m(), D = d.D;
  parallel_for(0, d.B * m, grain_rows(D), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t b = r / m, j = r - b * m;
      const T* src = row<T>(x, b, idx[r]);
      T* dst = row<T>(out, b, j);
      if (scores) {
        const A s = ld<A>(scores[r]);
        for (int64_t c = 0; c < D; ++c) dst[c] = st<T>(ld<A>(src[c]) * s);
      } else {
        std::memcpy(dst, src, sizeof(T) * D);
      }
    }
  });
}

// f32 / f64 accumulate straight into dx (zeroed first); half types into an
// f32 buffer of N x (column block) per task, narrower blocks to bound it.
template <class T>
void gather_backward_impl(const RoutingDims& d, RowsOut dx, RowsIn g, const int64_t* idx, const T* scores) {
  using A = typename AccOf<T>::type;
  constexpr bool direct = std::is_same_v<T, A>;
  const int64_t m = d.m(), D = d.D, N = d.N;
  constexpr int64_t kCols = direct ? 64 : 16;
  const int64_t nblk = (D + kCols - 1) / kCols;
  parallel_for(0, d.B * nblk, 1, [&](int64_t t0, int64_t t1) {
    std::vector<A> buf;
    for (int64_t task = t0; task < t1; ++task) {
      const int64_t b = task / nblk, c0 = (task - b * nblk) * kCols, cw = std::min(kCols, D - c0);
      // acc row of token t: dx itself (stride dx.sn) or the buffer (stride cw)
      A* base;
      int64_t rs;
      if constexpr (direct) {
        base = row<T>(dx, b, 0) + c0;
        rs = dx.sn;
        for (int64_t t = 0; t < N; ++t) std::fill(base + t * rs, base + t * rs + cw, A(0));
      } else {
        buf.assign(N * cw, A(0));
        base = buf.data();
        rs = cw;
      }
      for (int64_t j = 0; j < m; ++j) {
        const T* src = row<T>(g, b, j) + c0;
        A* a = base + idx[b * m + j] * rs;
        if (scores) {
          const A s = ld<A>(scores[b * m + j]);
          for (int64_t c = 0; c < cw; ++c) a[c] += ld<A>(src[c]) * s;
        } else {
          for (int64_t c = 0; c < cw; ++c) a[c] += ld<A>(src[c]);
        }
      }
      if constexpr (!direct) {
        for (int64_t t = 0; t < N; ++t) {
          T* o = row<T>(dx, b, t) + c0;
          const A* a = buf.data() + t * cw;
          for (int64_t c = 0; c < cw; ++c) o[c] = st<T>(a[c]);
        }
      }
    }
  });
}

template <class T>
void dscores_impl(const RoutingDims& d, T* dscores, RowsIn g, RowsIn x, const int64_t* idx) {
  using A = typename AccOf<T>::type;
  const int64_t m = d.m(), D = d.D;
  parallel_for(0, d.B * m, grain_rows(D), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t b = r / m, j = r - b * m;
      const T* a = row<T>(g, b, j);
      const T* xr = row<T>(x, b, idx[r]);
      A s = 0;
      for (int64_t c = 0; c < D; ++c) s += ld<A>(a[c]) * ld<A>(xr[c]);
      dscores[r] = st<T>(s);
    }
  });
}

template <class T>
void route_forward_impl(const RoutingDims& d, RowsOut out, RowsIn dst, RowsIn routed, const int64_t* inv,
                        const T* scores) {
  using A = typename AccOf<T>::type;
  const int64_t N = d.N, m = d.m(), D = d.D;
  parallel_for(0, d.B * N, grain_rows(D), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t b = r / N, t = r - b * N, j = inv[r];
      T* o = row<T>(out, b, t);
      if (j < 0) {
        std::memcpy(o, row<T>(dst, b, t), sizeof(T) * D);
      } else if (scores) {
        const T* src = row<T>(routed, b, j);
        const A s = ld<A>(scores[b * m + j]);
        for (int64_t c = 0; c < D; ++c) o[c] = st<T>(ld<A>(src[c]) * s);
      } else {
        std::memcpy(o, row<T>(routed, b, j), sizeof(T) * D);
      }
    }
  });
}

template <class T>
void route_backward_impl(const RoutingDims& d, RowsOut ddst, RowsOut drouted, T* dscores, RowsIn g, RowsIn routed,
                         const int64_t* idx, const int64_t* inv, const T* scores) {
  using A = typename AccOf<T>::type;
  const int64_t N = d.N, m = d.m(), D = d.D;
  if (ddst.p) {
    parallel_for(0, d.B * N, grain_rows(D), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t b = r / N, t = r - b * N;
        T* o = row<T>(ddst, b, t);
        if (inv[r] >= 0) std::fill(o, o + D, st<T>(A(0)));
        else std::memcpy(o, row<T>(g, b, t), sizeof(T) * D);
      }
    });
  }
  if (drouted.p || dscores) {
    parallel_for(0, d.B * m, grain_rows(D), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t b = r / m, j = r - b * m, t = idx[r];
        const bool own = inv[b * N + t] == j;
        const T* gr = row<T>(g, b, t);
        if (drouted.p) {
          T* o = row<T>(drouted, b, j);
          if (!own) {
            std::fill(o, o + D, st<T>(A(0)));
          } else if (scores) {
            const A s = ld<A>(scores[r]);
            for (int64_t c = 0; c < D; ++c) o[c] = st<T>(ld<A>(gr[c]) * s);
          } else {
            std::memcpy(o, gr, sizeof(T) * D);
          }
        }
        if (dscores) {
          A s = 0;
          if (own) {
            const T* rr = row<T>(routed, b, j);
            for (int64_t c = 0; c < D; ++c) s += ld<A>(gr[c]) * ld<A>(rr[c]);
          }
          dscores[r] = st<T>(s);
        }
      }
    });
  }
}

}  // namespace

void gather_rows(const RoutingDims& d, RowsOut out, RowsIn x, const int64_t* idx, const void* scores) {
  const char* op = "cpu::gather_rows";
  check_routing_dims(d, op);
  if (d.B * d.m() * d.D == 0) return;
  if (d.dtype == DType::b8) {
    COLT5_CHECK(!scores, op, ": bool rows take no scores");
    gather_impl<uint8_t>(d, out, x, idx, nullptr);
    return;
  }
  by_dtype(d.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    gather_impl<T>(d, out, x, idx, static_cast<const T*>(scores));
  });
}

void gather_rows_backward(const RoutingDims& d, RowsOut dx, RowsIn g, const int64_t* idx, const void* scores) {
  const char* op = "cpu::gather_rows_backward";
  check_routing_dims(d, op);
  if (d.B * d.N * d.D == 0) return;
  by_dtype(d.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    gather_backward_impl<T>(d, dx, g, idx, static_cast<const T*>(scores));
  });
}

void gather_rows_dscores(const RoutingDims& d, void* dscores, RowsIn g, RowsIn x, const int64_t* idx) {
  const char* op = "cpu::gather_rows_dscores";
  check_routing_dims(d, op);
  if (d.B * d.m() == 0) return;
  by_dtype(d.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    dscores_impl<T>(d, static_cast<T*>(dscores), g, x, idx);
  });
}

void route_back_inverse(const RoutingDims& d, const int64_t* idx, int64_t* inv) {
  const char* op = "cpu::route_back_inverse";
  check_routing_dims(d, op);
  COLT5_CHECK(d.R == 1, op, ": route_back takes (B, n) indices, got R=", d.R);
  const int64_t N = d.N, m = d.m();
  parallel_for(0, d.B, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      int64_t* iv = inv + b * N;
      std::fill(iv, iv + N, int64_t{-1});
      for (int64_t j = 0; j < m; ++j) iv[idx[b * m + j]] = j;
    }
  });
}

void route_back_forward(const RoutingDims& d, RowsOut out, RowsIn dst, RowsIn routed, const int64_t* inv,
                        const void* scores) {
  const char* op = "cpu::route_back_forward";
  check_routing_dims(d, op);
  if (d.B * d.N * d.D == 0) return;
  by_dtype(d.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    route_forward_impl<T>(d, out, dst, routed, inv, static_cast<const T*>(scores));
  });
}

void route_back_backward(const RoutingDims& d, RowsOut ddst, RowsOut drouted, void* dscores, RowsIn g, RowsIn routed,
                         const int64_t* idx, const int64_t* inv, const void* scores) {
  const char* op = "cpu::route_back_backward";
  check_routing_dims(d, op);
  by_dtype(d.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    route_backward_impl<T>(d, ddst, drouted, static_cast<T*>(dscores), g, routed, idx, inv,
                           static_cast<const T*>(scores));
  });
}

}  // namespace colt5::kernels::cpu
