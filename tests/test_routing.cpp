// Routing ops (gather_tokens[_scaled], gather_mask, route_back[_scaled]) on the
// CPU: values by hand, f64 gradchecks, agreement with compositions of the
// index ops (gather / scatter) and elementwise ops, repeated indices, errors.
#include <algorithm>
#include <numeric>
#include <vector>

#include "helpers.h"

using namespace colt5;
using namespace colt5::testing;

namespace {

Tensor f64(const std::vector<double>& v, const Shape& s) { return from_vector(v, s, {.dtype = DType::f64}); }
Tensor i64(const std::vector<int64_t>& v, const Shape& s) { return from_vector_i64(v, s); }

// Distinct random indices in [0, N) for every (b[, r]) row: shape `shape` (last dim n <= N).
Tensor distinct_indices(const Shape& shape, int64_t N, uint64_t seed) {
  Generator g(seed);
  const int64_t n = shape.back(), rows = shape_numel(shape) / std::max<int64_t>(n, 1);
  std::vector<int64_t> out;
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<int64_t> perm(N);
    std::iota(perm.begin(), perm.end(), 0);
    for (int64_t i = N - 1; i > 0; --i) std::swap(perm[i], perm[g.next_u64() % (i + 1)]);
    out.insert(out.end(), perm.begin(), perm.begin() + n);
  }
  return from_vector_i64(out, shape);
}

// The compositions the fused ops must agree with.
Tensor gather_ref(const Tensor& x, const Tensor& idx) {
  const int64_t B = x.size(0), N = x.size(1), D = x.size(2);
  if (idx.dim() == 2) return gather(x, 1, idx.unsqueeze(-1).expand({B, idx.size(1), D}));
  const int64_t R = idx.size(1), n = idx.size(2);
  return gather(x.unsqueeze(1).expand({B, R, N, D}), 2, idx.unsqueeze(-1).expand({B, R, n, D}));
}
Tensor route_back_ref(const Tensor& dst, const Tensor& routed, const Tensor& idx) {
  return scatter(dst, 1, idx.unsqueeze(-1).expand({idx.size(0), idx.size(1), dst.size(2)}), routed);
}

std::vector<Tensor> fwd_bwd(const std::function<Tensor(const std::vector<Tensor>&)>& fn,
                            const std::vector<Tensor>& inputs, uint64_t seed) {
  std::vector<Tensor> xs;
  for (const Tensor& t : inputs) xs.push_back(t.detach().clone().requires_grad_(t.requires_grad()));
  Tensor y = fn(xs);
  Generator g(seed);
  y.backward(randn(y.shape(), g, {.dtype = y.dtype()}));
  std::vector<Tensor> r{y.detach()};
  for (const Tensor& x : xs)
    if (x.requires_grad()) r.push_back(x.grad());
  return r;
}

void check_all_close(const std::vector<Tensor>& a, const std::vector<Tensor>& b, double rtol, double atol) {
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    INFO("result " << i);
    check_close(a[i], b[i], rtol, atol);
  }
}

}  // namespace

TEST_CASE("routing: gather_tokens by hand, with and without routes") {
  Tensor x = f64({0, 1, 10, 11, 20, 21, 30, 31}, {1, 4, 2});
  check_values(gather_tokens(x, i64({2, 0}, {1, 2})), {20, 21, 0, 1});
  Tensor r = gather_tokens(x, i64({3, 1, 1, 2}, {1, 2, 2}));
  CHECK(r.shape() == Shape{1, 2, 2, 2});
  check_values(r, {30, 31, 10, 11, 10, 11, 20, 21});
  check_values(gather_tokens_scaled(x, i64({2, 0}, {1, 2}), f64({0.5, 2}, {1, 2})), {10, 10.5, 0, 2});
  // Gradients by hand: token 1 is picked by both routes: its gradient is the sum.
  Tensor xl = x.detach().clone().requires_grad_();
  Tensor s = f64({1, 2, 3, 4}, {1, 2, 2}).requires_grad_();
  Tensor y = gather_tokens_scaled(xl, i64({3, 1, 1, 2}, {1, 2, 2}), s);
  y.backward(ones(y.shape(), {.dtype = DType::f64}));
  check_values(xl.grad(), {0, 0, 2 + 3, 2 + 3, 4, 4, 1, 1});
  check_values(s.grad(), {30 + 31, 10 + 11, 10 + 11, 20 + 21});
}

TEST_CASE("routing: gather_mask by hand") {
  Tensor m = from_vector_bool({true, false, true, false, false, true}, {2, 3});
  Tensor g = gather_mask(m, i64({1, 2, 0, 2}, {2, 2}));
  CHECK(g.dtype() == DType::b8);
  check_values(g, {0, 1, 0, 1});
  Tensor g3 = gather_mask(m, i64({0, 1, 2, 0, 1, 2}, {2, 3, 1}));
  CHECK(g3.shape() == Shape{2, 3, 1});
  check_values(g3, {1, 0, 1, 0, 0, 1});
}

TEST_CASE("routing: route_back by hand, values and gradients") {
  Tensor dst = f64({0, 0, 1, 1, 2, 2, 3, 3}, {1, 4, 2}).requires_grad_();
  Tensor routed = f64({7, 8, 9, 10}, {1, 2, 2}).requires_grad_();
  Tensor idx = i64({3, 1}, {1, 2});
  Tensor out = route_back(dst, routed, idx);
  check_values(out, {0, 0, 9, 10, 2, 2, 7, 8});
  out.backward(f64({1, 2, 3, 4, 5, 6, 7, 8}, {1, 4, 2}));
  check_values(dst.grad(), {1, 2, 0, 0, 5, 6, 0, 0});
  check_values(routed.grad(), {7, 8, 3, 4});
  // Scaled: rows times their score; the score's gradient is <g row, routed row>.
  Tensor s = f64({2, -1}, {1, 2}).requires_grad_();
  Tensor rl = routed.detach().clone().requires_grad_();
  Tensor o2 = route_back_scaled(dst.detach(), rl, idx, s);
  check_values(o2, {0, 0, -9, -10, 2, 2, 14, 16});
  o2.backward(f64({1, 2, 3, 4, 5, 6, 7, 8}, {1, 4, 2}));
  check_values(rl.grad(), {14, 16, -3, -4});
  check_values(s.grad(), {7 * 7 + 8 * 8, 9 * 3 + 10 * 4});
}

TEST_CASE("routing: repeated indices are well defined (sums for gathers, last wins for route_back)") {
  Tensor x = f64({0, 1, 10, 11, 20, 21}, {1, 3, 2}).requires_grad_();
  Tensor y = gather_tokens(x, i64({1, 1, 2, 1}, {1, 4}));
  check_values(y, {10, 11, 10, 11, 20, 21, 10, 11});
  y.backward(f64({1, 1, 2, 2, 5, 5, 4, 4}, {1, 4, 2}));
  check_values(x.grad(), {0, 0, 7, 7, 5, 5});
  Tensor dst = zeros({1, 3, 1}, {.dtype = DType::f64, .requires_grad = true});
  Tensor routed = f64({1, 2, 3}, {1, 3, 1}).requires_grad_();
  Tensor out = route_back(dst, routed, i64({2, 0, 2}, {1, 3}));
  check_values(out, {2, 0, 3});
  out.backward(f64({10, 20, 30}, {1, 3, 1}));
  check_values(routed.grad(), {0, 10, 30});  // row 0 was overwritten by row 2
  check_values(dst.grad(), {0, 20, 0});
}

TEST_CASE("routing: f64 gradchecks") {
  Tensor idx2 = i64({4, 0, 2, 1, 1, 3}, {2, 3});
  Tensor idx3 = i64({4, 0, 2, 0, 1, 2, 1, 3, 0, 3, 4, 1}, {2, 2, 3});  // tokens shared across routes
  for (const Tensor& idx : {idx2, idx3}) {
    INFO("idx " << shape_str(idx.shape()));
    check_grad([&](const std::vector<Tensor>& v) { return gather_tokens(v[0], idx); }, {rleaf({2, 5, 3}, 1)});
    Shape ss = idx.shape();
    check_grad([&](const std::vector<Tensor>& v) { return gather_tokens_scaled(v[0], idx, v[1]); },
               {rleaf({2, 5, 3}, 2), rleaf(ss, 3)});
  }
  check_grad([&](const std::vector<Tensor>& v) { return route_back(v[0], v[1], idx2); },
             {rleaf({2, 5, 3}, 4), rleaf({2, 3, 3}, 5)});
  check_grad([&](const std::vector<Tensor>& v) { return route_back_scaled(v[0], v[1], idx2, v[2]); },
             {rleaf({2, 5, 3}, 6), rleaf({2, 3, 3}, 7), rleaf({2, 3}, 8)});
}

TEST_CASE("routing: agreement with index ops and elementwise compositions, f32 and f64") {
  const int64_t B = 3, N = 37, D = 20, R = 2, n = 11;
  for (DType dt : {DType::f64, DType::f32}) {
    INFO(std::string(dtype_name(dt)));
    const double tol = dt == DType::f64 ? 1e-12 : 1e-5;
    Generator g(11);
    Tensor x = randn({B, N, D}, g, {.dtype = dt, .requires_grad = true});
    Tensor i2 = distinct_indices({B, n}, N, 1), i3 = distinct_indices({B, R, n}, N, 2);
    Tensor s2 = rand({B, n}, g, {.dtype = dt, .requires_grad = true});
    Tensor s3 = rand({B, R, n}, g, {.dtype = dt, .requires_grad = true});
    for (const Tensor* idx : {&i2, &i3}) {
      check_all_close(fwd_bwd([&](auto v) { return gather_tokens(v[0], *idx); }, {x}, 3),
                      fwd_bwd([&](auto v) { return gather_ref(v[0], *idx); }, {x}, 3), tol, tol);
      const Tensor& s = idx->dim() == 2 ? s2 : s3;
      check_all_close(fwd_bwd([&](auto v) { return gather_tokens_scaled(v[0], *idx, v[1]); }, {x, s}, 4),
                      fwd_bwd([&](auto v) { return gather_ref(v[0], *idx) * v[1].unsqueeze(-1); }, {x, s}, 4), tol,
                      tol);
    }
    Tensor dst = randn({B, N, D}, g, {.dtype = dt, .requires_grad = true});
    Tensor routed = randn({B, n, D}, g, {.dtype = dt, .requires_grad = true});
    check_all_close(fwd_bwd([&](auto v) { return route_back(v[0], v[1], i2); }, {dst, routed}, 5),
                    fwd_bwd([&](auto v) { return route_back_ref(v[0], v[1], i2); }, {dst, routed}, 5), tol, tol);
    check_all_close(
        fwd_bwd([&](auto v) { return route_back_scaled(v[0], v[1], i2, v[2]); }, {dst, routed, s2}, 6),
        fwd_bwd([&](auto v) { return route_back_ref(v[0], v[1] * v[2].unsqueeze(-1), i2); }, {dst, routed, s2}, 6),
        tol, tol);
  }
}

TEST_CASE("routing: strided inputs (views) and half types") {
  Generator g(12);
  const int64_t B = 2, N = 9, D = 6;
  Tensor base = randn({N, B, D + 2}, g, {.dtype = DType::f64});
  Tensor x = base.narrow(2, 1, D).transpose(0, 1);  // (B, N, D), rows strided, last dim contiguous
  Tensor idx = distinct_indices({B, 4}, N, 3);
  check_close(gather_tokens(x, idx), gather_ref(x.contiguous(), idx), 0, 0);
  Tensor xt = randn({B, D, N}, g, {.dtype = DType::f64}).transpose(1, 2);  // last dim strided: copied
  check_close(gather_tokens(xt, idx), gather_ref(xt.contiguous(), idx), 0, 0);
  Tensor routed = randn({B, 4, D}, g, {.dtype = DType::f64});
  check_close(route_back(x, routed, idx), route_back_ref(x.contiguous(), routed, idx), 0, 0);
  // bf16 / f16 move exactly; scaled products round once.
  for (DType h : {DType::bf16, DType::f16}) {
    Tensor xh = x.to(h);
    Tensor y = gather_tokens(xh, idx);
    CHECK(y.dtype() == h);
    check_close(y.to(DType::f64), gather_ref(xh.to(DType::f64), idx), 0, 0);
    Tensor s = rand({B, 4}, g, {.dtype = DType::f32});
    check_close(gather_tokens_scaled(xh, idx, s).to(DType::f64),
                gather_ref(xh.to(DType::f64), idx) * s.to(h).to(DType::f64).unsqueeze(-1), 1e-2, 1e-3);
    check_close(route_back(xh, routed.to(h), idx).to(DType::f64),
                route_back_ref(xh.to(DType::f64), routed.to(h).to(DType::f64), idx), 0, 0);
  }
}

TEST_CASE("routing: empty selections") {
  Tensor x = ones({2, 5, 3}, {.dtype = DType::f64, .requires_grad = true});
  Tensor idx = zeros({2, 0}, {.dtype = DType::i64});
  Tensor y = gather_tokens(x, idx);
  CHECK(y.shape() == Shape{2, 0, 3});
  sum(y).backward();
  check_values(x.grad(), std::vector<double>(30, 0.0), 1e-12);
  Tensor out = route_back(x.detach(), zeros({2, 0, 3}, {.dtype = DType::f64}), idx);
  check_close(out, x.detach(), 0, 0);
}

TEST_CASE("routing: errors name the op, the value and N") {
  Tensor x = zeros({2, 5, 3});
  CHECK_THROWS_WITH_AS(gather_tokens(x, i64({0, 5, 1, 2}, {2, 2})),
                       doctest::Contains("gather_tokens: index 5 is out of range for N=5"), Error);
  CHECK_THROWS_WITH_AS(gather_tokens(x, i64({0, -1, 1, 2}, {2, 2})), doctest::Contains("index -1"), Error);
  CHECK_THROWS_WITH_AS(gather_tokens_scaled(x, i64({0, 7, 1, 2}, {2, 2}), zeros({2, 2})),
                       doctest::Contains("gather_tokens_scaled: index 7"), Error);
  CHECK_THROWS_WITH_AS(gather_mask(from_vector_bool(std::vector<bool>(10, true), {2, 5}), i64({9, 0}, {2, 1})),
                       doctest::Contains("gather_mask: index 9 is out of range for N=5"), Error);
  CHECK_THROWS_WITH_AS(route_back(x, zeros({2, 2, 3}), i64({0, 6, 1, 2}, {2, 2})),
                       doctest::Contains("route_back: index 6 is out of range for N=5"), Error);
  CHECK_THROWS_WITH_AS(route_back_scaled(x, zeros({2, 2, 3}), i64({0, 8, 1, 2}, {2, 2}), zeros({2, 2})),
                       doctest::Contains("route_back_scaled: index 8"), Error);
  CHECK_THROWS_WITH_AS(gather_tokens(x, zeros({2, 2})), doctest::Contains("must be i64"), Error);
  CHECK_THROWS_WITH_AS(gather_tokens(x, i64({0, 1}, {1, 2})), doctest::Contains("with B=2"), Error);
  CHECK_THROWS_WITH_AS(gather_tokens(zeros({5, 3}), i64({0}, {1, 1})), doctest::Contains("3-D"), Error);
  CHECK_THROWS_WITH_AS(gather_tokens_scaled(x, i64({0, 1, 1, 2}, {2, 2}), zeros({2, 3})),
                       doctest::Contains("scores shape"), Error);
  CHECK_THROWS_WITH_AS(route_back(x, zeros({2, 3, 3}), i64({0, 1, 1, 2}, {2, 2})),
                       doctest::Contains("routed must be (B, n, D)"), Error);
  CHECK_THROWS_WITH_AS(route_back(x, zeros({2, 2, 3}), i64({0, 1, 1, 2}, {2, 1, 2})), doctest::Contains("(B, n)"),
                       Error);
  CHECK_THROWS_WITH_AS(route_back(x, zeros({2, 2, 3}, {.dtype = DType::f64}), i64({0, 1, 1, 2}, {2, 2})),
                       doctest::Contains("dtype"), Error);
}
