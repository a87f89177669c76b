#include "kernels/cpu/reduce.h"

#include <cmath>
#include <limits>
#include <vector>

#include "engine/dispatch.h"
#include "engine/parallel.h"

namespace colt5::kernels::cpu {
namespace {

// Offsets of the i-th element of a geometry (row-major over its dims).
template <int N>
int64_t offset_of(const Geometry<N>& g, int k, int64_t i) {
  int64_t o = 0;
  for (int d = g.ndim - 1; d >= 0; --d) {
    o += (i % g.shape[d]) * g.strides[k][d];
    i /= g.shape[d];
  }
  return o;
}

template <class T> struct Acc { using type = T; };
template <> struct Acc<float> { using type = double; };

template <class T>
struct SumOp {
  using A = typename Acc<T>::type;
  static A init() { return A(0); }
  static void step(A& a, T x, int64_t) { a += x; }
  static T done(A a) { return static_cast<T>(a); }
  static void merge(A& a, A b) { a += b; }
};
template <class T>
struct MaxOp {
  using A = T;
  static A init() { return -std::numeric_limits<T>::infinity(); }
  static void step(A& a, T x, int64_t) { a = (x > a || std::isnan(x)) ? x : a; }
  static T done(A a) { return a; }
  static void merge(A& a, A b) { step(a, b, 0); }
};
template <class T>
struct MinOp {
  using A = T;
  static A init() { return std::numeric_limits<T>::infinity(); }
  static void step(A& a, T x, int64_t) { a = (x < a || std::isnan(x)) ? x : a; }
  static T done(A a) { return a; }
  static void merge(A& a, A b) { step(a, b, 0); }
};

// Reduction over all elements of red for each kept element. Each output is
// computed by one thread in a fixed order: deterministic for any thread count.
template <class T, class Op>
void reduce_rows(T* out, const T* x, const Geometry<2>& kept, const Geometry<1>& red) {
  const int64_t nout = kept.numel, nred = red.numel;
  const bool inner_contig = red.ndim == 1 && red.strides[0][0] == 1;
  // Kept dim with input stride 1 and reduced dims strided: accumulate whole rows.
  const bool rows_path = !inner_contig && kept.ndim >= 1 && kept.strides[1][kept.ndim - 1] == 1 &&
                         kept.strides[0][kept.ndim - 1] == 1;
  if (rows_path) {
    const int64_t inner = kept.shape[kept.ndim - 1];
    const int64_t outer = nout / inner;
    const int64_t block = 256;
    const int64_t nblocks = (inner + block - 1) / block;
    parallel_for(0, outer * nblocks, 1, [&](int64_t b, int64_t e) {
      std::vector<typename Op::A> acc(block);
      for (int64_t t = b; t < e; ++t) {
        int64_t o = t / nblocks, j0 = (t % nblocks) * block, j1 = std::min(inner, j0 + block);
        // Kept offsets of (o, j0): the outer part excludes the innermost kept dim.
        int64_t xo = 0, oo = 0, rem = o;
        for (int d = kept.ndim - 2; d >= 0; --d) {
          xo += (rem % kept.shape[d]) * kept.strides[1][d];
          oo += (rem % kept.shape[d]) * kept.strides[0][d];
          rem /= kept.shape[d];
        }
        for (int64_t j = j0; j < j1; ++j) acc[j - j0] = Op::init();
        for (int64_t r = 0; r < nred; ++r) {
          const T* row = x + xo + offset_of(red, 0, r);
          for (int64_t j = j0; j < j1; ++j) Op::step(acc[j - j0], row[j], r);
        }
        for (int64_t j = j0; j < j1; ++j) out[oo + j] = Op::done(acc[j - j0]);
      }
    });
    return;
  }
  constexpr int64_t kChunk = 1 << 16;
  if (inner_contig && nout < 2 * get_num_threads() && nred >= 2 * kChunk) {
    // Few long rows: fixed-size chunks reduced in parallel, partials merged in
    // order, so the result does not depend on the thread count.
    const int64_t nchunks = (nred + kChunk - 1) / kChunk;
    std::vector<typename Op::A> part(nout * nchunks);
    parallel_chunks(nout * nchunks, [&](int64_t t) {
      int64_t i = t / nchunks, c = t % nchunks;
      const T* base = x + offset_of(kept, 1, i);
      typename Op::A a = Op::init();
      for (int64_t r = c * kChunk, re = std::min(nred, r + kChunk); r < re; ++r) Op::step(a, base[r], r);
      part[t] = a;
    });
    for (int64_t i = 0; i < nout; ++i) {
      typename Op::A a = part[i * nchunks];
      for (int64_t c = 1; c < nchunks; ++c) Op::merge(a, part[i * nchunks + c]);
      out[offset_of(kept, 0, i)] = Op::done(a);
    }
    return;
  }
  parallel_for(0, nout, std::max<int64_t>(1, 32768 / std::max<int64_t>(nred, 1)), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const T* base = x + offset_of(kept, 1, i);
      typename Op::A a = Op::init();
      if (inner_contig) {
        for (int64_t r = 0; r < nred; ++r) Op::step(a, base[r], r);
      } else {
        for (int64_t r = 0; r < nred; ++r) Op::step(a, base[offset_of(red, 0, r)], r);
      }
      out[offset_of(kept, 0, i)] = Op::done(a);
    }
  });
}

template <class T>
void arg_reduce(bool is_max, int64_t* out, const T* x, const Geometry<2>& kept, const Geometry<1>& red) {
  const int64_t nred = red.numel;
  parallel_for(0, kept.numel, std::max<int64_t>(1, 32768 / std::max<int64_t>(nred, 1)), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const T* base = x + offset_of(kept, 1, i);
      int64_t best = 0;
      T bv = base[0];
      for (int64_t r = 1; r < nred; ++r) {
        T v = base[offset_of(red, 0, r)];
        if (std::isnan(bv)) break;  // NaN wins (first NaN)
        if (std::isnan(v) || (is_max ? v > bv : v < bv)) {
          bv = v;
          best = r;
        }
      }
      out[offset_of(kept, 0, i)] = best;
    }
  });
}

}  // namespace

void reduce(ReduceOp op, DType dt, void* out, const void* x, const Geometry<2>& kept, const Geometry<1>& red) {
  dispatch_numeric(dt, "reduce", [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_same_v<T, int64_t>) {
      COLT5_CHECK(op == ReduceOp::sum, "reduce: only sum is supported for i64 tensors");
      reduce_rows<int64_t, SumOp<int64_t>>(static_cast<int64_t*>(out), static_cast<const int64_t*>(x), kept, red);
    } else {
      const T* xp = static_cast<const T*>(x);
      switch (op) {
        case ReduceOp::sum: reduce_rows<T, SumOp<T>>(static_cast<T*>(out), xp, kept, red); break;
        case ReduceOp::max: reduce_rows<T, MaxOp<T>>(static_cast<T*>(out), xp, kept, red); break;
        case ReduceOp::min: reduce_rows<T, MinOp<T>>(static_cast<T*>(out), xp, kept, red); break;
        case ReduceOp::argmax: arg_reduce<T>(true, static_cast<int64_t*>(out), xp, kept, red); break;
        case ReduceOp::argmin: arg_reduce<T>(false, static_cast<int64_t*>(out), xp, kept, red); break;
      }
    }
  });
}

}  // namespace colt5::kernels::cpu
