// local_attention (SPEC §3.2): the reference (primitive ops) against a dense
// attention with a band mask built by hand; the fused CPU kernels against the
// reference, forward and the gradients to q, k and v, in f64 (1e-10) and f32;
// a case worked by hand; f64 gradchecks of the fused op; masks with fully
// masked neighbourhoods; lengths that are not a multiple of the window.
#include <cmath>
#include <limits>
#include <vector>

#include "helpers.h"
#include "ops/local_attention.h"

using namespace colt5;
using namespace colt5::testing;

namespace {

struct Case {
  int64_t B = 2, H = 2, N = 13, d = 4;
  LocalAttentionOptions o;
  int mask_mode = 0;  // 0 none; 1 random; 2 random with a fully masked prefix (and batch 1 all masked)
  bool strided = false;  // q, k, v as (B, N, H, d) buffers viewed as (B, H, N, d)
};

std::string describe(const Case& c) {
  std::string s = "B=" + std::to_string(c.B) + " H=" + std::to_string(c.H) + " N=" + std::to_string(c.N) +
                  " d=" + std::to_string(c.d) + " w=" + std::to_string(c.o.window) +
                  " look=" + std::to_string(c.o.look_backward) + "/" + std::to_string(c.o.look_forward) +
                  (c.o.causal ? " causal" : "") + (c.o.exact ? " exact" : "") + " mask=" + std::to_string(c.mask_mode) +
                  (c.strided ? " strided" : "");
  return s;
}

Tensor make_input(const Case& c, Generator& g, DType dt) {
  if (!c.strided) return randn({c.B, c.H, c.N, c.d}, g, {.dtype = dt});
  return randn({c.B, c.N, c.H, c.d}, g, {.dtype = dt}).permute({0, 2, 1, 3});
}

Tensor make_mask(const Case& c, Generator& g) {
  if (c.mask_mode == 0) return {};
  Tensor m = gt(rand({c.B, c.N}, g), 0.3);
  if (c.mask_mode == 2) {
    const int64_t pre = std::min(c.N, 2 * c.o.window);  // whole neighbourhoods masked
    m.select(0, 0).narrow(0, 0, pre).fill_(0.0);
    if (c.B > 1) m.select(0, 1).fill_(0.0);
  }
  return m;
}

// The visibility of the spec, written out directly: (N, N) bool, row t, column j.
std::vector<bool> band_by_hand(int64_t N, const LocalAttentionOptions& o) {
  std::vector<bool> vis(N * N, false);
  const int64_t w = o.window;
  for (int64_t t = 0; t < N; ++t) {
    const int64_t i = t / w;
    for (int64_t j = 0; j < N; ++j) {
      const int64_t wj = j / w;  // key window
      bool v = wj >= i - o.look_backward && wj <= i + o.look_forward;
      if (o.causal) v = v && j <= t;
      if (o.exact) v = v && t - j <= w * o.look_backward && j - t <= w * o.look_forward;
      vis[t * N + j] = v;
    }
  }
  return vis;
}

// Dense attention with an explicit (N, N) band and the key mask: matmul,
// -inf where hidden, softmax, matmul (autograd through the primitive ops).
Tensor dense_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask,
                       const std::vector<bool>& band, double scale) {
  const int64_t B = q.size(0), N = q.size(2);
  Tensor vis = from_vector_bool(band, {1, 1, N, N});
  if (mask.defined()) vis = logical_and(vis, mask.reshape({B, 1, 1, N}));
  Tensor s = matmul(q, k.transpose(-1, -2)) * scale;
  s = masked_fill(s, logical_not(vis), -std::numeric_limits<double>::infinity());
  return matmul(softmax(s, -1), v);
}

struct Result {
  Tensor out, dq, dk, dv;
};

template <class F>
Result run(const Tensor& q0, const Tensor& k0, const Tensor& v0, const Tensor& G, F&& fn) {
  Tensor q = q0.detach().requires_grad_(), k = k0.detach().requires_grad_(), v = v0.detach().requires_grad_();
  Tensor out = fn(q, k, v);
  sum(out * G).backward();
  return {out.detach(), q.grad(), k.grad(), v.grad()};
}


void check_results(const Result& a, const Result& b, double tol) {
  // Gradients relative to their scale (they grow with the neighbourhood size).
  auto scale = [](const Tensor& t) { return std::max(1.0, max(abs(t)).item<double>()); };
  check_close(a.out, b.out, tol, tol);
  check_close(a.dq, b.dq, tol, tol * scale(b.dq));
  check_close(a.dk, b.dk, tol, tol * scale(b.dk));
  check_close(a.dv, b.dv, tol, tol * scale(b.dv));
  CHECK(all_finite(a.out));
  CHECK(all_finite(a.dq));
  CHECK(all_finite(a.dk));
  CHECK(all_finite(a.dv));
}

// Fused vs reference (and the reference vs the dense band when N is small).
void compare(const Case& c, DType dt, double tol) {
  INFO(describe(c) << " dtype " << dtype_name(dt));
  Generator g(1000 * c.N + 17 * c.o.window + 3 * c.o.look_backward + c.o.look_forward + c.mask_mode);
  Tensor q = make_input(c, g, dt), k = make_input(c, g, dt), v = make_input(c, g, dt);
  Tensor mask = make_mask(c, g);
  Tensor G = randn({c.B, c.H, c.N, c.d}, g, {.dtype = dt});
  LocalAttentionOptions fo = c.o, ro = c.o;
  fo.fused = true;
  ro.fused = false;
  Result f = run(q, k, v, G, [&](auto& a, auto& b, auto& cc) { return local_attention(a, b, cc, mask, fo); });
  Result r = run(q, k, v, G, [&](auto& a, auto& b, auto& cc) { return local_attention_reference(a, b, cc, mask, ro); });
  check_results(f, r, tol);
  if (c.N <= 200) {
    const double scale = c.o.scale != 0 ? c.o.scale : 1.0 / std::sqrt(double(c.d));
    const std::vector<bool> band = band_by_hand(c.N, c.o);
    Result dn = run(q, k, v, G, [&](auto& a, auto& b, auto& cc) { return dense_attention(a, b, cc, mask, band, scale); });
    // The dense softmax of a fully hidden row is 0 too, so outputs match everywhere.
    check_results(r, dn, tol);
  }
}

std::vector<Case> cases() {
  std::vector<Case> cs;
  auto add = [&](int64_t N, int64_t w, int lb, int lf, bool causal, bool exact, int mask_mode = 0, int64_t d = 4) {
    Case c;
    c.N = N;
    c.d = d;
    c.o.window = w;
    c.o.look_backward = lb;
    c.o.look_forward = lf;
    c.o.causal = causal;
    c.o.exact = exact;
    c.mask_mode = mask_mode;
    cs.push_back(c);
  };
  // The two forms CoLT5 uses.
  add(13, 4, 1, 1, false, true);
  add(16, 4, 1, 1, false, true);
  add(13, 4, 1, 0, true, false);
  add(16, 4, 1, 0, true, false);
  // General look values, causal / exact combinations, looks past the ends.
  add(13, 3, 2, 1, false, false);
  add(13, 3, 0, 2, false, true);
  add(14, 3, 2, 0, true, true);
  add(11, 2, 0, 0, false, false);
  add(11, 2, 0, 0, true, false);
  add(5, 2, 3, 3, false, true);
  add(9, 3, 1, 2, true, false);  // causal ignores look_forward
  // Masks, incl. fully masked neighbourhoods.
  add(13, 4, 1, 1, false, true, 1);
  add(13, 4, 1, 0, true, false, 1);
  add(13, 4, 1, 1, false, true, 2);
  add(13, 4, 1, 0, true, false, 2);
  add(12, 3, 2, 1, false, false, 2);
  // N not a multiple of w, N < w (w = 64).
  for (int64_t N : {1, 7, 130}) {
    add(N, 64, 1, 1, false, true, 0, 8);
    add(N, 64, 1, 0, true, false, 0, 8);
  }
  add(130, 64, 1, 1, false, true, 2, 8);
  add(7, 64, 1, 0, true, false, 1, 8);
  // w = 1 (one key per window).
  add(6, 1, 1, 1, false, true);
  add(6, 1, 2, 0, true, false);
  return cs;
}

}  // namespace

TEST_CASE("local_attention: the reference matches a dense attention with a literal band") {
  // N = 5, w = 2, by hand from SPEC §3.2.
  const std::vector<bool> causal_lb1 = {1, 0, 0, 0, 0,  //
                                        1, 1, 0, 0, 0,  //
                                        1, 1, 1, 0, 0,  //
                                        1, 1, 1, 1, 0,  //
                                        0, 0, 1, 1, 1};
  const std::vector<bool> exact_11 = {1, 1, 1, 0, 0,  //
                                      1, 1, 1, 1, 0,  //
                                      1, 1, 1, 1, 1,  //
                                      0, 1, 1, 1, 1,  //
                                      0, 0, 1, 1, 1};
  Generator g(5);
  Tensor q = randn({2, 3, 5, 4}, g, {.dtype = DType::f64}), k = randn({2, 3, 5, 4}, g, {.dtype = DType::f64}),
         v = randn({2, 3, 5, 4}, g, {.dtype = DType::f64});
  Tensor G = randn({2, 3, 5, 4}, g, {.dtype = DType::f64});
  for (int form = 0; form < 2; ++form) {
    LocalAttentionOptions o{.window = 2, .look_backward = 1, .look_forward = form == 0 ? 0 : 1,
                            .causal = form == 0, .exact = form == 1};
    INFO("form " << form);
    const std::vector<bool>& band = form == 0 ? causal_lb1 : exact_11;
    CHECK(band_by_hand(5, o) == band);
    Result dn = run(q, k, v, G, [&](auto& a, auto& b, auto& c) { return dense_attention(a, b, c, {}, band, 0.5); });
    o.fused = false;
    Result r = run(q, k, v, G, [&](auto& a, auto& b, auto& c) { return local_attention_reference(a, b, c, {}, o); });
    check_results(r, dn, 1e-12);
    o.fused = true;
    Result f = run(q, k, v, G, [&](auto& a, auto& b, auto& c) { return local_attention(a, b, c, {}, o); });
    check_results(f, dn, 1e-12);
  }
}

TEST_CASE("local_attention: fused matches the reference, f64 to 1e-10") {
  for (const Case& c : cases()) compare(c, DType::f64, 1e-10);
  Case s;
  s.strided = true;
  s.o = {.window = 4, .look_backward = 1, .look_forward = 1, .exact = true};
  s.mask_mode = 1;
  compare(s, DType::f64, 1e-10);
  s.o = {.window = 4, .look_backward = 1, .look_forward = 0, .causal = true, .scale = 0.3};
  compare(s, DType::f64, 1e-10);
}

TEST_CASE("local_attention: fused matches the reference, f32 to 1e-4") {
  for (const Case& c : cases()) compare(c, DType::f32, 1e-4);
}

TEST_CASE("local_attention: w = 1, exact, look 1/1 attends to t-1, t, t+1 (by hand)") {
  // d = 1: s_tj = q_t k_j (scale 1), out_t = sum_j e^{s_tj} v_j / sum_j e^{s_tj}, j in {t-1, t, t+1} ∩ [0, N).
  const std::vector<double> qv = {0.5, -1.0, 2.0, 0.25, 1.5}, kv = {1.0, 0.5, -0.5, 2.0, -1.0},
                            vv = {3.0, -2.0, 1.0, 0.5, 4.0};
  const int64_t N = 5;
  std::vector<double> want(N);
  for (int64_t t = 0; t < N; ++t) {
    double num = 0, den = 0;
    for (int64_t j = std::max<int64_t>(0, t - 1); j <= std::min<int64_t>(N - 1, t + 1); ++j) {
      const double e = std::exp(qv[t] * kv[j]);
      num += e * vv[j];
      den += e;
    }
    want[t] = num / den;
  }
  Tensor q = from_vector(qv, {1, 1, N, 1}, {.dtype = DType::f64}), k = from_vector(kv, {1, 1, N, 1}, {.dtype = DType::f64}),
         v = from_vector(vv, {1, 1, N, 1}, {.dtype = DType::f64});
  LocalAttentionOptions o{.window = 1, .look_backward = 1, .look_forward = 1, .exact = true, .scale = 1.0};
  check_values(local_attention(q, k, v, {}, o), want, 1e-12);
  o.fused = false;
  check_values(local_attention(q, k, v, {}, o), want, 1e-12);
  // With t - 1 masked out for t = 2 (key 1 dropped everywhere).
  Tensor mask = from_vector_bool({true, false, true, true, true}, {1, N});
  o.fused = true;
  std::vector<double> got = local_attention(q, k, v, mask, o).to_vector<double>();
  const double e0 = std::exp(qv[2] * kv[2]), e1 = std::exp(qv[2] * kv[3]);
  CHECK(got[2] == doctest::Approx((e0 * vv[2] + e1 * vv[3]) / (e0 + e1)).epsilon(1e-12));
  CHECK(got[0] == doctest::Approx(vv[0]).epsilon(1e-12));  // only key 0 left for t = 0
}

TEST_CASE("local_attention: a query with no visible key outputs zeros and passes zero gradients") {
  Generator g(9);
  const int64_t N = 10;
  Tensor q = randn({1, 2, N, 3}, g, {.dtype = DType::f64, .requires_grad = true});
  Tensor k = randn({1, 2, N, 3}, g, {.dtype = DType::f64, .requires_grad = true});
  Tensor v = randn({1, 2, N, 3}, g, {.dtype = DType::f64, .requires_grad = true});
  // Causal, w = 2, look back 1: queries 0..3 see only keys 0..3, all masked.
  Tensor mask = from_vector_bool({false, false, false, false, true, true, true, true, true, true}, {1, N});
  LocalAttentionOptions o{.window = 2, .look_backward = 1, .causal = true};
  Tensor out = local_attention(q, k, v, mask, o);
  sum(out * out + out).backward();
  std::vector<double> ov = out.to_vector<double>(), dq = q.grad().to_vector<double>(),
                      dk = k.grad().to_vector<double>(), dv = v.grad().to_vector<double>();
  for (int64_t h = 0; h < 2; ++h)
    for (int64_t t = 0; t < 4; ++t)
      for (int64_t c = 0; c < 3; ++c) {
        const size_t x = (h * N + t) * 3 + c;
        CHECK(ov[x] == 0.0);
        CHECK(dq[x] == 0.0);
        CHECK(dk[x] == 0.0);  // masked keys get nothing either
        CHECK(dv[x] == 0.0);
      }
  CHECK(all_finite(out));
  CHECK(all_finite(q.grad()));
}

TEST_CASE("local_attention: f64 gradcheck of the fused op") {
  struct G {
    int64_t N, w;
    int lb, lf;
    bool causal, exact, masked;
  };
  for (const G& c : {G{5, 2, 1, 1, false, true, false}, G{5, 2, 1, 0, true, false, false},
                     G{6, 2, 2, 1, false, false, true}, G{4, 3, 1, 0, true, true, true}, G{3, 4, 1, 1, false, true, true}}) {
    INFO("N=" << c.N << " w=" << c.w << " look " << c.lb << "/" << c.lf << " causal " << c.causal << " exact "
              << c.exact << " masked " << c.masked);
    LocalAttentionOptions o{.window = c.w, .look_backward = c.lb, .look_forward = c.lf, .causal = c.causal,
                            .exact = c.exact};
    Tensor mask;
    if (c.masked) {
      std::vector<bool> m(2 * c.N, true);
      m[1] = false;
      m[c.N + 0] = false;
      mask = from_vector_bool(m, {2, c.N});
    }
    std::vector<Tensor> in = {rleaf({2, 2, c.N, 3}, 1 + c.N), rleaf({2, 2, c.N, 3}, 2 + c.N), rleaf({2, 2, c.N, 3}, 3 + c.N)};
    check_grad([&](const std::vector<Tensor>& x) { return local_attention(x[0], x[1], x[2], mask, o); }, in);
  }
}

TEST_CASE("local_attention: f16/bf16 inputs on the CPU are computed in f32") {
  Generator g(3);
  Tensor q = randn({1, 2, 9, 4}, g), k = randn({1, 2, 9, 4}, g), v = randn({1, 2, 9, 4}, g);
  LocalAttentionOptions o{.window = 4, .look_backward = 1, .look_forward = 1, .exact = true};
  for (DType dt : {DType::f16, DType::bf16}) {
    Tensor out = local_attention(q.to(dt), k.to(dt), v.to(dt), {}, o);
    CHECK(out.dtype() == dt);
    Tensor want = local_attention(q.to(dt).to(DType::f32), k.to(dt).to(DType::f32), v.to(dt).to(DType::f32), {}, o);
    check_close(out.to(DType::f32), want, 1e-2, 1e-2);
  }
}

TEST_CASE("local_attention: bad input") {
  Tensor q = zeros({1, 2, 5, 4}), k4 = zeros({1, 2, 6, 4});
  CHECK_THROWS_AS(local_attention(q, k4, q), Error);
  CHECK_THROWS_AS(local_attention(zeros({2, 5, 4}), zeros({2, 5, 4}), zeros({2, 5, 4})), Error);
  CHECK_THROWS_AS(local_attention(q, q, q, {}, {.window = 0}), Error);
  CHECK_THROWS_AS(local_attention(q, q, q, {}, {.look_backward = -1}), Error);
  CHECK_THROWS_AS(local_attention(q, q, q, zeros({1, 5})), Error);                     // mask not bool
  CHECK_THROWS_AS(local_attention(q, q, q, from_vector_bool({true, true}, {1, 2})), Error);  // mask shape
  CHECK_THROWS_AS(local_attention(q, q.to(DType::f64), q), Error);
}
