// Hard top-k, CPU. See topk.h for the order; the CUDA kernels produce exactly
// the same values and indices.
#include "kernels/cpu/topk.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "engine/error.h"
#include "engine/parallel.h"

namespace colt5::kernels::cpu {
namespace {

template <class T>
struct Traits;
template <>
struct Traits<float> {
  using Bits = uint32_t;
  static constexpr Bits kSign = 0x80000000u;
  static constexpr Bits kInf = 0x7F800000u;  // |bits| above this is NaN
};
template <>
struct Traits<double> {
  using Bits = uint64_t;
  static constexpr Bits kSign = 0x8000000000000000ull;
  static constexpr Bits kInf = 0x7FF0000000000000ull;
};

// Descending-order key, inverted so that ascending order of the returned value
// is the top-k order: nkey(a) < nkey(b)  <=>  a ranks before b (ignoring index).
// NaN -> all ones (last), -0 -> same as +0.
template <class T>
inline typename Traits<T>::Bits neg_order_key(T v) {
  using Tr = Traits<T>;
  using Bits = typename Tr::Bits;
  constexpr int kTop = int(sizeof(Bits) * 8) - 1;
  Bits u;
  std::memcpy(&u, &v, sizeof(u));
  const bool nan = (u & ~Tr::kSign) > Tr::kInf;
  u = (u == Tr::kSign) ? Bits(0) : u;                         // -0 -> +0
  const Bits key = u ^ ((Bits(0) - (u >> kTop)) | Tr::kSign);  // negative: ~u, else u | sign
  return nan ? ~Bits(0) : ~key;                                // branch-free: selects only
}

// One row. Composite (nkey, index) pairs are all distinct, so "the k smallest
// composites" is exactly the answer, sorted ascending.
template <class T>
struct RowTopk {
  using Bits = typename Traits<T>::Bits;
  static constexpr int kBits = int(sizeof(Bits) * 8);
  static constexpr int kHistBits = 11;
  // float and n < 2^32: pack (nkey, index) into one uint64 (fast compare);
  // otherwise a pair compared lexicographically.
  static constexpr bool kPacked = std::is_same_v<T, float>;
  struct Pair {
    Bits key;
    uint64_t idx;
    bool operator<(const Pair& o) const { return key < o.key || (key == o.key && idx < o.idx); }
  };

  std::vector<Bits> keys;
  std::vector<uint64_t> packed;
  std::vector<Pair> pairs;
  std::vector<uint32_t> hist;

  void run(const T* x, int64_t n, int64_t k, T* values, int64_t* indices) {
    keys.resize(size_t(n));
    hist.assign(size_t(1) << kHistBits, 0);
    constexpr int shift = kBits - kHistBits;
    Bits* kp = keys.data();
    for (int64_t i = 0; i < n; ++i) kp[i] = neg_order_key(x[i]);  // vectorises
    for (int64_t i = 0; i < n; ++i) ++hist[kp[i] >> shift];
    // Smallest bucket b such that buckets [0, b] hold >= k entries: every
    // winner has its bucket <= b, so only those are candidates.
    int64_t acc = 0;
    Bits cut = 0;
    for (size_t b = 0; b < hist.size(); ++b) {
      acc += hist[b];
      if (acc >= k) {
        cut = Bits(b);
        break;
      }
    }
    const bool packable = kPacked && n <= (int64_t(1) << 32);
    if (packable) {
      packed.clear();
      for (int64_t i = 0; i < n; ++i)
        if ((keys[size_t(i)] >> shift) <= cut) packed.push_back((uint64_t(keys[size_t(i)]) << 32) | uint64_t(i));
      select_and_sort(packed, k);
      for (int64_t j = 0; j < k; ++j) {
        const int64_t idx = int64_t(packed[size_t(j)] & 0xFFFFFFFFull);
        values[j] = x[idx];
        indices[j] = idx;
      }
    } else {
      pairs.clear();
      for (int64_t i = 0; i < n; ++i)
        if ((keys[size_t(i)] >> shift) <= cut) pairs.push_back({keys[size_t(i)], uint64_t(i)});
      select_and_sort(pairs, k);
      for (int64_t j = 0; j < k; ++j) {
        const int64_t idx = int64_t(pairs[size_t(j)].idx);
        values[j] = x[idx];
        indices[j] = idx;
      }
    }
  }

  template <class V>
  static void select_and_sort(V& v, int64_t k) {
    if (int64_t(v.size()) > k) std::nth_element(v.begin(), v.begin() + k, v.end());
    std::sort(v.begin(), v.begin() + k);
  }
};

}  // namespace

template <class T>
void topk(const T* x, int64_t rows, int64_t n, int64_t k, T* values, int64_t* indices) {
  COLT5_CHECK(rows >= 0 && n >= 0, "topk: rows and n must be >= 0, got rows=", rows, " n=", n);
  COLT5_CHECK(k >= 0 && k <= n, "topk: k must be in [0, n], got k=", k, " n=", n);
  if (rows == 0 || k == 0) return;
  COLT5_CHECK(x != nullptr && values != nullptr && indices != nullptr, "topk: null pointer");
  // About 64K entries of work per chunk; chunking depends only on the shape.
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 16) / std::max<int64_t>(n, 1));
  parallel_for(0, rows, grain, [&](int64_t r0, int64_t r1) {
    RowTopk<T> work;
    for (int64_t r = r0; r < r1; ++r) work.run(x + r * n, n, k, values + r * k, indices + r * k);
  });
}

template void topk<float>(const float*, int64_t, int64_t, int64_t, float*, int64_t*);
template void topk<double>(const double*, int64_t, int64_t, int64_t, double*, int64_t*);

}  // namespace colt5::kernels::cpu
