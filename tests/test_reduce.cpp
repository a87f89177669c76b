#include <cmath>

#include "helpers.h"

using namespace colt5;
using namespace colt5::testing;

TEST_CASE("reduce: values by hand over dims, keepdim, strides") {
  Tensor a = from_vector({1, 2, 3, 4, 5, 6}, {2, 3}, {.dtype = DType::f64});
  check_values(sum(a, 1), {6, 15});
  check_values(sum(a.t(), 0), {6, 15});
  check_values(mean(a, 0), {2.5, 3.5, 4.5});
  check_values(mean(a), {3.5});
  CHECK(sum(a, std::vector<int>{0, 1}, true).shape() == Shape{1, 1});
  check_values(max(a, 0), {4, 5, 6});
  check_values(min(a, 1), {1, 4});
  CHECK(argmax(a, 1).to_vector<int64_t>() == std::vector<int64_t>{2, 2});
  CHECK(argmin(a.t(), 1).to_vector<int64_t>() == std::vector<int64_t>{0, 0, 0});
  CHECK(argmax(from_vector({3, 7, 7, 1}), 0).item<int64_t>() == 1);  // first maximum
  // logsumexp([0, ln 2, ln 3]) = ln 6; all -inf row gives -inf, not NaN.
  check_values(logsumexp(from_vector({0, std::log(2.0), std::log(3.0)}, {}, {.dtype = DType::f64}), 0), {std::log(6.0)});
  Tensor ninf = full({2, 3}, -INFINITY, {.dtype = DType::f64});
  std::vector<double> l = logsumexp(ninf, 1).to_vector<double>();
  CHECK(std::isinf(l[0]));
  CHECK(l[0] < 0);
  // Large values: no overflow.
  check_values(logsumexp(from_vector({1000, 1000}, {}, {.dtype = DType::f64}), 0), {1000 + std::log(2.0)});
  // Sum of bools counts.
  CHECK(sum(gt(a, 2.0)).item<int64_t>() == 4);
}

TEST_CASE("reduce: gradchecks") {
  using V = std::vector<Tensor>;
  Tensor x = rleaf({3, 4, 5}, 11);
  check_grad([](const V& v) { return sum(v[0]); }, {x});
  check_grad([](const V& v) { return sum(v[0], std::vector<int>{0, 2}); }, {x});
  check_grad([](const V& v) { return sum(v[0], 1, true); }, {x});
  check_grad([](const V& v) { return mean(v[0], -1); }, {x});
  check_grad([](const V& v) { return max(v[0], 1); }, {x});
  check_grad([](const V& v) { return min(v[0], std::vector<int>{0, 1}, true); }, {x});
  check_grad([](const V& v) { return logsumexp(v[0], 2); }, {x});
  check_grad([](const V& v) { return logsumexp(v[0].permute({2, 0, 1}), std::vector<int>{0, 2}); }, {x});
}

TEST_CASE("reduce: long rows and outer-dim reductions match a serial double sum") {
  Generator g(5);
  Tensor x = randn({3, 300000}, g, {.dtype = DType::f64});
  std::vector<double> v = x.to_vector<double>();
  for (int r = 0; r < 3; ++r) {
    double s = 0;
    for (int i = 0; i < 300000; ++i) s += v[r * 300000 + i];
    CHECK(sum(x, 1).to_vector<double>()[r] == doctest::Approx(s).epsilon(1e-12));
  }
  Tensor y = randn({500, 700}, g, {.dtype = DType::f64});
  std::vector<double> yv = y.to_vector<double>(), col = sum(y, 0).to_vector<double>();
  for (int j : {0, 1, 355, 699}) {
    double s = 0;
    for (int i = 0; i < 500; ++i) s += yv[i * 700 + j];
    CHECK(col[j] == doctest::Approx(s).epsilon(1e-12));
  }
  // The same for any thread count (fixed chunking).
  Tensor big = randn({1 << 20}, g);
  double s2 = sum(big).item<double>();
  int before = get_num_threads();
  set_num_threads(1);
  double s1 = sum(big).item<double>();
  set_num_threads(before);
  CHECK(s1 == s2);
}

TEST_CASE("reduce: errors") {
  CHECK_THROWS_WITH_AS(sum(ones({2, 3}), 2), doctest::Contains("sum: dim 2 out of range"), Error);
  CHECK_THROWS_WITH_AS(max(ones({2, 0}), 1), doctest::Contains("empty dim"), Error);
  CHECK_THROWS_WITH_AS(argmax(arange(4), 0), doctest::Contains("argmax: expected f32 or f64"), Error);
  CHECK(sum(ones({2, 0}), 1).to_vector<float>() == std::vector<float>{0, 0});
}
