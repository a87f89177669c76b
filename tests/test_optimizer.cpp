#include "helpers.h"

using namespace colt5;
using namespace colt5::testing;

TEST_CASE("optimizer: AdamW first step by hand, decoupled decay only on matrices") {
  Tensor w = from_vector({1, -2, 3, 4}, {2, 2}, {.dtype = DType::f64, .requires_grad = true});
  Tensor b = from_vector({0.5, -0.5}, {}, {.dtype = DType::f64, .requires_grad = true});
  Tensor gamma = from_vector({1, 1}, {}, {.dtype = DType::f64, .requires_grad = true});
  AdamW opt({{"to_q.weight", w}, {"to_q.bias", b}, {"norm.gamma", gamma}}, {.lr = 0.1, .weight_decay = 0.5});
  sum(w * from_vector({2, -3, 0, 1}, {2, 2}, {.dtype = DType::f64})).backward();
  sum(b * 4.0).backward();
  opt.step();
  // Step 1: m_hat = g, v_hat = g^2 -> update = g / (|g| + eps) = sign(g) (0 where g = 0).
  // w <- w * (1 - lr * wd) - lr * sign(g)
  check_values(w, {1 * 0.95 - 0.1, -2 * 0.95 + 0.1, 3 * 0.95, 4 * 0.95 - 0.1}, 1e-7);
  check_values(b, {0.4, -0.6}, 1e-7);          // no decay on vectors
  check_values(gamma, {1, 1}, 1e-12);          // no gradient: untouched
  CHECK(decays("layers.0.to_q.weight", w));
  CHECK(!decays("norm.weight", w));
  CHECK(!decays("router.routing_token", w));
  CHECK(!decays("null_kv", w));
  CHECK(!decays("to_q.bias", b));
  CHECK(opt.steps() == 1);
}

TEST_CASE("optimizer: AdamW minimises a quadratic; state round trip continues identically") {
  Tensor x = from_vector({3, -4}, {}, {.dtype = DType::f64, .requires_grad = true});
  AdamW opt({{"x", x}}, {.lr = 0.1, .weight_decay = 0});
  for (int i = 0; i < 300; ++i) {
    opt.zero_grad();
    sum(x * x).backward();
    opt.step();
  }
  CHECK(std::abs(x.to_vector<double>()[0]) < 1e-2);
  CHECK(std::abs(x.to_vector<double>()[1]) < 1e-2);
  // Copy the state into a second optimiser on a copy of x: the next steps agree.
  Tensor y = x.detach().clone().requires_grad_();
  AdamW opt2({{"x", y}}, {.lr = 0.1, .weight_decay = 0});
  opt2.load_state(opt.state());
  for (int i = 0; i < 3; ++i) {
    opt.zero_grad();
    opt2.zero_grad();
    sum(pow(x - 1.0, 2.0)).backward();
    sum(pow(y - 1.0, 2.0)).backward();
    opt.step();
    opt2.step();
  }
  CHECK(x.to_vector<double>() == y.to_vector<double>());
}

TEST_CASE("optimizer: clip_grad_norm and the warmup-cosine schedule by hand") {
  Tensor a = zeros({2}, {.dtype = DType::f64, .requires_grad = true});
  Tensor b = zeros({1}, {.dtype = DType::f64, .requires_grad = true});
  (sum(a * from_vector({3, 0}, {}, {.dtype = DType::f64})) + sum(b * 4.0)).backward();  // grads (3, 0), (4): norm 5
  double n = clip_grad_norm({{"a", a}, {"b", b}}, 1.0);
  CHECK(n == doctest::Approx(5.0));
  check_values(a.grad(), {0.6, 0}, 1e-5);
  check_values(b.grad(), {0.8}, 1e-5);
  CHECK(clip_grad_norm({{"a", a}, {"b", b}}, 10.0) == doctest::Approx(1.0).epsilon(1e-5));  // under the limit: unchanged
  CHECK(warmup_cosine_lr(0, 10, 110, 1.0) == doctest::Approx(0.1));
  CHECK(warmup_cosine_lr(9, 10, 110, 1.0) == doctest::Approx(1.0));
  CHECK(warmup_cosine_lr(10, 10, 110, 1.0) == doctest::Approx(1.0));
  CHECK(warmup_cosine_lr(60, 10, 110, 1.0) == doctest::Approx(0.5));
  CHECK(warmup_cosine_lr(110, 10, 110, 1.0, 0.1) == doctest::Approx(0.1));
  CHECK_THROWS_WITH_AS(AdamW({{"x", a}}, {.lr = -1}), doctest::Contains("AdamW: learning rate"), Error);
}
