#include <cmath>

#include "helpers.h"

using namespace colt5;
using namespace colt5::testing;

TEST_CASE("elementwise: unary values by hand") {
  Tensor x = from_vector({-2, -0.5, 0, 0.5, 2}, {}, {.dtype = DType::f64});
  check_values(neg(x), {2, 0.5, 0, -0.5, -2});
  check_values(abs(x), {2, 0.5, 0, 0.5, 2});
  check_values(relu(x), {0, 0, 0, 0.5, 2});
  check_values(exp(x), {std::exp(-2.0), std::exp(-0.5), 1, std::exp(0.5), std::exp(2.0)});
  check_values(sigmoid(x), {1 / (1 + std::exp(2.0)), 1 / (1 + std::exp(0.5)), 0.5, 1 / (1 + std::exp(-0.5)),
                            1 / (1 + std::exp(-2.0))});
  check_values(tanh(x), {std::tanh(-2.0), std::tanh(-0.5), 0, std::tanh(0.5), std::tanh(2.0)});
  // exact gelu: 0.5 x (1 + erf(x / sqrt 2)); gelu(2) = 1.9544997361036416
  check_values(gelu(x).narrow(0, 4, 1), {1.9544997361036416});
  check_values(gelu(x).narrow(0, 0, 1), {-0.04550026389635842});
  check_values(clamp(x, -1, 1), {-1, -0.5, 0, 0.5, 1});
  check_values(pow(x, 2.0), {4, 0.25, 0, 0.25, 4});
  check_values(sign(x), {-1, -1, 0, 1, 1});
  Tensor p = from_vector({1, 4, 9}, {}, {.dtype = DType::f64});
  check_values(sqrt(p), {1, 2, 3});
  check_values(rsqrt(p), {1, 0.5, 1.0 / 3});
  check_values(log(p), {0, std::log(4.0), std::log(9.0)});
  check_values(pow(p, from_vector({0.5, 0.5, 2}, {}, {.dtype = DType::f64})), {1, 2, 81});
}

TEST_CASE("elementwise: binary, comparisons, where, masked_fill by hand") {
  Tensor a = from_vector({1, 5, 3});
  Tensor b = from_vector({4, 2, 3});
  check_values(maximum(a, b), {4, 5, 3});
  check_values(minimum(a, b), {1, 2, 3});
  check_values(a / b, {0.25, 2.5, 1});
  CHECK(gt(a, b).to_vector<int>() == std::vector<int>{0, 1, 0});
  CHECK(eq(a, b).to_vector<int>() == std::vector<int>{0, 0, 1});
  CHECK(le(a, 3.0).to_vector<int>() == std::vector<int>{1, 0, 1});
  CHECK(logical_not(gt(a, b)).to_vector<int>() == std::vector<int>{1, 0, 1});
  check_values(where(gt(a, b), a, b), {4, 5, 3});
  Tensor m = from_vector_bool({true, false, true});
  check_values(masked_fill(a, m, -1), {-1, 5, -1});
  // Mask broadcast over rows of a 2-D tensor.
  Tensor x = ones({2, 3});
  check_values(masked_fill(x, m, 0), {0, 1, 0, 0, 1, 0});
  // Type promotion: i64 + f32 -> f32; i64 + i64 stays i64.
  Tensor i = arange(3);
  CHECK((i + a).dtype() == DType::f32);
  CHECK((i + i).to_vector<int64_t>() == std::vector<int64_t>{0, 2, 4});
}

TEST_CASE("elementwise: f64 gradchecks of every differentiable op") {
  using V = std::vector<Tensor>;
  Tensor x = rleaf({3, 4}, 1);
  Tensor pos = rleaf({3, 4}, 2, 0.5, 2.0);
  Tensor y = rleaf({4}, 3);  // broadcast operand
  Tensor ypos = rleaf({4}, 4, 0.5, 2.0);
  // Unary ops, each checked also on a transposed (non-contiguous) view.
  std::vector<std::pair<const char*, std::function<Tensor(const Tensor&)>>> unary = {
      {"neg", [](const Tensor& t) { return neg(t); }},
      {"exp", [](const Tensor& t) { return exp(t); }},
      {"abs", [](const Tensor& t) { return abs(t); }},
      {"relu", [](const Tensor& t) { return relu(t); }},
      {"gelu", [](const Tensor& t) { return gelu(t); }},
      {"sigmoid", [](const Tensor& t) { return sigmoid(t); }},
      {"tanh", [](const Tensor& t) { return tanh(t); }},
      {"sin", [](const Tensor& t) { return sin(t); }},
      {"cos", [](const Tensor& t) { return cos(t); }},
      {"erf", [](const Tensor& t) { return erf(t); }},
      {"clamp", [](const Tensor& t) { return clamp(t, -0.3, 0.4); }},
      {"add_scalar", [](const Tensor& t) { return t + 2.5; }},
      {"mul_scalar", [](const Tensor& t) { return t * -3.0; }},
      {"rsub", [](const Tensor& t) { return 1.0 - t; }},
  };
  for (auto& [name, f] : unary) {
    INFO(name);
    check_grad([&](const V& v) { return f(v[0]); }, {x});
    check_grad([&](const V& v) { return f(v[0].t()); }, {x});
  }
  std::vector<std::pair<const char*, std::function<Tensor(const Tensor&)>>> positive = {
      {"log", [](const Tensor& t) { return log(t); }},
      {"sqrt", [](const Tensor& t) { return sqrt(t); }},
      {"rsqrt", [](const Tensor& t) { return rsqrt(t); }},
      {"pow_scalar", [](const Tensor& t) { return pow(t, 1.7); }},
      {"rdiv", [](const Tensor& t) { return 2.0 / t; }},
  };
  for (auto& [name, f] : positive) {
    INFO(name);
    check_grad([&](const V& v) { return f(v[0]); }, {pos});
  }
  // Binary ops with broadcasting (gradients summed back by the tape).
  check_grad([](const V& v) { return v[0] + v[1]; }, {x, y});
  check_grad([](const V& v) { return v[0] - v[1]; }, {x, y});
  check_grad([](const V& v) { return v[0] * v[1]; }, {x, y});
  check_grad([](const V& v) { return v[0] / v[1]; }, {x, ypos});
  check_grad([](const V& v) { return pow(v[0], v[1]); }, {pos, y});
  check_grad([](const V& v) { return maximum(v[0], v[1]); }, {x, y});
  check_grad([](const V& v) { return minimum(v[0], v[1]); }, {x, y});
  check_grad([](const V& v) { return where(gt(v[0], 0.0), v[0] * 2.0, v[1]); }, {x, y});
  check_grad([](const V& v) { return masked_fill(v[0], lt(v[0], 0.1), -5.0); }, {x});
}

TEST_CASE("elementwise: maximum splits ties, relu'(0) = 0") {
  Tensor a = from_vector({1, 2}, {}, {.dtype = DType::f64, .requires_grad = true});
  Tensor b = from_vector({1, 3}, {}, {.dtype = DType::f64, .requires_grad = true});
  sum(maximum(a, b)).backward();
  check_values(a.grad(), {0.5, 0});
  check_values(b.grad(), {0.5, 1});
  Tensor z = zeros({2}, {.dtype = DType::f64, .requires_grad = true});
  sum(relu(z)).backward();
  check_values(z.grad(), {0, 0});
}

TEST_CASE("elementwise: bad input throws naming the op and shapes") {
  Tensor a = ones({2, 3}), b = ones({4});
  CHECK_THROWS_WITH_AS(mul(a, b), doctest::Contains("mul: shapes [2, 3] and [4]"), Error);
  CHECK_THROWS_WITH_AS(exp(arange(3)), doctest::Contains("exp: expected an f32 or f64 tensor, got i64"), Error);
  CHECK_THROWS_WITH_AS(where(a, a, a), doctest::Contains("where: condition must be bool"), Error);
  CHECK_THROWS_WITH_AS(clamp(a, 1, 0), doctest::Contains("clamp"), Error);
  CHECK_THROWS_WITH_AS(logical_not(a), doctest::Contains("logical_not"), Error);
}

TEST_CASE("elementwise: large tensors run on every thread and match a serial loop") {
  Generator g(7);
  Tensor x = randn({1 << 18}, g), y = randn({1 << 18}, g);
  Tensor z = x * y + 1.0;
  std::vector<float> xv = x.to_vector<float>(), yv = y.to_vector<float>(), zv = z.to_vector<float>();
  bool same = true;
  for (size_t i = 0; i < xv.size(); ++i) same &= zv[i] == xv[i] * yv[i] + 1.0f;
  CHECK(same);
  int before = get_num_threads();
  set_num_threads(1);
  Tensor z1 = x * y + 1.0;
  set_num_threads(before);
  CHECK(z1.to_vector<float>() == zv);
}
