// cat, stack, split, chunk.
#include "helpers.h"

using namespace colt5;
using namespace colt5::testing;

TEST_CASE("cat and stack: values by hand") {
  Tensor a = from_vector({1, 2, 3, 4}, {2, 2});
  Tensor b = from_vector({5, 6}, {1, 2});
  Tensor c = cat({a, b}, 0);
  CHECK(c.shape() == Shape{3, 2});
  check_values(c, {1, 2, 3, 4, 5, 6});
  check_values(cat({a, b.t()}, 1), {1, 2, 5, 3, 4, 6});
  check_values(cat({a.t(), a}, -1), {1, 3, 1, 2, 2, 4, 3, 4});  // non-contiguous input
  check_values(cat({a, zeros({0, 2}), b}, 0), {1, 2, 3, 4, 5, 6});
  CHECK(cat({a}, 0).storage() != a.storage());  // always a copy
  Tensor s = stack({a, a * 10.0}, 0);
  CHECK(s.shape() == Shape{2, 2, 2});
  check_values(s, {1, 2, 3, 4, 10, 20, 30, 40});
  Tensor s1 = stack({a, a * 10.0}, -1);
  CHECK(s1.shape() == Shape{2, 2, 2});
  check_values(s1, {1, 10, 2, 20, 3, 30, 4, 40});
  CHECK(stack({from_vector({1}), from_vector({2})}, 1).shape() == Shape{1, 2});
  CHECK(cat({arange(2), arange(3)}, 0).to_vector<int64_t>() == std::vector<int64_t>{0, 1, 0, 1, 2});
}

TEST_CASE("split and chunk: views with the right sizes and values") {
  Tensor x = arange(0, 10, 1, {.dtype = DType::f32}).reshape({2, 5});
  std::vector<Tensor> p = split(x, 2, 1);
  REQUIRE(p.size() == 3);
  CHECK(p[0].shape() == Shape{2, 2});
  CHECK(p[2].shape() == Shape{2, 1});
  check_values(p[1], {2, 3, 7, 8});
  check_values(p[2], {4, 9});
  CHECK(p[1].storage() == x.storage());  // a view
  std::vector<Tensor> q = split(x, std::vector<int64_t>{1, 0, 4}, -1);
  REQUIRE(q.size() == 3);
  CHECK(q[1].shape() == Shape{2, 0});
  check_values(q[2], {1, 2, 3, 4, 6, 7, 8, 9});
  std::vector<Tensor> r = chunk(x, 2, 1);  // ceil(5 / 2) = 3: sizes 3, 2
  REQUIRE(r.size() == 2);
  check_values(r[0], {0, 1, 2, 5, 6, 7});
  check_values(r[1], {3, 4, 8, 9});
  CHECK(chunk(x, 4, 1).size() == 3);  // ceil(5 / 4) = 2: sizes 2, 2, 1 (like PyTorch)
  CHECK(chunk(x, 2, 0).size() == 2);
  CHECK(chunk(zeros({0, 3}), 3, 0).size() == 3);
  CHECK(split(zeros({0, 3}), 2, 0).size() == 1);
  CHECK(split(x, 5, 1).size() == 1);
  CHECK(split(x, 7, 1)[0].shape() == Shape{2, 5});
}

TEST_CASE("shape ops: f64 gradcheck") {
  using V = std::vector<Tensor>;
  check_grad([](const V& v) { return cat({v[0], v[1], v[2]}, 1); },
             {rleaf({2, 3}, 1), rleaf({2, 1}, 2), rleaf({2, 2}, 3)});
  check_grad([](const V& v) { return cat({v[0].t(), v[1]}, 0); }, {rleaf({3, 2}, 4), rleaf({1, 3}, 5)});
  // One input without grad, and the same tensor twice.
  Tensor fixed = rleaf({2, 3}, 6).detach();
  check_grad([&](const V& v) { return cat({v[0], fixed, v[0]}, 0); }, {rleaf({2, 3}, 7)});
  check_grad([](const V& v) { return stack({v[0], v[1]}, 1); }, {rleaf({2, 3}, 8), rleaf({2, 3}, 9)});
  // Split pieces recombined with different weights.
  check_grad([](const V& v) {
    std::vector<Tensor> p = split(v[0], 2, 1);
    return cat({p[2] * 3.0, p[0] * 2.0, p[1]}, 1);
  }, {rleaf({2, 5}, 10)});
  check_grad([](const V& v) {
    std::vector<Tensor> p = chunk(v[0], 3, 0);
    return p[0] * p[1] + p[2] * p[2];
  }, {rleaf({6, 2}, 11)});
  check_grad([](const V& v) {
    std::vector<Tensor> p = split(v[0], std::vector<int64_t>{1, 3}, 0);
    return sum(p[1], 0, true) * p[0];
  }, {rleaf({4, 3}, 12)});
}

TEST_CASE("shape ops: bad input names the op and the shapes") {
  Tensor a = zeros({2, 3});
  CHECK_THROWS_WITH_AS(cat({a, zeros({2, 4})}, 0),
                       doctest::Contains("cat: tensor 1 of shape [2, 4] does not match tensor 0 of shape [2, 3]"), Error);
  CHECK_THROWS_WITH_AS(cat({a, zeros({2, 3, 1})}, 0), doctest::Contains("cat: tensor 1 of shape [2, 3, 1]"), Error);
  CHECK_THROWS_WITH_AS(cat({a, zeros({2, 3}, {.dtype = DType::f64})}, 0),
                       doctest::Contains("cat: tensor 1 has dtype f64, tensor 0 has f32"), Error);
  CHECK_THROWS_WITH_AS(cat({}, 0), doctest::Contains("cat: expected a non-empty list"), Error);
  CHECK_THROWS_WITH_AS(cat({a, a}, 2), doctest::Contains("cat: dim 2 out of range"), Error);
  CHECK_THROWS_WITH_AS(cat({zeros({}), zeros({})}, 0), doctest::Contains("cat: zero-dim"), Error);
  CHECK_THROWS_WITH_AS(stack({a, zeros({3, 2})}, 0),
                       doctest::Contains("stack: tensor 1 of shape [3, 2] differs from tensor 0 of shape [2, 3]"), Error);
  CHECK_THROWS_WITH_AS(split(a, 0, 1), doctest::Contains("split: chunk size must be positive, got 0 (shape [2, 3]"),
                       Error);
  CHECK_THROWS_WITH_AS(split(a, std::vector<int64_t>{1, 1}, 1),
                       doctest::Contains("split: sizes [1, 1] sum to 2, but dim 1 of shape [2, 3] has size 3"), Error);
  CHECK_THROWS_WITH_AS(chunk(a, 0, 0), doctest::Contains("chunk: number of chunks must be positive"), Error);
}
