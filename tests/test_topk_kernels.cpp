// CPU hard top-k kernel vs an independent oracle: a stable sort of the indices
// by "value greater than" (NaN smallest), so ties keep the lower index.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "engine/error.h"
#include "engine/parallel.h"
#include "kernels/cpu/topk.h"

namespace {

template <class T>
bool ranks_before(T a, T b) {  // a strictly before b, ignoring index
  if (std::isnan(a)) return false;
  if (std::isnan(b)) return true;
  return a > b;  // -0.0 > +0.0 is false both ways: a tie
}

template <class T>
void oracle(const std::vector<T>& x, int64_t rows, int64_t n, int64_t k, std::vector<T>& v,
            std::vector<int64_t>& idx) {
  v.assign(size_t(rows * k), T(0));
  idx.assign(size_t(rows * k), -1);
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t r = 0; r < rows; ++r) {
    const T* row = x.data() + r * n;
    std::iota(order.begin(), order.end(), int64_t(0));
    std::stable_sort(order.begin(), order.end(),
                     [&](int64_t a, int64_t b) { return ranks_before(row[a], row[b]); });
    for (int64_t j = 0; j < k; ++j) {
      idx[size_t(r * k + j)] = order[size_t(j)];
      v[size_t(r * k + j)] = row[order[size_t(j)]];
    }
  }
}

template <class T>
bool same_bits(T a, T b) {
  return std::memcmp(&a, &b, sizeof(T)) == 0;
}

// Runs the kernel and the oracle; returns the number of mismatching slots.
template <class T>
int64_t check_topk(const std::vector<T>& x, int64_t rows, int64_t n, int64_t k) {
  std::vector<T> v(size_t(rows * k), T(-7)), ov;
  std::vector<int64_t> idx(size_t(rows * k), -7), oidx;
  colt5::kernels::cpu::topk<T>(x.data(), rows, n, k, v.data(), idx.data());
  oracle(x, rows, n, k, ov, oidx);
  int64_t bad = 0;
  for (size_t i = 0; i < v.size(); ++i)
    if (idx[i] != oidx[i] || !same_bits(v[i], ov[i])) ++bad;
  return bad;
}

template <class T>
std::vector<T> randn(int64_t count, uint64_t seed) {
  std::mt19937_64 g(seed);
  std::normal_distribution<double> d;
  std::vector<T> x(static_cast<size_t>(count));
  for (auto& e : x) e = T(d(g));
  return x;
}

template <class T>
std::vector<T> ties(int64_t count, uint64_t seed) {  // values in {0, 0.5, 1}
  std::mt19937_64 g(seed);
  std::vector<T> x(static_cast<size_t>(count));
  for (auto& e : x) e = T(0.5) * T(g() % 3);
  return x;
}

}  // namespace

TEST_CASE_TEMPLATE("topk cpu: random rows match the stable-sort oracle", T, float, double) {
  struct S {
    int64_t rows, n, k;
  };
  for (S s : {S{3, 1000, 10}, S{5, 1, 1}, S{4, 7, 7}, S{4, 7, 3}, S{2, 8193, 1}, S{2, 8193, 8193},
              S{16, 4096, 256}, S{3, 30000, 2500}, S{7, 2049, 2048}}) {
    CAPTURE(s.rows);
    CAPTURE(s.n);
    CAPTURE(s.k);
    auto x = randn<T>(s.rows * s.n, uint64_t(s.n * 31 + s.k));
    CHECK(check_topk(x, s.rows, s.n, s.k) == 0);
  }
}

TEST_CASE_TEMPLATE("topk cpu: exact ties go to the lower index", T, float, double) {
  for (int64_t k : {1, 2, 100, 500, 999, 1000}) {
    CAPTURE(k);
    auto x = ties<T>(4 * 1000, uint64_t(k));
    CHECK(check_topk(x, 4, 1000, k) == 0);
  }
  // Router case: more exact 1.0s than k; the first k of them, in index order.
  std::vector<T> x(2048, T(0.25));
  for (size_t i = 0; i < x.size(); i += 3) x[i] = T(1);
  std::vector<T> v(64);
  std::vector<int64_t> idx(64);
  colt5::kernels::cpu::topk<T>(x.data(), 1, 2048, 64, v.data(), idx.data());
  for (int64_t j = 0; j < 64; ++j) {
    CHECK(idx[size_t(j)] == 3 * j);
    CHECK(v[size_t(j)] == T(1));
  }
  // All equal: indices 0..k-1.
  std::vector<T> c(777, T(-3));
  std::vector<T> cv(777);
  std::vector<int64_t> ci(777);
  colt5::kernels::cpu::topk<T>(c.data(), 1, 777, 777, cv.data(), ci.data());
  for (int64_t j = 0; j < 777; ++j) CHECK(ci[size_t(j)] == j);
}

TEST_CASE_TEMPLATE("topk cpu: -inf, -MAX, +-0, inf and NaN", T, float, double) {
  const T inf = std::numeric_limits<T>::infinity();
  const T mx = std::numeric_limits<T>::max();
  const T nan = std::numeric_limits<T>::quiet_NaN();
  std::vector<T> x = {T(0.0), -inf, -mx, nan, T(-0.0), inf, T(1), -mx, nan, -inf, T(-0.0), T(0.0), -nan};
  const int64_t n = int64_t(x.size());
  for (int64_t k = 1; k <= n; ++k) {
    CAPTURE(k);
    CHECK(check_topk(x, 1, n, k) == 0);
  }
  // Spelled out for k = n: inf, 1, then the zeros by index (signs kept), -MAX,
  // -inf, then the NaNs by index.
  std::vector<T> v(static_cast<size_t>(n));
  std::vector<int64_t> idx(static_cast<size_t>(n));
  colt5::kernels::cpu::topk<T>(x.data(), 1, n, n, v.data(), idx.data());
  const std::vector<int64_t> want = {5, 6, 0, 4, 10, 11, 2, 7, 1, 9, 3, 8, 12};
  for (int64_t j = 0; j < n; ++j) CHECK(idx[size_t(j)] == want[size_t(j)]);
  CHECK(std::signbit(v[3]));   // x[4] = -0.0 comes back as -0.0
  CHECK(!std::signbit(v[2]));  // x[0] = +0.0
  CHECK(std::isnan(v[12]));

  // A masked router row: most entries -MAX, k larger than the unmasked count.
  std::vector<T> m(1000, -mx);
  for (int i = 0; i < 1000; i += 50) m[size_t(i)] = T(i) / 1000;
  CHECK(check_topk(m, 1, 1000, 100) == 0);
  // Random data sprinkled with NaN and infinities.
  auto r = randn<T>(5 * 3001, 99);
  for (size_t i = 0; i < r.size(); i += 7) r[i] = nan;
  for (size_t i = 3; i < r.size(); i += 11) r[i] = -inf;
  for (size_t i = 5; i < r.size(); i += 13) r[i] = inf;
  for (int64_t k : {1, 17, 2000, 2700, 3001}) {
    CAPTURE(k);
    CHECK(check_topk(r, 5, 3001, k) == 0);
  }
}

TEST_CASE("topk cpu: rows of 2^20 entries") {
  const int64_t n = int64_t(1) << 20;
  auto x = randn<float>(2 * n, 7);
  CHECK(check_topk(x, 2, n, 4096) == 0);
  auto t = ties<float>(n, 8);  // a third of the row ties at 1.0
  CHECK(check_topk(t, 1, n, 4096) == 0);
  auto d = randn<double>(n, 9);
  CHECK(check_topk(d, 1, n, 1) == 0);
}

TEST_CASE("topk cpu: same answer at any thread count") {
  auto x = ties<float>(64 * 3000, 5);
  std::vector<float> a(64 * 100), b(64 * 100);
  std::vector<int64_t> ia(64 * 100), ib(64 * 100);
  const int saved = colt5::get_num_threads();
  colt5::set_num_threads(1);
  colt5::kernels::cpu::topk<float>(x.data(), 64, 3000, 100, a.data(), ia.data());
  colt5::set_num_threads(2);
  colt5::kernels::cpu::topk<float>(x.data(), 64, 3000, 100, b.data(), ib.data());
  colt5::set_num_threads(saved);
  CHECK(ia == ib);
  CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

TEST_CASE("topk cpu: bad k throws with a message naming the values") {
  std::vector<float> x(10, 1.f), v(11);
  std::vector<int64_t> idx(11);
  CHECK_THROWS_WITH_AS(colt5::kernels::cpu::topk<float>(x.data(), 1, 10, 11, v.data(), idx.data()),
                       doctest::Contains("topk: k must be in [0, n], got k=11 n=10"), colt5::Error);
  CHECK_THROWS_WITH_AS(colt5::kernels::cpu::topk<float>(x.data(), 1, 10, -1, v.data(), idx.data()),
                       doctest::Contains("got k=-1 n=10"), colt5::Error);
  // k = 0 is a no-op.
  CHECK_NOTHROW(colt5::kernels::cpu::topk<float>(x.data(), 1, 10, 0, v.data(), idx.data()));
}
