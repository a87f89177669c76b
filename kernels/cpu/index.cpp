#include "kernels/cpu/index.h"

#include <algorithm>
#include <cstdlib>

#include "engine/dispatch.h"
#include "engine/parallel.h"

namespace colt5::kernels::cpu {
namespace {

constexpr int64_t kIndexGrain = 32768;  // elements per parallel chunk, at least

// Walks the lines of g in parallel chunks (a chunk is a contiguous range of lines,
// at least `grain` of them) and calls inner(off[3], n, is[3]) for runs of n lines
// along the innermost line dim.
template <class F>
void for_lines(const Geometry<3>& g, int64_t grain, F&& inner) {
  if (g.numel == 0) return;
  if (g.ndim == 0) {
    int64_t off[3] = {0, 0, 0}, st[3] = {0, 0, 0};
    inner(off, int64_t{1}, st);
    return;
  }
  const int nd = g.ndim;
  const int64_t last = g.shape[nd - 1];
  int64_t ist[3];
  for (int k = 0; k < 3; ++k) ist[k] = g.strides[k][nd - 1];
  parallel_for(0, g.numel, grain, [&](int64_t b, int64_t e) {
    int64_t idx[kMaxDims];
    int64_t rem = b;
    for (int d = nd - 1; d >= 0; --d) {
      idx[d] = rem % g.shape[d];
      rem /= g.shape[d];
    }
    int64_t i = b;
    while (i < e) {
      int64_t off[3];
      for (int k = 0; k < 3; ++k) {
        int64_t o = 0;
        for (int d = 0; d < nd; ++d) o += idx[d] * g.strides[k][d];
        off[k] = o;
      }
      int64_t cnt = std::min(last - idx[nd - 1], e - i);
      inner(off, cnt, ist);
      i += cnt;
      idx[nd - 1] += cnt;
      for (int d = nd - 1; d > 0 && idx[d] >= g.shape[d]; --d) {
        idx[d] = 0;
        ++idx[d - 1];
      }
    }
  });
}

int64_t line_grain(const IndexGeometry& g) { return std::max<int64_t>(1, kIndexGrain / std::max<int64_t>(g.m, 1)); }

// Loop order: walk the dim innermost when it is the denser direction of the direct operand.
bool dim_inner(int64_t dim_stride, const int64_t* is, int direct) {
  return std::abs(dim_stride) <= std::abs(is[direct]);
}

template <class T>
void gather_t(T* dst, const int64_t* idx, const T* src, const IndexGeometry& g) {
  const int64_t m = g.m, dd = g.dim_stride[0], di = g.dim_stride[1], ds = g.dim_stride[2];
  for_lines(g.lines, line_grain(g), [&](const int64_t* off, int64_t n, const int64_t* is) {
    if (dim_inner(dd, is, 0)) {
      for (int64_t i = 0; i < n; ++i) {
        T* d = dst + off[0] + i * is[0];
        const int64_t* x = idx + off[1] + i * is[1];
        const T* s = src + off[2] + i * is[2];
        for (int64_t j = 0; j < m; ++j) d[j * dd] = s[x[j * di] * ds];
      }
    } else {
      for (int64_t j = 0; j < m; ++j) {
        T* d = dst + off[0] + j * dd;
        const int64_t* x = idx + off[1] + j * di;
        const T* s = src + off[2];
        if (is[1] == 0) {  // one index for the whole run (index_select, embedding): a strided row copy
          const T* sr = s + x[0] * ds;
          if (is[0] == 1 && is[2] == 1) {
            for (int64_t i = 0; i < n; ++i) d[i] = sr[i];
          } else {
            for (int64_t i = 0; i < n; ++i) d[i * is[0]] = sr[i * is[2]];
          }
        } else {
          for (int64_t i = 0; i < n; ++i) d[i * is[0]] = s[i * is[2] + x[i * is[1]] * ds];
        }
      }
    }
  });
}

template <class T, bool Acc>
void scatter_t(T* dst, const int64_t* idx, const T* src, const IndexGeometry& g) {
  const int64_t m = g.m, dd = g.dim_stride[0], di = g.dim_stride[1], ds = g.dim_stride[2];
  auto put = [](T& d, T v) {
    if constexpr (Acc) d += v;
    else d = v;
  };
  for_lines(g.lines, line_grain(g), [&](const int64_t* off, int64_t n, const int64_t* is) {
    if (dim_inner(ds, is, 2)) {
      for (int64_t i = 0; i < n; ++i) {
        T* d = dst + off[0] + i * is[0];
        const int64_t* x = idx + off[1] + i * is[1];
        const T* s = src + off[2] + i * is[2];
        for (int64_t j = 0; j < m; ++j) put(d[x[j * di] * dd], s[j * ds]);
      }
    } else {
      for (int64_t j = 0; j < m; ++j) {  // every line still sees j in increasing order
        T* d = dst + off[0];
        const int64_t* x = idx + off[1] + j * di;
        const T* s = src + off[2] + j * ds;
        if (is[1] == 0) {  // one index for the whole run (index_select / embedding backward): row add
          T* dr = d + x[0] * dd;
          if (is[0] == 1 && is[2] == 1) {
            for (int64_t i = 0; i < n; ++i) put(dr[i], s[i]);
          } else {
            for (int64_t i = 0; i < n; ++i) put(dr[i * is[0]], s[i * is[2]]);
          }
        } else {
          for (int64_t i = 0; i < n; ++i) put(d[i * is[0] + x[i * is[1]] * dd], s[i * is[2]]);
        }
      }
    }
  });
}

// Element moves by size: the dtype does not matter.
template <class F>
void by_size(DType dt, F&& f) {
  switch (dtype_size(dt)) {
    case 1: f(uint8_t{}); break;
    case 2: f(uint16_t{}); break;
    case 4: f(uint32_t{}); break;
    default: f(uint64_t{}); break;
  }
}

}  // namespace

IndexGeometry make_index_geometry(const Shape& shape, int dim, const Shape& dst_strides, const Shape& idx_strides,
                                  const Shape& src_strides) {
  IndexGeometry g;
  Shape lines = shape;
  g.m = shape[dim];
  lines[dim] = 1;  // dropped by make_geometry
  g.dim_stride[0] = dst_strides[dim];
  g.dim_stride[1] = idx_strides[dim];
  g.dim_stride[2] = src_strides[dim];
  g.lines = make_geometry<3>(lines, {dst_strides, idx_strides, src_strides});
  if (g.m == 0) g.lines.numel = 0;
  return g;
}

void gather(DType dt, void* dst, const int64_t* idx, const void* src, const IndexGeometry& g) {
  by_size(dt, [&](auto tag) {
    using T = decltype(tag);
    gather_t<T>(static_cast<T*>(dst), idx, static_cast<const T*>(src), g);
  });
}

void scatter(DType dt, void* dst, const int64_t* idx, const void* src, const IndexGeometry& g, bool accumulate,
             const char* op) {
  if (!accumulate) {
    by_size(dt, [&](auto tag) {
      using T = decltype(tag);
      scatter_t<T, false>(static_cast<T*>(dst), idx, static_cast<const T*>(src), g);
    });
    return;
  }
  dispatch_numeric(dt, op, [&](auto tag) {
    using T = decltype(tag);
    scatter_t<T, true>(static_cast<T*>(dst), idx, static_cast<const T*>(src), g);
  });
}

bool indices_in_range(const int64_t* idx, const Geometry<1>& g, int64_t size, int64_t* bad) {
  if (g.numel == 0) return true;
  const int nd = g.ndim;
  const int64_t last = nd ? g.shape[nd - 1] : 1, st = nd ? g.strides[0][nd - 1] : 0;
  int64_t pos[kMaxDims] = {};
  for (int64_t row = 0; row < g.numel / last; ++row) {
    int64_t o = 0;
    for (int d = 0; d + 1 < nd; ++d) o += pos[d] * g.strides[0][d];
    const int64_t* p = idx + o;
    for (int64_t i = 0; i < last; ++i) {
      int64_t v = p[i * st];
      if (v < 0 || v >= size) {
        *bad = v;
        return false;
      }
    }
    for (int d = nd - 2; d >= 0; --d) {
      if (++pos[d] < g.shape[d]) break;
      pos[d] = 0;
    }
  }
  return true;
}

}  // namespace colt5::kernels::cpu
