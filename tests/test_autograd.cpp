#include "helpers.h"

using namespace colt5;
using namespace colt5::testing;

TEST_CASE("autograd: accumulation, explicit gradient, retain_graph") {
  Tensor x = from_vector({1, 2, 3}, {}, {.dtype = DType::f64, .requires_grad = true});
  Tensor y = x * x;  // dy/dx = 2x
  y.backward(from_vector({1, 10, 100}, {}, {.dtype = DType::f64}), true);
  check_values(x.grad(), {2, 40, 600});
  y.backward(ones({3}, {.dtype = DType::f64}));  // accumulates
  check_values(x.grad(), {4, 44, 606});
  CHECK_THROWS_WITH_AS(y.backward(ones({3}, {.dtype = DType::f64})), doctest::Contains("already freed"), Error);
  x.zero_grad();
  CHECK(!x.grad().defined());
  CHECK_THROWS_WITH_AS(y.backward(), doctest::Contains("scalar output"), Error);
}

TEST_CASE("autograd: a value used twice gets both contributions (diamond)") {
  Tensor x = from_vector({2}, {}, {.dtype = DType::f64, .requires_grad = true});
  Tensor a = x * 3.0, b = exp(x);
  Tensor y = sum(a * b);  // d/dx (3x e^x) = 3 e^x (1 + x)
  y.backward();
  check_values(x.grad(), {3 * std::exp(2.0) * 3});
}

TEST_CASE("autograd: no_grad and detach stop the tape") {
  Tensor x = ones({2}, {.requires_grad = true});
  {
    NoGradGuard ng;
    Tensor y = x * 2.0;
    CHECK(!y.requires_grad());
  }
  Tensor d = x.detach();
  CHECK(!d.requires_grad());
  CHECK(d.storage() == x.storage());
  Tensor y = x * 2.0 + d;
  sum(y).backward();
  check_values(x.grad(), {2, 2});
  CHECK_THROWS_WITH_AS(arange(3).requires_grad_(), doctest::Contains("floating"), Error);
}

TEST_CASE("autograd: in-place modification of a saved tensor is detected") {
  Tensor x = ones({3}, {.dtype = DType::f64, .requires_grad = true});
  Tensor w = full({3}, 2.0, {.dtype = DType::f64});
  Tensor y = sum(x * w);
  w.fill_(5.0);
  CHECK_THROWS_WITH_AS(y.backward(), doctest::Contains("modified in place"), Error);
}

TEST_CASE("autograd: views are differentiable") {
  using V = std::vector<Tensor>;
  Tensor x = rleaf({3, 4}, 21);
  check_grad([](const V& v) { return v[0].t().reshape({2, 6}) * 1.0; }, {x});
  check_grad([](const V& v) { return v[0].narrow(1, 1, 2) * 1.0; }, {x});
  check_grad([](const V& v) { return v[0].slice(0, 0, 3, 2) * 1.0; }, {x});
  check_grad([](const V& v) { return v[0].select(1, 3) * 1.0; }, {x});
  check_grad([](const V& v) { return v[0].unsqueeze(1).expand({3, 5, 4}) * 1.0; }, {x});
  check_grad([](const V& v) { return v[0].permute({1, 0}).contiguous().flatten(); }, {x});
  check_grad([](const V& v) { return v[0].to(DType::f32).to(DType::f64); }, {x}, {.eps = 1e-3, .atol = 1e-5, .rtol = 1e-4});
  check_grad([](const V& v) { return v[0].clone().squeeze(); }, {x});
}

TEST_CASE("autograd: the graph is freed after backward") {
  Tensor x = ones({4}, {.requires_grad = true});
  std::weak_ptr<Node> w;
  {
    Tensor y = sum(exp(x) * 2.0);
    w = y.grad_fn();
    y.backward();
    CHECK(y.grad_fn()->inputs.empty());
  }
  CHECK(w.expired());
}

TEST_CASE("gradcheck: passes a correct gradient and catches a wrong one") {
  Tensor x = from_vector({-2, 0.1, 2}, {}, {.dtype = DType::f64, .requires_grad = true});
  CHECK(gradcheck([](const std::vector<Tensor>& v) { return v[0] * 2.0; }, {x}).ok);
  // Value 2x, but the recorded gradient is that of x (detach trick).
  auto inconsistent = [](const std::vector<Tensor>& v) { return (v[0] * 2.0).detach() + v[0] - v[0].detach(); };
  GradcheckResult bad = gradcheck(inconsistent, {x});
  CHECK(!bad.ok);
  CHECK(bad.message.find("analytic") != std::string::npos);
}

TEST_CASE("tensor: printing and factories") {
  Tensor a = arange(0, 6, 1, {.dtype = DType::f32}).reshape({2, 3});
  std::string s = a.str();
  CHECK(s.find("[[0, 1, 2],") != std::string::npos);
  CHECK(s.find("shape=[2, 3], dtype=f32") != std::string::npos);
  CHECK(arange(5).str().find("[0, 1, 2, 3, 4]") != std::string::npos);
  Generator g1(3), g2(3);
  CHECK(randn({5}, g1).to_vector<float>() == randn({5}, g2).to_vector<float>());
  Tensor r = rand({10000}, g1, {.dtype = DType::f64});
  double m = mean(r).item<double>();
  CHECK(m == doctest::Approx(0.5).epsilon(0.02));
  Tensor n = randn({20000}, g1, {.dtype = DType::f64});
  CHECK(mean(n).item<double>() == doctest::Approx(0.0).epsilon(0.03));
  CHECK(mean(n * n).item<double>() == doctest::Approx(1.0).epsilon(0.03));
  Tensor ri = randint(2, 5, {1000}, g1);
  CHECK(min(ri.to(DType::f32)).item<float>() == 2);
  CHECK(max(ri.to(DType::f32)).item<float>() == 4);
  CHECK(full({2}, 7.5).to_vector<float>() == std::vector<float>{7.5, 7.5});
  CHECK(from_vector_i64({1, 2}).dtype() == DType::i64);
  CHECK_THROWS_WITH_AS(from_vector({1, 2, 3}, {2, 2}), doctest::Contains("3 values do not fill shape [2, 2]"), Error);
  // Half conversions round to nearest even.
  CHECK(float_to_bf16(1.0f) == 0x3f80);
  CHECK(bf16_to_float(float_to_bf16(3.14159f)) == doctest::Approx(3.140625));
  CHECK(f16_to_float(float_to_f16(0.1f)) == doctest::Approx(0.0999755859375));
  CHECK(f16_to_float(float_to_f16(1e-7f)) == doctest::Approx(1.1920928955078125e-07));
  CHECK(ones({3}).to(DType::bf16).to(DType::f32).to_vector<float>() == std::vector<float>{1, 1, 1});
}
