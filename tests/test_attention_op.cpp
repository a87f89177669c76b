// attention(): the fused op (flash kernels) against attention_reference (matmul +
// softmax + matmul, differentiated by the tape) on the CPU, forward and every
// gradient, plus finite-difference gradchecks and the error messages.
//
// Tolerances: f64 |fused - ref| <= 1e-10 (1 + |ref|); f32 rtol 1e-4, atol 2e-5.
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "helpers.h"

using namespace colt5;
using namespace colt5::testing;

namespace {

struct Case {
  int64_t B = 2, H = 3, Nq = 7, Nk = 9, d = 8;
  bool causal = false;
  int mask = 0;  // 0 none, 1 (B, Nk), 2 (B, H, Nk)
  bool null_kv = false;
  bool masked_batch = false;  // batch 0 fully masked
  std::string name() const {
    return "B" + std::to_string(B) + " H" + std::to_string(H) + " Nq" + std::to_string(Nq) + " Nk" +
           std::to_string(Nk) + " d" + std::to_string(d) + (causal ? " causal" : "") + " mask" + std::to_string(mask) +
           (null_kv ? " null" : "") + (masked_batch ? " masked-batch" : "");
  }
};

Tensor make_mask(const Case& c, uint64_t seed) {
  if (c.mask == 0) return {};
  Generator g(seed);
  const int64_t per_b = c.mask == 1 ? c.Nk : c.H * c.Nk;
  std::vector<bool> m(c.B * per_b);
  for (size_t i = 0; i < m.size(); ++i) m[i] = g.uniform() < 0.7;
  if (c.masked_batch)
    for (int64_t i = 0; i < per_b; ++i) m[i] = false;
  return from_vector_bool(m, c.mask == 1 ? Shape{c.B, c.Nk} : Shape{c.B, c.H, c.Nk});
}

struct Inputs {
  std::vector<Tensor> leaves;  // q, k, v[, null_k, null_v]
  Tensor mask, w;              // w: the output gradient
};

Inputs make_inputs(const Case& c, DType dt, uint64_t seed) {
  Generator g(seed);
  Options o{.dtype = dt, .requires_grad = true};
  Inputs in;
  in.leaves = {randn({c.B, c.H, c.Nq, c.d}, g, o) * 1.5, randn({c.B, c.H, c.Nk, c.d}, g, o),
               randn({c.B, c.H, c.Nk, c.d}, g, o)};
  if (c.null_kv) {
    in.leaves.push_back(randn({c.H, c.d}, g, o));
    in.leaves.push_back(randn({c.H, c.d}, g, o));
  }
  for (Tensor& t : in.leaves) t = t.detach().requires_grad_();
  in.mask = make_mask(c, seed + 1);
  in.w = randn({c.B, c.H, c.Nq, c.d}, g, {.dtype = dt});
  return in;
}

using AttnFn = std::function<Tensor(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const AttentionOptions&)>;

// Output and the gradients of every leaf for loss = sum(out * w).
std::vector<Tensor> run(const AttnFn& f, const Inputs& in, const Case& c) {
  std::vector<Tensor> xs;
  for (const Tensor& t : in.leaves) xs.push_back(t.detach().clone().requires_grad_());
  AttentionOptions o;
  o.causal = c.causal;
  if (c.null_kv) o.null_k = xs[3], o.null_v = xs[4];
  Tensor out = f(xs[0], xs[1], xs[2], in.mask, o);
  sum(out * in.w).backward();
  std::vector<Tensor> r{out.detach()};
  for (const Tensor& x : xs) r.push_back(x.grad());
  return r;
}

const char* kNames[] = {"out", "dq", "dk", "dv", "dnull_k", "dnull_v"};

void compare_cases(DType dt, double rtol, double atol) {
  std::vector<Case> cases;
  for (int mask : {0, 1, 2})
    for (bool causal : {false, true})
      for (bool null_kv : {false, true}) {
        Case c;
        c.mask = mask, c.causal = causal, c.null_kv = null_kv;
        cases.push_back(c);
      }
  Case big;  // several tiles on both axes, odd lengths
  big.B = 1, big.H = 2, big.Nq = 67, big.Nk = 131, big.d = 16, big.mask = 1, big.causal = true, big.null_kv = true;
  cases.push_back(big);
  Case more_q;  // Nq > Nk with causal: the first rows see no key
  more_q.Nq = 11, more_q.Nk = 5, more_q.causal = true;
  cases.push_back(more_q);
  Case masked;
  masked.mask = 2, masked.masked_batch = true;
  cases.push_back(masked);
  Case masked_null = masked;
  masked_null.null_kv = true;
  cases.push_back(masked_null);
  Case odd_d;
  odd_d.d = 5, odd_d.Nq = 1, odd_d.Nk = 3;
  cases.push_back(odd_d);
  uint64_t seed = 10;
  for (const Case& c : cases) {
    INFO(c.name() << " " << std::string(dtype_name(dt)));
    Inputs in = make_inputs(c, dt, seed++);
    std::vector<Tensor> a = run(attention, in, c), b = run(attention_reference, in, c);
    REQUIRE(a.size() == b.size());
    for (size_t i = 0; i < a.size(); ++i) {
      INFO(kNames[i]);
      REQUIRE(a[i].defined());
      REQUIRE(b[i].defined());
      CHECK(a[i].dtype() == dt);
      check_close(a[i], b[i], rtol, atol);
    }
  }
}


}  // namespace

TEST_CASE("attention_op: fused f64 matches the reference, forward and all gradients (1e-10)") {
  compare_cases(DType::f64, 1e-10, 1e-10);
}

TEST_CASE("attention_op: fused f32 matches the reference, forward and all gradients") {
  compare_cases(DType::f32, 1e-4, 2e-5);
}

TEST_CASE("attention_op: by hand, one query over two keys") {
  // scores = [0, log 3] (scale 1): softmax = [1/4, 3/4].
  Tensor q = from_vector({1, 0}, {1, 1, 1, 2}, {.dtype = DType::f64});
  Tensor k = from_vector({0, 5, std::log(3.0), 7}, {1, 1, 2, 2}, {.dtype = DType::f64});
  Tensor v = from_vector({4, 8, 0, 4}, {1, 1, 2, 2}, {.dtype = DType::f64});
  AttentionOptions o;
  o.scale = 1.0;
  check_values(attention(q, k, v, {}, o), {1.0, 5.0}, 1e-12);
  // Masking key 1 leaves key 0 alone.
  check_values(attention(q, k, v, from_vector_bool({true, false}, {1, 2}), o), {4.0, 8.0}, 1e-12);
  // A null key with score log 3 - ... : null_k = (log 3, 0) -> scores [log 3, 0, log 3], weights [3, 1, 3] / 7.
  o.null_k = from_vector({std::log(3.0), 0}, {1, 2}, {.dtype = DType::f64});
  o.null_v = from_vector({1, 1}, {1, 2}, {.dtype = DType::f64});
  check_values(attention(q, k, v, {}, o), {(3 * 1 + 4 + 0) / 7.0, (3 * 1 + 8 + 3 * 4) / 7.0}, 1e-12);
  check_values(attention_reference(q, k, v, {}, o), {(3 * 1 + 4 + 0) / 7.0, (3 * 1 + 8 + 3 * 4) / 7.0}, 1e-12);
}

TEST_CASE("attention_op: fully masked rows output zeros with zero, finite gradients") {
  for (bool fused : {true, false}) {
    INFO("fused " << fused);
    Generator g(3);
    Options o{.dtype = DType::f64, .requires_grad = true};
    Tensor q = randn({2, 2, 4, 8}, g, o), k = randn({2, 2, 6, 8}, g, o), v = randn({2, 2, 6, 8}, g, o);
    std::vector<bool> m(12, true);
    for (int j = 0; j < 6; ++j) m[j] = false;  // batch 0: every key masked
    Tensor mask = from_vector_bool(m, {2, 6});
    AttentionOptions ao;
    ao.fused = fused;
    Tensor out = attention(q, k, v, mask, ao);
    CHECK(all_finite(out));
    check_values(out.select(0, 0).reshape({-1}), std::vector<double>(2 * 4 * 8, 0.0), 1e-12);
    sum(out * out).backward();
    for (const Tensor* t : {&q, &k, &v}) {
      CHECK(all_finite(t->grad()));
      check_values(t->grad().select(0, 0).reshape({-1}), std::vector<double>(2 * t->size(2) * 8, 0.0), 1e-12);
    }
  }
}

TEST_CASE("attention_op: empty key set (Nk = 0): zeros, or the null value with null kv") {
  Generator g(4);
  Tensor q = randn({1, 2, 3, 4}, g, {.dtype = DType::f64});
  Tensor k = zeros({1, 2, 0, 4}, {.dtype = DType::f64}), v = zeros({1, 2, 0, 4}, {.dtype = DType::f64});
  check_values(attention(q, k, v).reshape({-1}), std::vector<double>(24, 0.0), 1e-12);
  AttentionOptions o;
  o.null_k = randn({2, 4}, g, {.dtype = DType::f64});
  o.null_v = randn({2, 4}, g, {.dtype = DType::f64});
  check_close(attention(q, k, v, {}, o), o.null_v.unsqueeze(1).unsqueeze(0).expand({1, 2, 3, 4}).contiguous(), 1e-12,
              1e-12);
}

TEST_CASE("attention_op: strided views are read in place; outputs and gradients keep the layout") {
  Generator g(5);
  const int64_t B = 2, N = 9, H = 3, d = 8;
  Options o{.dtype = DType::f64};
  // q from a (B, N, H, d) projection; k a narrowed (padded) buffer; v with a non-contiguous last dim (copied).
  Tensor qb = randn({B, N, H, d}, g, o).requires_grad_();
  Tensor kb = randn({B, N, H, d + 3}, g, o).requires_grad_();
  Tensor vb = randn({B, N, d, H}, g, o).requires_grad_();
  Tensor mask = from_vector_bool(std::vector<bool>(B * N, true), {B, N});
  auto build = [&](const Tensor& qb_, const Tensor& kb_, const Tensor& vb_, bool fused) {
    Tensor q = qb_.permute({0, 2, 1, 3});
    Tensor k = kb_.narrow(3, 1, d).permute({0, 2, 1, 3});
    Tensor v = vb_.permute({0, 3, 1, 2});
    AttentionOptions ao;
    ao.fused = fused;
    ao.causal = true;
    return attention(q, k, v, mask, ao);
  };
  Tensor out = build(qb, kb, vb, true);
  CHECK(out.permute({0, 2, 1, 3}).is_contiguous());  // (B, N, H, d) in memory, like q
  Tensor w = randn({B, H, N, d}, g, o);
  sum(out * w).backward();
  std::vector<Tensor> ga{qb.grad(), kb.grad(), vb.grad()};
  qb.zero_grad(), kb.zero_grad(), vb.zero_grad();
  Tensor ref = build(qb, kb, vb, false);
  sum(ref * w).backward();
  check_close(out, ref, 1e-10, 1e-10);
  check_close(ga[0], qb.grad(), 1e-10, 1e-10);
  check_close(ga[1], kb.grad(), 1e-10, 1e-10);
  check_close(ga[2], vb.grad(), 1e-10, 1e-10);
  // A contiguous q gives a contiguous output.
  Tensor q2 = randn({B, H, N, d}, g, o);
  CHECK(attention(q2, q2, q2).is_contiguous());
  // k / v expanded over heads (stride 0) are read in place too.
  Tensor k1 = randn({B, 1, N, d}, g, o).requires_grad_();
  Tensor outk = attention(q2, k1.expand({B, H, N, d}), k1.expand({B, H, N, d}));
  AttentionOptions rf;
  rf.fused = false;
  check_close(outk, attention(q2, k1.expand({B, H, N, d}), k1.expand({B, H, N, d}), {}, rf), 1e-10, 1e-10);
}

TEST_CASE("attention_op: scale option and broadcast masks") {
  Generator g(6);
  Options o{.dtype = DType::f64};
  Tensor q = randn({2, 2, 5, 4}, g, o), k = randn({2, 2, 6, 4}, g, o), v = randn({2, 2, 6, 4}, g, o);
  AttentionOptions a, r;
  a.scale = r.scale = 0.3;
  r.fused = false;
  check_close(attention(q, k, v, {}, a), attention(q, k, v, {}, r), 1e-10, 1e-10);
  // (1, Nk) and (B, 1, Nk) masks broadcast.
  Tensor m1 = from_vector_bool({true, false, true, true, false, true}, {1, 6});
  check_close(attention(q, k, v, m1, a), attention(q, k, v, m1, r), 1e-10, 1e-10);
  Tensor m2 = from_vector_bool({true, false, true, true, false, true, false, true, true, true, true, false}, {2, 1, 6});
  check_close(attention(q, k, v, m2, a), attention(q, k, v, m2, r), 1e-10, 1e-10);
  // A transposed (non-contiguous) mask is copied.
  Tensor mt = from_vector_bool({true, false, true, true, false, true, false, true, true, true, true, false}, {6, 2}).t();
  check_close(attention(q, k, v, mt, a), attention(q, k, v, mt, r), 1e-10, 1e-10);
}

TEST_CASE("attention_op: f64 gradcheck of the fused op (mask, causal, null kv)") {
  Tensor mask = from_vector_bool({true, true, false, true, true, false, true, true}, {2, 4});
  for (bool causal : {false, true})
    for (bool null_kv : {false, true}) {
      INFO("causal " << causal << " null " << null_kv);
      std::vector<Tensor> in{rleaf({2, 2, 3, 3}, 1), rleaf({2, 2, 4, 3}, 2), rleaf({2, 2, 4, 3}, 3)};
      if (null_kv) {
        in.push_back(rleaf({2, 3}, 4));
        in.push_back(rleaf({2, 3}, 5));
      }
      check_grad(
          [&](const std::vector<Tensor>& x) {
            AttentionOptions o;
            o.causal = causal;
            if (null_kv) o.null_k = x[3], o.null_v = x[4];
            return attention(x[0], x[1], x[2], mask, o);
          },
          in);
    }
}

TEST_CASE("attention_op: CPU bf16 inputs are computed in f32") {
  Generator g(7);
  Tensor q = randn({1, 2, 5, 8}, g), k = randn({1, 2, 6, 8}, g), v = randn({1, 2, 6, 8}, g);
  Tensor out = attention(q.to(DType::bf16), k.to(DType::bf16), v.to(DType::bf16));
  CHECK(out.dtype() == DType::bf16);
  check_close(out.to(DType::f32), attention(q.to(DType::bf16).to(DType::f32), k.to(DType::bf16).to(DType::f32),
                                            v.to(DType::bf16).to(DType::f32)),
              1e-2, 1e-2);
}

TEST_CASE("attention_op: bad shapes and dtypes throw naming attention and the shapes") {
  Tensor q = zeros({2, 3, 4, 8}), k = zeros({2, 3, 5, 8});
  CHECK_THROWS_WITH_AS(attention(q, k, zeros({2, 3, 6, 8})), doctest::Contains("attention: v must have k's shape"),
                       Error);
  CHECK_THROWS_WITH_AS(attention(q, zeros({2, 3, 5, 7}), zeros({2, 3, 5, 7})), doctest::Contains("[2, 3, 5, 7]"),
                       Error);
  CHECK_THROWS_WITH_AS(attention(zeros({3, 4, 8}), k, k), doctest::Contains("4-D"), Error);
  CHECK_THROWS_WITH_AS(attention(q, k.to(DType::f64), k), doctest::Contains("one dtype"), Error);
  CHECK_THROWS_WITH_AS(attention(q, k, k, zeros({2, 5})), doctest::Contains("key_mask must be bool"), Error);
  CHECK_THROWS_WITH_AS(attention(q, k, k, from_vector_bool(std::vector<bool>(8, true), {2, 4})),
                       doctest::Contains("Nk"), Error);
  AttentionOptions o;
  o.null_k = zeros({3, 8});
  CHECK_THROWS_WITH_AS(attention(q, k, k, {}, o), doctest::Contains("together"), Error);
  o.null_v = zeros({2, 8});
  CHECK_THROWS_WITH_AS(attention(q, k, k, {}, o), doctest::Contains("(H, d)"), Error);
  CHECK_THROWS_WITH_AS(attention_reference(q, k, zeros({1})), doctest::Contains("attention_reference"), Error);
}
