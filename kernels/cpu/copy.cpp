#include "kernels/cpu/copy.h"

#include <cstring>

#include "engine/dispatch.h"
#include "kernels/cpu/loop.h"

namespace colt5::kernels::cpu {

void copy(void* dst, DType dt, const void* src, DType st, const Geometry<2>& g) {
  if (dt == st) {
    // Same type: move bytes (exact for i64, bool and halves).
    size_t es = dtype_size(dt);
    auto* d = static_cast<char*>(dst);
    auto* s = static_cast<const char*>(src);
    strided_loop<2>(g, [&](const int64_t* off, int64_t n, const int64_t* is) {
      if (is[0] == 1 && is[1] == 1) {
        std::memcpy(d + off[0] * es, s + off[1] * es, n * es);
        return;
      }
      for (int64_t i = 0; i < n; ++i)
        std::memcpy(d + (off[0] + i * is[0]) * es, s + (off[1] + i * is[1]) * es, es);
    });
    return;
  }
  dispatch_all(dt, "copy", [&](auto dtag) {
    using D = decltype(dtag);
    dispatch_all(st, "copy", [&](auto stag) {
      using S = decltype(stag);
      auto* d = static_cast<D*>(dst);
      auto* s = static_cast<const S*>(src);
      strided_loop<2>(g, [&](const int64_t* off, int64_t n, const int64_t* is) {
        for (int64_t i = 0; i < n; ++i)
          d[off[0] + i * is[0]] = from_double<D>(to_double(s[off[1] + i * is[1]]));
      });
    });
  });
}

void fill(void* dst, DType dt, double value, const Geometry<1>& g) {
  dispatch_all(dt, "fill", [&](auto tag) {
    using T = decltype(tag);
    T v = from_double<T>(value);
    auto* d = static_cast<T*>(dst);
    strided_loop<1>(g, [&](const int64_t* off, int64_t n, const int64_t* is) {
      if (is[0] == 1) {
        T* p = d + off[0];
        for (int64_t i = 0; i < n; ++i) p[i] = v;
      } else {
        for (int64_t i = 0; i < n; ++i) d[off[0] + i * is[0]] = v;
      }
    });
  });
}

}  // namespace colt5::kernels::cpu
