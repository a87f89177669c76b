// CPU / GPU parity for every core op: the same random inputs (contiguous,
// non-contiguous views and broadcast shapes) through the op on both devices,
// forward compared, then one random output gradient backpropagated through
// the tape on both and every input gradient compared. The CPU kernels are the
// reference. Runs only with a GPU (tests/gpu/main.cpp exits 77 otherwise).
//
// Tolerances, elementwise |gpu - cpu| <= atol + rtol |cpu| (NaN and inf must
// match exactly):
//   f64: rtol 1e-9,  atol 1e-11  (libdevice and glibc transcendental functions
//        differ by an ulp or two; sums are reduced in different orders)
//   f32: rtol 2e-5,  atol 1e-6   forward; rtol 1e-4, atol 1e-5 backward
//   f32 matmul (TF32 off): rtol 1e-4, atol 1e-5; against an f64 product,
//        ||gpu - ref|| / ||ref|| < 1e-5 with TF32 off and < 5e-3 with it on
//   integer, bool, copies and dtype conversions: exact.
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "colt5.h"
#include "../helpers.h"
#include "engine/cuda/cublas.h"
#include "engine/cuda/memory.h"

namespace {

using namespace colt5;
const Device kGpu = Device::cuda(0);

struct Tol {
  double rtol, atol;
};
constexpr Tol kF64{1e-9, 1e-11};
constexpr Tol kF32{2e-5, 1e-6};
constexpr Tol kF32Bwd{1e-4, 1e-5};
Tol fwd_tol(DType dt) { return dt == DType::f64 ? kF64 : kF32; }
Tol bwd_tol(DType dt) { return dt == DType::f64 ? kF64 : kF32Bwd; }
const char* dname(DType dt) { return dtype_name(dt); }

void expect_close(const Tensor& got, const Tensor& want, Tol tol, const std::string& what) {
  INFO(what);
  REQUIRE(got.defined());
  REQUIRE(want.defined());
  CHECK(got.device() == kGpu);
  REQUIRE(got.shape() == want.shape());
  CHECK(got.dtype() == want.dtype());
  const std::vector<double> a = got.to_vector<double>(), b = want.to_vector<double>();
  double worst = 0;
  size_t wi = 0;
  bool special_ok = true;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(b[i]) || !std::isfinite(a[i])) {
      const bool same = (std::isnan(a[i]) && std::isnan(b[i])) || a[i] == b[i];
      if (!same && special_ok) {
        special_ok = false;
        wi = i;
      }
      continue;
    }
    const double r = std::abs(a[i] - b[i]) / (tol.atol + tol.rtol * std::abs(b[i]));
    if (r > worst) {
      worst = r;
      if (special_ok) wi = i;
    }
  }
  INFO("worst element " << wi << " of " << a.size() << ": gpu " << (a.empty() ? 0 : a[wi]) << ", cpu "
                        << (b.empty() ? 0 : b[wi]) << " (error / tolerance " << worst << ")");
  CHECK(special_ok);
  CHECK(worst <= 1.0);
}

void expect_equal(const Tensor& got, const Tensor& want, const std::string& what) {
  INFO(what);
  REQUIRE(got.shape() == want.shape());
  CHECK(got.dtype() == want.dtype());
  const std::vector<double> a = got.to_vector<double>(), b = want.to_vector<double>();
  size_t bad = a.size();
  for (size_t i = 0; i < a.size() && bad == a.size(); ++i)
    if (!(a[i] == b[i] || (std::isnan(a[i]) && std::isnan(b[i])))) bad = i;
  INFO("first difference at " << bad << ": gpu " << (bad < a.size() ? a[bad] : 0) << ", cpu "
                              << (bad < b.size() ? b[bad] : 0));
  CHECK(bad == a.size());
}

using colt5::testing::rel_norm_err;

uint64_t seed_of(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (char c : s) h = (h ^ static_cast<uint8_t>(c)) * 1099511628211ull;
  return h;
}

Tensor rnd(const Shape& s, uint64_t seed, DType dt = DType::f64, double lo = -1, double hi = 1) {
  Generator g(seed);
  return uniform(s, lo, hi, g, {.dtype = dt});
}

using Fn = std::function<Tensor(const std::vector<Tensor>&)>;

// fn on CPU leaves and on GPU copies of them; forward compared, then one random
// output gradient backpropagated on both and the input gradients compared.
void parity(const std::string& name, const Fn& fn, const std::vector<Tensor>& inputs, Tol fwd, Tol bwd,
            bool grads = true) {
  std::vector<Tensor> c, g;
  for (const Tensor& t : inputs) {
    Tensor tc = t.detach().clone(), tg = t.detach().to(kGpu);
    if (grads && (t.dtype() == DType::f32 || t.dtype() == DType::f64)) {
      tc.requires_grad_();
      tg.requires_grad_();
    }
    c.push_back(tc);
    g.push_back(tg);
  }
  const Tensor yc = fn(c), yg = fn(g);
  expect_close(yg, yc, fwd, name + ": forward");
  if (!grads || !yc.requires_grad()) return;
  REQUIRE(yg.requires_grad());
  const Tensor dy = rnd(yc.shape(), seed_of(name), yc.dtype());
  yc.backward(dy);
  yg.backward(dy.to(kGpu));
  for (size_t i = 0; i < c.size(); ++i) {
    if (!c[i].requires_grad()) continue;
    const std::string what = name + ": gradient of input " + std::to_string(i);
    if (!c[i].grad().defined()) {
      INFO(what);
      CHECK_FALSE(g[i].grad().defined());
      continue;
    }
    REQUIRE(g[i].grad().defined());
    expect_close(g[i].grad(), c[i].grad(), bwd, what);
  }
}

void parity(const std::string& name, const Fn& fn, const std::vector<Tensor>& inputs, DType dt) {
  parity(name + " " + dname(dt), fn, inputs, fwd_tol(dt), bwd_tol(dt));
}

// Applies the same value-preserving layout change on both devices.
using Layout = std::function<Tensor(const Tensor&)>;
struct NamedLayout {
  const char* name;
  Shape shape;  // shape of the base tensor
  Layout view;
};
std::vector<NamedLayout> layouts() {
  return {
      {"contiguous", {5, 7, 9}, [](const Tensor& x) { return x; }},
      {"permuted", {9, 7, 5}, [](const Tensor& x) { return x.permute({2, 0, 1}); }},
      {"strided slice", {5, 14, 9}, [](const Tensor& x) { return x.slice(1, 1, 14, 2); }},
      {"flat 2^16+3", {(1 << 16) + 3}, [](const Tensor& x) { return x; }},
      {"misaligned", {(1 << 12) + 1}, [](const Tensor& x) { return x.narrow(0, 1, 1 << 12); }},
      {"wide transposed", {256, 150}, [](const Tensor& x) { return x.t(); }},
  };
}

const std::vector<DType> kFloat = {DType::f64, DType::f32};

}  // namespace

// ---------------------------------------------------------------- elementwise

TEST_CASE("gpu parity: unary ops, every layout") {
  struct U {
    const char* name;
    std::function<Tensor(const Tensor&)> f;
    double lo, hi;
  };
  const std::vector<U> ops = {
      {"neg", [](const Tensor& x) { return neg(x); }, -1, 1},
      {"exp", [](const Tensor& x) { return exp(x); }, -2, 2},
      {"log", [](const Tensor& x) { return log(x); }, 0.1, 3},
      {"sqrt", [](const Tensor& x) { return sqrt(x); }, 0.1, 3},
      {"rsqrt", [](const Tensor& x) { return rsqrt(x); }, 0.1, 3},
      {"abs", [](const Tensor& x) { return abs(x); }, -1, 1},
      {"sign", [](const Tensor& x) { return sign(x); }, -1, 1},
      {"relu", [](const Tensor& x) { return relu(x); }, -1, 1},
      {"gelu", [](const Tensor& x) { return gelu(x); }, -3, 3},
      {"sigmoid", [](const Tensor& x) { return sigmoid(x); }, -4, 4},
      {"tanh", [](const Tensor& x) { return tanh(x); }, -3, 3},
      {"sin", [](const Tensor& x) { return sin(x); }, -3, 3},
      {"cos", [](const Tensor& x) { return cos(x); }, -3, 3},
      {"erf", [](const Tensor& x) { return erf(x); }, -2, 2},
      {"pow 2.5", [](const Tensor& x) { return pow(x, 2.5); }, 0.1, 2},
      {"clamp", [](const Tensor& x) { return clamp(x, -0.5, 0.3); }, -1, 1},
      {"add scalar", [](const Tensor& x) { return x + 0.75; }, -1, 1},
      {"mul scalar", [](const Tensor& x) { return x * -1.5; }, -1, 1},
      {"rsub scalar", [](const Tensor& x) { return 2.0 - x; }, -1, 1},
      {"rdiv scalar", [](const Tensor& x) { return 2.0 / x; }, 0.5, 2},
  };
  for (DType dt : kFloat)
    for (const NamedLayout& L : layouts())
      for (const U& u : ops) {
        Tensor x = rnd(L.shape, seed_of(u.name) + L.shape.size(), dt, u.lo, u.hi);
        auto f = u.f;
        auto view = L.view;
        parity(std::string(u.name) + " [" + L.name + "]", [f, view](const std::vector<Tensor>& in) { return f(view(in[0])); },
               {x}, dt);
      }
}

TEST_CASE("gpu parity: binary ops with broadcasting and views") {
  struct B {
    const char* name;
    std::function<Tensor(const Tensor&, const Tensor&)> f;
    double lo_a, hi_a, lo_b, hi_b;
  };
  const std::vector<B> ops = {
      {"add", [](const Tensor& a, const Tensor& b) { return a + b; }, -1, 1, -1, 1},
      {"sub", [](const Tensor& a, const Tensor& b) { return a - b; }, -1, 1, -1, 1},
      {"mul", [](const Tensor& a, const Tensor& b) { return a * b; }, -1, 1, -1, 1},
      {"div", [](const Tensor& a, const Tensor& b) { return a / b; }, -1, 1, 0.5, 2},
      {"pow", [](const Tensor& a, const Tensor& b) { return pow(a, b); }, 0.5, 2, -1.5, 1.5},
      {"maximum", [](const Tensor& a, const Tensor& b) { return maximum(a, b); }, -1, 1, -1, 1},
      {"minimum", [](const Tensor& a, const Tensor& b) { return minimum(a, b); }, -1, 1, -1, 1},
  };
  struct S {
    const char* name;
    Shape a, b;
    Layout va, vb;
  };
  const Layout id = [](const Tensor& x) { return x; };
  const std::vector<S> shapes = {
      {"same", {4, 5, 6}, {4, 5, 6}, id, id},
      {"broadcast", {4, 1, 6}, {5, 1}, id, id},
      {"scalar tensor", {4, 5, 6}, {}, id, id},
      {"row bias", {64, 48}, {48}, id, id},
      {"transposed", {6, 5}, {5, 6}, [](const Tensor& x) { return x.t(); }, id},
      {"expanded + sliced", {3, 1}, {3, 10}, [](const Tensor& x) { return x.expand({3, 5}); },
       [](const Tensor& x) { return x.slice(1, 0, 10, 2); }},
      {"flat 2^18+5", {(1 << 18) + 5}, {(1 << 18) + 5}, id, id},
      {"outer product", {300, 1}, {1, 200}, id, id},
      {"3-D broadcast", {3, 40, 1}, {40, 300}, id, id},
  };
  for (DType dt : kFloat)
    for (const S& s : shapes)
      for (const B& op : ops) {
        const std::string name = std::string(op.name) + " [" + s.name + "]";
        Tensor a = rnd(s.a, seed_of(name) + 1, dt, op.lo_a, op.hi_a);
        Tensor b = rnd(s.b, seed_of(name) + 2, dt, op.lo_b, op.hi_b);
        auto f = op.f;
        auto va = s.va, vb = s.vb;
        parity(name, [f, va, vb](const std::vector<Tensor>& in) { return f(va(in[0]), vb(in[1])); }, {a, b}, dt);
      }
  // Mixed dtypes promote the same way on both devices.
  parity("add f32 + f64", [](const std::vector<Tensor>& in) { return in[0] + in[1]; },
         {rnd({3, 4}, 1, DType::f32), rnd({4}, 2, DType::f64)}, kF64, kF32Bwd);
}

TEST_CASE("gpu parity: i64 arithmetic, comparisons, logic (exact)") {
  Generator g(5);
  Tensor a = randint(-20, 20, {6, 7}, g), b = randint(1, 9, {7}, g);
  Tensor ag = a.to(kGpu), bg = b.to(kGpu);
  expect_equal(add(ag, bg), add(a, b), "i64 add");
  expect_equal(sub(ag, bg), sub(a, b), "i64 sub");
  expect_equal(mul(ag, bg), mul(a, b), "i64 mul");
  expect_equal(div(ag, bg), div(a, b), "i64 div");
  expect_equal(maximum(ag, bg), maximum(a, b), "i64 maximum");
  expect_equal(sum(ag, 0), sum(a, 0), "i64 sum");
  // Ties on purpose: integer values as floats.
  for (DType dt : kFloat) {
    Tensor x = a.to(dt), y = randint(-3, 3, {6, 1}, g).to(dt);
    Tensor xg = x.to(kGpu), yg = y.to(kGpu);
    expect_equal(eq(xg, yg), eq(x, y), "eq");
    expect_equal(ne(xg, yg), ne(x, y), "ne");
    expect_equal(lt(xg, yg), lt(x, y), "lt");
    expect_equal(le(xg.t(), yg.t()), le(x.t(), y.t()), "le transposed");
    expect_equal(gt(xg, 0.0), gt(x, 0.0), "gt scalar");
    expect_equal(ge(xg, yg), ge(x, y), "ge");
    Tensor p = gt(x, 0.0), q = lt(y, 1.0);
    Tensor pg = p.to(kGpu), qg = q.to(kGpu);
    expect_equal(logical_and(pg, qg), logical_and(p, q), "logical_and");
    expect_equal(logical_or(pg, qg), logical_or(p, q), "logical_or");
    expect_equal(logical_not(pg), logical_not(p), "logical_not");
  }
  // A long bool map takes the 16-wide vector path.
  Tensor big = rnd({(1 << 16) + 7}, 9, DType::f32);
  expect_equal(logical_not(gt(big.to(kGpu), 0.0)), logical_not(gt(big, 0.0)), "logical_not long");
}

TEST_CASE("gpu parity: where and masked_fill") {
  for (DType dt : kFloat) {
    Tensor cond = gt(rnd({4, 1, 6}, 3), 0.0);
    Tensor a = rnd({4, 5, 6}, 4, dt), b = rnd({5, 6}, 5, dt);
    parity("where broadcast",
           [cond](const std::vector<Tensor>& in) { return where(cond.to(in[0].device()), in[0], in[1]); }, {a, b},
           dt);
    parity("where scalar", [cond](const std::vector<Tensor>& in) { return where(cond.to(in[0].device()), in[0], 2.5); },
           {a}, dt);
    Tensor mask = gt(rnd({5, 1}, 6), 0.3);
    parity("masked_fill",
           [mask](const std::vector<Tensor>& in) { return masked_fill(in[0].transpose(0, 1), mask.to(in[0].device()), -1e9); },
           {rnd({6, 5}, 7, dt)}, dt);
  }
  Tensor c = gt(rnd({9}, 1), 0.0), x = gt(rnd({9}, 2), 0.0), y = gt(rnd({9}, 3), 0.0);
  expect_equal(where(c.to(kGpu), x.to(kGpu), y.to(kGpu)), where(c, x, y), "where bool");
}

TEST_CASE("gpu parity: copies, fills and dtype conversions (exact)") {
  Tensor x = rnd({7, 11}, 1, DType::f64, -300, 300);
  Tensor xg = x.to(kGpu);
  for (DType to : {DType::f32, DType::f64, DType::i64, DType::b8, DType::f16, DType::bf16})
    expect_equal(xg.to(to), x.to(to), std::string("f64 -> ") + dtype_name(to));
  for (DType from : {DType::f32, DType::i64, DType::b8, DType::f16, DType::bf16})
    for (DType to : {DType::f32, DType::f64, DType::i64, DType::f16, DType::bf16, DType::b8}) {
      Tensor s = x.to(from);
      expect_equal(s.to(kGpu).to(to), s.to(to), std::string(dtype_name(from)) + " -> " + dtype_name(to));
    }
  expect_equal(xg.t().contiguous(), x.t().contiguous(), "transposed copy");
  expect_equal(xg.slice(1, 1, 11, 3).to(DType::f32), x.slice(1, 1, 11, 3).to(DType::f32), "strided convert");
  Tensor d = zeros({3, 7, 11}, {.device = kGpu});
  d.copy_(xg);  // broadcast on copy
  Tensor h = zeros({3, 7, 11});
  h.copy_(x);
  expect_equal(d, h, "broadcasting copy_");
  Tensor e = zeros({7, 11}, {.dtype = DType::f32, .device = kGpu});
  e.t().copy_(x.t());  // cross-device, into a transposed view
  expect_equal(e, x.to(DType::f32), "cross-device copy_ into a view");
  for (DType dt : {DType::f32, DType::f64, DType::i64, DType::b8, DType::f16, DType::bf16}) {
    expect_equal(full({5, 3}, 1.25, {.dtype = dt, .device = kGpu}), full({5, 3}, 1.25, {.dtype = dt}),
                 std::string("full ") + dtype_name(dt));
    Tensor z = full({4, 6}, 3.0, {.dtype = dt, .device = kGpu});
    z.slice(1, 0, 6, 2).fill_(-2.0);
    Tensor zc = full({4, 6}, 3.0, {.dtype = dt});
    zc.slice(1, 0, 6, 2).fill_(-2.0);
    expect_equal(z, zc, std::string("strided fill ") + dtype_name(dt));
  }
  expect_equal(arange(0.0, 5.0, 0.5, {.dtype = DType::f32, .device = kGpu}), arange(0.0, 5.0, 0.5, {.dtype = DType::f32}),
               "arange");
}

TEST_CASE("gpu: autograd across devices (to() is differentiable)") {
  Tensor x = rnd({3, 4}, 1).requires_grad_();
  Tensor y = sum(exp(x.to(kGpu)) * 2.0);
  y.backward();
  REQUIRE(x.grad().defined());
  CHECK(x.grad().device().is_cpu());
  expect_close(x.grad().to(kGpu), exp(x.detach()) * 2.0, kF64, "grad through to()");
  Tensor a = rnd({2}, 1), b = rnd({2}, 2).to(kGpu);
  CHECK_THROWS_WITH_AS(add(a, b), doctest::Contains("expected all tensors on"), Error);
}

// ---------------------------------------------------------------- reductions

TEST_CASE("gpu parity: reductions over any dims, views, keepdim") {
  const std::vector<std::vector<int>> dimsets = {{}, {0}, {1}, {2}, {-1}, {0, 2}, {0, 1}, {1, 2}};
  const std::vector<std::pair<const char*, Layout>> views = {
      {"contiguous", [](const Tensor& x) { return x; }},
      {"permuted", [](const Tensor& x) { return x.permute({1, 2, 0}); }},
  };
  for (DType dt : kFloat)
    for (auto& [vname, view] : views)
      for (const auto& dims : dimsets)
        for (bool keep : {false, true}) {
          std::string tag = std::string(" [") + vname + " dims";
          for (int d : dims) tag += " " + std::to_string(d);
          tag += keep ? " keepdim]" : "]";
          Tensor x = rnd({6, 7, 8}, seed_of(tag), dt);
          auto v = view;
          parity("sum" + tag, [v, dims, keep](const std::vector<Tensor>& in) { return sum(v(in[0]), dims, keep); },
                 {x}, dt);
          parity("mean" + tag, [v, dims, keep](const std::vector<Tensor>& in) { return mean(v(in[0]), dims, keep); },
                 {x}, dt);
          parity("max" + tag, [v, dims, keep](const std::vector<Tensor>& in) { return max(v(in[0]), dims, keep); },
                 {x}, dt);
          parity("min" + tag, [v, dims, keep](const std::vector<Tensor>& in) { return min(v(in[0]), dims, keep); },
                 {x}, dt);
          if (!dims.empty())
            parity("logsumexp" + tag,
                   [v, dims, keep](const std::vector<Tensor>& in) { return logsumexp(v(in[0]), dims, keep); }, {x},
                   dt);
        }
}

TEST_CASE("gpu parity: argmax / argmin (first index on ties), max with ties, NaN, -inf rows") {
  Generator g(3);
  for (DType dt : kFloat) {
    Tensor x = randint(0, 4, {9, 13}, g).to(dt);  // many ties
    Tensor xg = x.to(kGpu);
    for (int d : {0, 1}) {
      expect_equal(argmax(xg, d), argmax(x, d), "argmax dim " + std::to_string(d));
      expect_equal(argmin(xg, d), argmin(x, d), "argmin dim " + std::to_string(d));
      expect_equal(argmax(xg.t(), d), argmax(x.t(), d), "argmax transposed dim " + std::to_string(d));
    }
    parity("max with ties", [](const std::vector<Tensor>& in) { return max(in[0], 1); }, {x}, dt);
    Tensor n = x.clone();
    n.select(0, 2).select(0, 5).fill_(NAN);
    Tensor ng = n.to(kGpu);
    expect_equal(argmax(ng, 1), argmax(n, 1), "argmax NaN");
    expect_equal(max(ng, 1), max(n, 1), "max NaN");
    expect_equal(min(ng, 0), min(n, 0), "min NaN");
    Tensor m = rnd({4, 6}, 8, dt);
    m.select(0, 1).fill_(-INFINITY);
    parity("logsumexp -inf row", [](const std::vector<Tensor>& in) { return logsumexp(in[0], 1); }, {m}, dt);
    // Long reductions (split over blocks), and an argmax far from the start.
    Tensor big = rnd({3, 300000}, 11, dt);
    big.select(0, 1).narrow(0, 250000, 1).fill_(5.0);
    Tensor bg = big.to(kGpu);
    expect_equal(argmax(bg, 1), argmax(big, 1), "argmax long rows");
    expect_equal(max(bg, 1), max(big, 1), "max long rows");
  }
}

TEST_CASE("gpu parity: large and skewed reductions; deterministic bits") {
  for (DType dt : kFloat) {
    const Tol t = dt == DType::f64 ? kF64 : Tol{1e-5, 1e-5};
    Tensor all = rnd({(1 << 22) + 3}, 1, dt);
    parity(std::string("sum of 2^22+3 ") + dname(dt), [](const std::vector<Tensor>& in) { return sum(in[0]); }, {all},
           t, t);
    Tensor tall = rnd({200000, 3}, 2, dt);
    parity(std::string("sum over 200000 rows ") + dname(dt), [](const std::vector<Tensor>& in) { return sum(in[0], 0); },
           {tall}, t, t);
    Tensor wide = rnd({5, 70000}, 3, dt);
    parity(std::string("mean of 5 rows of 70000 ") + dname(dt),
           [](const std::vector<Tensor>& in) { return mean(in[0], 1); }, {wide}, t, t);
    Tensor mid = rnd({30, 500, 7}, 4, dt);
    parity(std::string("sum over a middle dim ") + dname(dt), [](const std::vector<Tensor>& in) { return sum(in[0], 1); },
           {mid}, t, t);
    // The same reduction twice gives the same bits (no atomics).
    Tensor g = all.to(kGpu), g2 = tall.to(kGpu);
    expect_equal(sum(g), sum(g), "sum twice");
    expect_equal(sum(g2, 0), sum(g2, 0), "column sum twice");
  }
}

// ---------------------------------------------------------------- softmax, norms, loss

TEST_CASE("gpu parity: softmax / log_softmax (rows in registers, long rows, middle dims, masked lines)") {
  struct C {
    const char* name;
    Shape shape;
    int dim;
    Layout view;
  };
  const Layout id = [](const Tensor& x) { return x; };
  const std::vector<C> cases = {
      {"rows of 7", {13, 7}, -1, id},
      {"rows of 100", {33, 100}, -1, id},
      {"rows of 1000", {17, 1000}, -1, id},
      {"rows of 8192", {24, 8192}, -1, id},
      {"rows of 12000", {5, 12000}, -1, id},
      {"rows of 20001 (looping)", {3, 20001}, -1, id},
      {"middle dim", {6, 33, 5}, 1, id},
      {"transposed", {7, 13}, -1, [](const Tensor& x) { return x.t(); }},
      {"first dim", {9, 4, 3}, 0, id},
  };
  for (DType dt : kFloat)
    for (const C& c : cases) {
      Tensor x = rnd(c.shape, seed_of(c.name), dt, -4, 4);
      // A fully masked line and a partly masked one.
      x.select(0, 0).fill_(-INFINITY);
      if (c.shape.size() == 2) x.select(0, 1).narrow(0, 0, 2).fill_(-INFINITY);
      auto v = c.view;
      const int d = c.dim;
      parity(std::string("softmax ") + c.name, [v, d](const std::vector<Tensor>& in) { return softmax(v(in[0]), d); },
             {x}, dt);
      parity(std::string("log_softmax ") + c.name,
             [v, d](const std::vector<Tensor>& in) { return log_softmax(v(in[0]), d); }, {x}, dt);
    }
}

TEST_CASE("gpu parity: layer_norm, rms_norm, l2norm (parameter gradients over many rows)") {
  for (DType dt : kFloat) {
    for (Shape s : {Shape{37, 64}, Shape{3, 5, 96}, Shape{600, 48}, Shape{4, 3000}}) {
      const int64_t n = s.back();
      const std::string tag = " " + shape_str(s);
      Tensor x = rnd(s, seed_of(tag), dt, -2, 2), w = rnd({n}, 2, dt, 0.5, 1.5), b = rnd({n}, 3, dt);
      parity("layer_norm w b" + tag, [](const std::vector<Tensor>& in) { return layer_norm(in[0], in[1], in[2]); },
             {x, w, b}, dt);
      parity("layer_norm" + tag, [](const std::vector<Tensor>& in) { return layer_norm(in[0]); }, {x}, dt);
      parity("layer_norm w" + tag, [](const std::vector<Tensor>& in) { return layer_norm(in[0], in[1]); }, {x, w}, dt);
      parity("rms_norm gamma" + tag, [](const std::vector<Tensor>& in) { return rms_norm(in[0], in[1]); }, {x, w}, dt);
      parity("rms_norm" + tag, [](const std::vector<Tensor>& in) { return rms_norm(in[0]); }, {x}, dt);
      parity("l2norm" + tag, [](const std::vector<Tensor>& in) { return l2norm(in[0], -1); }, {x}, dt);
    }
    Tensor x = rnd({4, 9, 6}, 5, dt);
    parity("l2norm middle dim", [](const std::vector<Tensor>& in) { return l2norm(in[0], 1); }, {x}, dt);
    parity("layer_norm transposed input", [](const std::vector<Tensor>& in) { return layer_norm(in[0].t()); },
           {rnd({40, 12}, 6, dt)}, dt);
    Tensor z = rnd({5, 16}, 7, dt);
    z.select(0, 2).fill_(0.0);  // the eps clamp is active on that row
    parity("rms_norm zero row", [](const std::vector<Tensor>& in) { return rms_norm(in[0], {}, 1e-6); }, {z}, dt);
  }
}

TEST_CASE("gpu parity: cross_entropy (ignore_index, reductions, wide rows); bad targets throw") {
  Generator g(17);
  for (DType dt : kFloat) {
    for (int64_t C : {10, 3000}) {
      Tensor logits = rnd({50, C}, seed_of("ce") + C, dt, -3, 3);
      Tensor target = randint(0, C, {50}, g);
      target.narrow(0, 5, 3).fill_(-100.0);
      for (Reduction r : {Reduction::mean, Reduction::sum, Reduction::none}) {
        const std::string name = "cross_entropy C=" + std::to_string(C) + " reduction " + std::to_string(int(r));
        parity(name,
               [target, r](const std::vector<Tensor>& in) {
                 return cross_entropy(in[0], target.to(in[0].device()), -100, r);
               },
               {logits}, dt);
      }
    }
    Tensor lg = rnd({4, 5}, 3, dt);
    lg.select(0, 1).narrow(0, 2, 1).fill_(-INFINITY);
    Tensor t = from_vector_i64({0, 2, 4, 1});
    parity("cross_entropy -inf target logit",
           [t](const std::vector<Tensor>& in) { return cross_entropy(in[0], t.to(in[0].device()), -100, Reduction::none); },
           {lg}, fwd_tol(dt), bwd_tol(dt), false);
    Tensor bad = from_vector_i64({0, 7, 1, 1}, {}, {.dtype = DType::i64, .device = kGpu});
    CHECK_THROWS_WITH_AS(cross_entropy(lg.to(kGpu), bad), doctest::Contains("target value 7"), Error);
  }
}

// ---------------------------------------------------------------- indexing

TEST_CASE("gpu parity: gather, scatter, scatter_add, index_select, embedding") {
  Generator g(23);
  for (DType dt : kFloat) {
    Tensor x = rnd({5, 8, 3}, 1, dt);
    Tensor idx = randint(0, 8, {5, 4, 3}, g);
    parity("gather dim 1", [idx](const std::vector<Tensor>& in) { return gather(in[0], 1, idx.to(in[0].device())); },
           {x}, dt);
    Tensor idx_last = randint(0, 3, {5, 8, 6}, g);
    parity("gather last dim",
           [idx_last](const std::vector<Tensor>& in) { return gather(in[0], 2, idx_last.to(in[0].device())); }, {x},
           dt);
    Tensor src = rnd({5, 4, 3}, 2, dt);
    parity("scatter dim 1 (duplicates: last wins)",
           [idx](const std::vector<Tensor>& in) { return scatter(in[0], 1, idx.to(in[0].device()), in[1]); }, {x, src},
           dt);
    parity("scatter_add dim 1",
           [idx](const std::vector<Tensor>& in) { return scatter_add(in[0], 1, idx.to(in[0].device()), in[1]); },
           {x, src}, dt);
    Tensor sel = from_vector_i64({3, 0, 3, 7, 1});
    parity("index_select dim 1",
           [sel](const std::vector<Tensor>& in) { return index_select(in[0], 1, sel.to(in[0].device())); }, {x}, dt);
    parity("index_select dim 0 of a transposed view",
           [sel](const std::vector<Tensor>& in) { return index_select(in[0].transpose(0, 1), 0, sel.to(in[0].device())); },
           {x}, dt);
    Tensor w = rnd({50, 16}, 3, dt);
    Tensor tok = randint(0, 50, {4, 40}, g);  // 160 lookups, many duplicates: the sorted scatter-add path
    parity("embedding (sorted backward)",
           [tok](const std::vector<Tensor>& in) { return embedding(in[0], tok.to(in[0].device())); }, {w}, dt);
    Tensor few = randint(0, 50, {3, 5}, g);
    parity("embedding (line backward)",
           [few](const std::vector<Tensor>& in) { return embedding(in[0], few.to(in[0].device())); }, {w}, dt);
    // The backward's scatter-add is deterministic: same bits twice.
    Tensor wg = w.to(kGpu).requires_grad_();
    Tensor dy = rnd({4, 40, 16}, 9, dt).to(kGpu);
    embedding(wg, tok.to(kGpu)).backward(dy);
    Tensor g1 = wg.grad().clone();
    wg.zero_grad();
    embedding(wg, tok.to(kGpu)).backward(dy);
    expect_equal(wg.grad(), g1, "embedding backward twice");
  }
  Tensor x = rnd({4, 6}, 1).to(kGpu);
  CHECK_THROWS_WITH_AS(index_select(x, 1, from_vector_i64({0, 6}, {}, {.dtype = DType::i64, .device = kGpu})),
                       doctest::Contains("index 6 is out of range"), Error);
  CHECK_THROWS_WITH_AS(gather(x, 0, from_vector_i64({0, -1}, {1, 2}, {.dtype = DType::i64, .device = kGpu})),
                       doctest::Contains("index -1 is out of range"), Error);
}

// ---------------------------------------------------------------- matmul

TEST_CASE("gpu parity: matmul / linear through cuBLAS (transposes in place, batches, broadcast)") {
  struct M {
    const char* name;
    Shape a, b;
    Layout va, vb;
  };
  const Layout id = [](const Tensor& x) { return x; };
  const Layout tr = [](const Tensor& x) { return x.transpose(-1, -2); };
  const std::vector<M> cases = {
      {"2-D", {37, 29}, {29, 41}, id, id},
      {"A^T", {29, 37}, {29, 41}, tr, id},
      {"B^T", {37, 29}, {41, 29}, id, tr},
      {"A^T B^T", {29, 37}, {41, 29}, tr, tr},
      {"batched broadcast", {3, 1, 17, 19}, {4, 19, 23}, id, id},
      {"batched x 2-D", {5, 17, 19}, {19, 23}, id, id},
      {"vector . matrix", {19}, {19, 7}, id, id},
      {"dot", {64}, {64}, id, id},
  };
  for (DType dt : kFloat) {
    const Tol t = dt == DType::f64 ? kF64 : Tol{1e-4, 1e-5};
    for (const M& c : cases) {
      auto va = c.va, vb = c.vb;
      parity(std::string("matmul ") + c.name + " " + dname(dt),
             [va, vb](const std::vector<Tensor>& in) { return matmul(va(in[0]), vb(in[1])); },
             {rnd(c.a, seed_of(c.name), dt), rnd(c.b, seed_of(c.name) + 1, dt)}, t, t);
    }
    parity(std::string("linear with bias ") + dname(dt),
           [](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); },
           {rnd({2, 9, 24}, 1, dt), rnd({16, 24}, 2, dt), rnd({16}, 3, dt)}, t, t);
  }
  // TF32: off by default (true f32 above); on, the product is close but not exact.
  Tensor a = rnd({256, 512}, 4, DType::f32), b = rnd({512, 128}, 5, DType::f32);
  Tensor ref = matmul(a.to(DType::f64), b.to(DType::f64));
  const double off = rel_norm_err(matmul(a.to(kGpu), b.to(kGpu)).to(DType::f64), ref);
  cuda::set_allow_tf32(true);
  const double on = rel_norm_err(matmul(a.to(kGpu), b.to(kGpu)).to(DType::f64), ref);
  cuda::set_allow_tf32(false);
  INFO("relative error vs f64: TF32 off " << off << ", on " << on);
  CHECK(off < 1e-5);
  CHECK(on < 5e-3);
}

// ---------------------------------------------------------------- shape ops

TEST_CASE("gpu parity: cat, stack, split (views and copy_)") {
  for (DType dt : kFloat) {
    parity("cat dim 1",
           [](const std::vector<Tensor>& in) { return cat({in[0], in[1].t(), in[2]}, 1); },
           {rnd({4, 3}, 1, dt), rnd({5, 4}, 2, dt), rnd({4, 2}, 3, dt)}, dt);
    parity("stack dim 0", [](const std::vector<Tensor>& in) { return stack({in[0], in[1]}, 0); },
           {rnd({3, 5}, 4, dt), rnd({3, 5}, 5, dt)}, dt);
    parity("split + cat", [](const std::vector<Tensor>& in) {
      std::vector<Tensor> parts = split(in[0], 3, 1);
      return cat({parts[2] * 2.0, parts[0], exp(parts[1])}, 1);
    }, {rnd({4, 8}, 6, dt)}, dt);
  }
}

// ---------------------------------------------------------------- a small network

TEST_CASE("gpu parity: a two-layer MLP trained with SGD gives the same losses on both devices") {
  for (DType dt : kFloat) {
    Generator g(42);
    const int64_t N = 64, D = 32, H = 48, C = 10;
    Tensor x = rnd({N, D}, 1, dt, -1, 1);
    Tensor y = randint(0, C, {N}, g);
    std::vector<Tensor> init = {rnd({H, D}, 2, dt, -0.3, 0.3), rnd({H}, 3, dt, -0.1, 0.1),
                                rnd({C, H}, 4, dt, -0.3, 0.3), rnd({C}, 5, dt, -0.1, 0.1)};
    auto train = [&](Device dev) {
      std::vector<Tensor> p;
      for (const Tensor& t : init) p.push_back(t.detach().to(dev).clone().detach().requires_grad_());
      Tensor xd = x.to(dev), yd = y.to(dev);
      std::vector<double> losses;
      for (int step = 0; step < 8; ++step) {
        Tensor loss = cross_entropy(linear(gelu(linear(xd, p[0], p[1])), p[2], p[3]), yd);
        loss.backward();
        losses.push_back(loss.item<double>());
        for (Tensor& q : p) {
          NoGradGuard ng;
          Tensor next = (q - q.grad() * 0.5).detach();
          q = next.requires_grad_();
        }
      }
      return losses;
    };
    const std::vector<double> lc = train(Device::cpu()), lg = train(kGpu);
    const double tol = dt == DType::f64 ? 1e-10 : 2e-5;
    for (size_t i = 0; i < lc.size(); ++i) {
      INFO(dname(dt) << " step " << i << ": cpu " << lc[i] << ", gpu " << lg[i]);
      CHECK(std::abs(lc[i] - lg[i]) <= tol * std::abs(lc[i]));
    }
    CHECK(lc.back() < lc.front());  // it learns
  }
}
