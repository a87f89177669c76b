#include <doctest/doctest.h>

#include "colt5.h"

using namespace colt5;

TEST_CASE("tensor: factories and views share storage") {
  Tensor a = arange(0, 12, 1, {.dtype = DType::f32}).reshape({3, 4});
  CHECK(a.shape() == Shape{3, 4});
  CHECK(a.is_contiguous());
  Tensor t = a.t();
  CHECK(t.shape() == Shape{4, 3});
  CHECK(!t.is_contiguous());
  CHECK(t.storage() == a.storage());
  CHECK(t.to_vector<float>() == std::vector<float>{0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11});
  Tensor n = a.narrow(1, 1, 2);
  CHECK(n.to_vector<float>() == std::vector<float>{1, 2, 5, 6, 9, 10});
  Tensor s = a.slice(1, 0, 4, 2);
  CHECK(s.to_vector<float>() == std::vector<float>{0, 2, 4, 6, 8, 10});
  CHECK(a.select(0, 2).to_vector<float>() == std::vector<float>{8, 9, 10, 11});
  Tensor e = from_vector({1, 2, 3}).reshape({3, 1}).expand({3, 2});
  CHECK(e.to_vector<float>() == std::vector<float>{1, 1, 2, 2, 3, 3});
  CHECK(e.strides() == Shape{1, 0});
  CHECK(a.unsqueeze(0).shape() == Shape{1, 3, 4});
  CHECK(a.unsqueeze(-1).shape() == Shape{3, 4, 1});
  CHECK(a.unsqueeze(0).squeeze().shape() == Shape{3, 4});
  CHECK(a.permute({1, 0}).contiguous().to_vector<float>() == t.to_vector<float>());
  CHECK(a.flatten().shape() == Shape{12});
  CHECK_THROWS_WITH_AS(a.view({5, -1}), doctest::Contains("view"), Error);
  CHECK_THROWS_WITH_AS(a.t().view({12}), doctest::Contains("without a copy"), Error);
  CHECK(a.t().reshape({12}).to_vector<float>()[1] == 4.0f);
  // A tensor without elements is contiguous whatever its strides.
  Tensor z = empty({3, 0, 2});
  CHECK(z.strides() == Shape{2, 2, 1});
  CHECK(z.is_contiguous());
  CHECK(z.contiguous().storage() == z.storage());
}

TEST_CASE("tensor: elementwise broadcasting over strides, by hand") {
  Tensor a = from_vector({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor b = from_vector({10, 20, 30});
  CHECK((a + b).to_vector<float>() == std::vector<float>{11, 22, 33, 14, 25, 36});
  CHECK((a.t() * from_vector({1, -1}, {1, 2})).to_vector<float>() == std::vector<float>{1, -4, 2, -5, 3, -6});
  CHECK((a - 1.0).to_vector<float>() == std::vector<float>{0, 1, 2, 3, 4, 5});
  CHECK((2.0 / from_vector({1, 4})).to_vector<float>() == std::vector<float>{2, 0.5});
  CHECK_THROWS_WITH_AS(a + from_vector({1, 2}), doctest::Contains("[2, 3] and [2]"), Error);
  CHECK(sum(a).item<double>() == 21.0);
  CHECK(sum(a, 0).to_vector<float>() == std::vector<float>{5, 7, 9});
  CHECK(sum(a, 1, true).shape() == Shape{2, 1});
  CHECK(max(a, 1).to_vector<float>() == std::vector<float>{3, 6});
  CHECK(argmax(a, 0).to_vector<int64_t>() == std::vector<int64_t>{1, 1, 1});
}

TEST_CASE("autograd: chain rule through broadcasting and views") {
  Tensor x = from_vector({1, 2, 3}, {3}, {.dtype = DType::f64, .requires_grad = true});
  Tensor w = from_vector({1, 2, 3, 4, 5, 6}, {2, 3}, {.dtype = DType::f64, .requires_grad = true});
  Tensor y = sum(w * x);  // d/dx = column sums of w, d/dw = x broadcast
  y.backward();
  CHECK(x.grad().to_vector<double>() == std::vector<double>{5, 7, 9});
  CHECK(w.grad().to_vector<double>() == std::vector<double>{1, 2, 3, 1, 2, 3});
  CHECK(y.grad_fn()->backward == nullptr);  // graph freed
}
