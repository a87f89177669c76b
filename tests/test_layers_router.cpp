// CoordinateDescentRouter (SPEC §2): the selection against an independent
// oracle (scores by loops, the primitive-op coordinate descent, a stable sort),
// every option (routes, blocks, cosine sim, learned tokens, random route,
// keep_one_route_dim, straight-through, eps settings), the no-routing path,
// the package bugs we fix, configuration errors, and f64 gradchecks.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <numeric>
#include <set>

#include "helpers.h"

using namespace colt5;
using namespace colt5::testing;

namespace {

Tensor randn64(const Shape& s, uint64_t seed) {
  Generator g(seed);
  return randn(s, g, {.dtype = DType::f64});
}

Tensor random_mask(int64_t B, int64_t N, double keep, uint64_t seed) {
  Generator g(seed);
  return lt(rand({B, N}, g, {.dtype = DType::f64}), keep);
}

// Oracle selection for one (batch, route) row: s by loops, coordinate descent by
// the primitive-op reference, hard top-k by a stable sort (descending, ties to
// the lower index).
struct OracleRow {
  std::vector<int64_t> idx;
  std::vector<double> c;  // coordinate-descent values at idx
};
OracleRow oracle_row(const std::vector<double>& xrow /*n*D*/, const std::vector<double>& tok /*D*/,
                     const std::vector<bool>& keep, int64_t n, int64_t D, int64_t nt, const RouterConfig& cfg) {
  std::vector<double> s(n);
  double tn = 0;
  for (int64_t d = 0; d < D; ++d) tn += tok[d] * tok[d];
  tn = std::max(std::sqrt(tn), 1e-12);
  for (int64_t i = 0; i < n; ++i) {
    double acc = 0, xn = 0;
    for (int64_t d = 0; d < D; ++d) {
      acc += xrow[i * D + d] * tok[d];
      xn += xrow[i * D + d] * xrow[i * D + d];
    }
    xn = std::max(std::sqrt(xn), 1e-12);
    s[i] = cfg.cosine_sim_routing ? acc / (xn * tn) * cfg.cosine_sim_scale : acc;
  }
  Tensor st = from_vector(s, {1, n}, {.dtype = DType::f64});
  Tensor m;
  if (!keep.empty()) m = from_vector_bool(keep, {1, n});
  double k = std::min(static_cast<double>(nt) * cfg.fetch_k_ratio, static_cast<double>(n));
  CoorDescentOptions co{.n_iters = cfg.n_iters, .eps = cfg.eps, .eps_init = cfg.eps_init.value_or(0.0),
                        .eps_decay = cfg.eps_decay};
  std::vector<double> c = coor_descent_reference(st, scalar_tensor(k, {.dtype = DType::f64}), m, co).to_vector<double>();
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return c[a] > c[b]; });
  OracleRow r;
  for (int64_t j = 0; j < nt; ++j) {
    r.idx.push_back(order[j]);
    r.c.push_back(c[order[j]]);
  }
  return r;
}

std::vector<double> row_of(const Tensor& x, int64_t b, int64_t start, int64_t len) {
  return x.select(0, b).narrow(0, start, len).contiguous().to_vector<double>();
}

// routed_tokens[b, (r,) j] == x[b, idx[b, (r,) j]] and routed_mask likewise.
void check_gathered(const RouterReturn& r, const Tensor& x, const Tensor& mask) {
  const int64_t D = x.size(2);
  Tensor idx = r.indices.dim() == 2 ? r.indices.unsqueeze(1) : r.indices;  // (B, R, n)
  Tensor tok = r.routed_tokens.dim() == 3 ? r.routed_tokens.unsqueeze(1) : r.routed_tokens;
  Tensor rm = r.routed_mask.defined() && r.routed_mask.dim() == 2 ? r.routed_mask.unsqueeze(1) : r.routed_mask;
  std::vector<int64_t> iv = idx.contiguous().to_vector<int64_t>();
  const int64_t B = idx.size(0), R = idx.size(1), n = idx.size(2);
  bool ok = true;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t rr = 0; rr < R; ++rr)
      for (int64_t j = 0; j < n; ++j) {
        int64_t i = iv[(b * R + rr) * n + j];
        std::vector<double> want = row_of(x, b, i, 1), got = tok.select(0, b).select(0, rr).select(0, j).contiguous().to_vector<double>();
        for (int64_t d = 0; d < D; ++d) ok = ok && want[d] == got[d];
        if (mask.defined())
          ok = ok && mask.select(0, b).select(0, i).item<bool>() == rm.select(0, b).select(0, rr).select(0, j).item<bool>();
      }
  CHECK(ok);
}

bool distinct_rows(const Tensor& idx) {
  Tensor i3 = idx.dim() == 2 ? idx.unsqueeze(1) : idx;
  std::vector<int64_t> v = i3.contiguous().to_vector<int64_t>();
  const int64_t rows = i3.size(0) * i3.size(1), n = i3.size(2);
  for (int64_t r = 0; r < rows; ++r) {
    std::set<int64_t> s(v.begin() + r * n, v.begin() + (r + 1) * n);
    if (static_cast<int64_t>(s.size()) != n) return false;
  }
  return true;
}

}  // namespace

TEST_CASE("layers router: selection matches the oracle (routes, mask, cosine sim, eps settings)") {
  struct Case {
    int64_t R;
    bool masked, cosine, st;
    RouterConfig extra;
  };
  std::vector<Case> cases = {
      {1, false, false, true, {}},
      {1, true, false, true, {}},
      {3, true, false, true, {}},
      {2, false, true, false, {}},
      {1, true, false, false, {.n_iters = 7, .fetch_k_ratio = 1.5, .eps = 0.3, .eps_decay = 1.0, .eps_init = std::nullopt}},
      {2, true, true, true, {.n_iters = 50, .fetch_k_ratio = 1.0, .eps = 1.0, .eps_decay = 1.0, .eps_init = std::nullopt}},
  };
  const int64_t B = 2, N = 13, D = 6, nt = 4;
  int ci = 0;
  for (const Case& c : cases) {
    ++ci;
    INFO("case " << ci);
    RouterConfig cfg = c.extra;
    cfg.num_routing_tokens = c.R;
    cfg.cosine_sim_routing = c.cosine;
    cfg.straight_through = c.st;
    Generator gen(100 + ci);
    CoordinateDescentRouter router(D, cfg, gen);
    router.to(DType::f64);
    Tensor x = randn64({B, N, D}, 7 + ci);
    Tensor mask = c.masked ? random_mask(B, N, 0.7, 11 + ci) : Tensor();
    RouterReturn r = router.forward(x, nt, mask);
    const bool rd = c.R > 1;
    REQUIRE(r.routed());
    CHECK(r.indices.dtype() == DType::i64);
    CHECK(r.indices.shape() == (rd ? Shape{B, c.R, nt} : Shape{B, nt}));
    CHECK(r.scores.shape() == r.indices.shape());
    CHECK(r.routed_tokens.shape() == (rd ? Shape{B, c.R, nt, D} : Shape{B, nt, D}));
    CHECK(r.routed_mask.defined() == c.masked);
    CHECK(distinct_rows(r.indices));
    check_gathered(r, x, mask);
    Tensor idx3 = rd ? r.indices : r.indices.unsqueeze(1);
    Tensor sc3 = rd ? r.scores : r.scores.unsqueeze(1);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t rr = 0; rr < c.R; ++rr) {
        std::vector<bool> keep;
        if (c.masked)
          for (int64_t i = 0; i < N; ++i) keep.push_back(mask.select(0, b).select(0, i).item<bool>());
        OracleRow o = oracle_row(row_of(x, b, 0, N), router.routing_token.select(0, rr).contiguous().to_vector<double>(),
                                 keep, N, D, nt, cfg);
        std::vector<int64_t> got = idx3.select(0, b).select(0, rr).contiguous().to_vector<int64_t>();
        std::vector<double> sc = sc3.select(0, b).select(0, rr).contiguous().to_vector<double>();
        CHECK(got == o.idx);
        for (int64_t j = 0; j < nt; ++j) {
          if (c.st) {
            const bool kept = !c.masked || keep[got[j]];
            CHECK(sc[j] == (kept ? 1.0 : 0.0));  // exactly
          } else {
            CHECK(sc[j] == doctest::Approx(o.c[j]).epsilon(1e-9));
          }
        }
      }
  }
}

TEST_CASE("layers router: no routing when N <= num_tokens") {
  const int64_t B = 2, N = 5, D = 4;
  Generator gen(1);
  Tensor x = randn64({B, N, D}, 2);
  Tensor mask = random_mask(B, N, 0.5, 3);
  for (int64_t nt : {N, N + 3}) {
    CoordinateDescentRouter r1(D, {}, gen);
    r1.to(DType::f64);
    RouterReturn a = r1.forward(x, nt, mask);
    CHECK_FALSE(a.routed());
    CHECK(a.scores.shape() == Shape{B, N});
    CHECK(a.scores.dtype() == DType::f64);
    CHECK(min(a.scores).item<double>() == 1.0);
    CHECK(max(a.scores).item<double>() == 1.0);
    CHECK(a.routed_tokens.shape() == x.shape());
    CHECK(max(abs(a.routed_tokens - x)).item<double>() == 0.0);
    CHECK(a.routed_mask.to_vector<bool>() == mask.to_vector<bool>());

    CoordinateDescentRouter r3(D, {.num_routing_tokens = 3}, gen);
    RouterReturn b = r3.forward(x.to(DType::f32), nt, mask);
    CHECK(b.scores.shape() == Shape{B, 3, N});
    CHECK(b.routed_tokens.shape() == Shape{B, 3, N, D});
    CHECK(b.routed_mask.shape() == Shape{B, 3, N});
    for (int r = 0; r < 3; ++r) {
      CHECK(max(abs(b.routed_tokens.select(1, r) - x.to(DType::f32))).item<double>() == 0.0);
      CHECK(b.routed_mask.select(1, r).contiguous().to_vector<bool>() == mask.to_vector<bool>());
    }
    RouterReturn c = r1.forward(x, nt, {}, {.keep_one_route_dim = true});
    CHECK(c.scores.shape() == Shape{B, 1, N});
    CHECK(c.routed_tokens.shape() == Shape{B, 1, N, D});
  }
}

TEST_CASE("layers router: keep_one_route_dim keeps a route dim of 1") {
  Generator gen(5);
  CoordinateDescentRouter router(4, {}, gen);
  Tensor x = randn64({2, 9, 4}, 6).to(DType::f32);
  RouterReturn a = router.forward(x, 3);
  RouterReturn b = router.forward(x, 3, {}, {.keep_one_route_dim = true});
  CHECK(b.indices.shape() == Shape{2, 1, 3});
  CHECK(b.routed_tokens.shape() == Shape{2, 1, 3, 4});
  CHECK(b.indices.squeeze(1).contiguous().to_vector<int64_t>() == a.indices.to_vector<int64_t>());
}

TEST_CASE("layers router: multiple routes gather per batch and route (package bug fixed)") {
  // The package gathers from a (b r)-repeated x with a batch range of size B: for
  // B > 1 and R > 1 batch b's route tokens come from x[b // R]. Here they come from x[b].
  const int64_t B = 3, N = 10, D = 5, R = 2;
  Generator gen(9);
  CoordinateDescentRouter router(D, {.num_routing_tokens = R}, gen);
  router.to(DType::f64);
  Tensor x = randn64({B, N, D}, 10);
  Tensor mask = random_mask(B, N, 0.8, 12);
  RouterReturn r = router.forward(x, 4, mask);
  check_gathered(r, x, mask);
  // Routes differ (different routing tokens see different tokens).
  CHECK(r.indices.select(1, 0).contiguous().to_vector<int64_t>() !=
        r.indices.select(1, 1).contiguous().to_vector<int64_t>());
}

TEST_CASE("layers router: block routing returns global indices inside each block") {
  const int64_t B = 2, D = 4, w = 8;
  for (int64_t N : {32, 37}) {  // 37: the 5-token tail is never routed
    for (int64_t R : {1, 2}) {
      INFO("N " << N << " R " << R);
      Generator gen(20 + N + R);
      CoordinateDescentRouter router(D, {.num_routing_tokens = R, .route_block_size = w}, gen);
      router.to(DType::f64);
      Tensor x = randn64({B, N, D}, 21);
      Tensor mask = random_mask(B, N, 0.9, 22);
      const int64_t nt = 10, nb = N / w, per = (nt + nb - 1) / nb;  // 4 blocks, 3 per block
      RouterReturn r = router.forward(x, nt, mask);
      Tensor idx3 = R > 1 ? r.indices : r.indices.unsqueeze(1);
      CHECK(idx3.shape() == Shape{B, R, nb * per});
      CHECK(r.scores.shape() == r.indices.shape());
      std::vector<int64_t> v = idx3.contiguous().to_vector<int64_t>();
      bool inside = true;
      for (int64_t row = 0; row < B * R; ++row)
        for (int64_t blk = 0; blk < nb; ++blk)
          for (int64_t j = 0; j < per; ++j) {
            int64_t i = v[row * nb * per + blk * per + j];
            inside = inside && i >= blk * w && i < (blk + 1) * w;
          }
      CHECK(inside);
      CHECK(distinct_rows(r.indices));
      check_gathered(r, x, mask);
      // Each block's choice equals routing that block alone.
      for (int64_t b = 0; b < B; ++b)
        for (int64_t blk = 0; blk < nb; ++blk) {
          std::vector<bool> keep;
          for (int64_t i = 0; i < w; ++i) keep.push_back(mask.select(0, b).select(0, blk * w + i).item<bool>());
          for (int64_t rr = 0; rr < R; ++rr) {
            OracleRow o = oracle_row(row_of(x, b, blk * w, w), router.routing_token.select(0, rr).contiguous().to_vector<double>(),
                                     keep, w, D, per, router.config());
            std::vector<int64_t> got(v.begin() + (b * R + rr) * nb * per + blk * per,
                                     v.begin() + (b * R + rr) * nb * per + (blk + 1) * per);
            for (int64_t& g : got) g -= blk * w;
            CHECK(got == o.idx);
          }
        }
    }
  }
  Generator gen(1);
  CoordinateDescentRouter router(D, {.route_block_size = 16}, gen);
  CHECK_THROWS_WITH_AS(router.forward(randn({1, 12, D}), 4), doctest::Contains("longer than the sequence"), Error);
  CHECK_THROWS_WITH_AS(router.forward(randn({1, 20, D}), 18), doctest::Contains("per block"), Error);
}

TEST_CASE("layers router: learned routing tokens are passed to the call") {
  const int64_t B = 2, N = 11, D = 4;
  Generator gen(30);
  CoordinateDescentRouter learned(D, {.num_routing_tokens = 2, .learned_routing_tokens = true}, gen);
  CHECK(learned.named_parameters().empty());
  CHECK(learned.state_dict().empty());
  CoordinateDescentRouter fixed(D, {.num_routing_tokens = 2}, gen);
  fixed.to(DType::f64);
  Tensor x = randn64({B, N, D}, 31);
  CHECK_THROWS_WITH_AS(learned.forward(x, 3), doctest::Contains("routing_tokens"), Error);
  CHECK_THROWS_AS(fixed.forward(x, 3, {}, {.routing_tokens = randn64({B, 2, D}, 1)}), Error);
  // The same tokens for every batch row give the fixed router's choice.
  Tensor toks = fixed.routing_token.detach().unsqueeze(0).expand({B, 2, D}).contiguous();
  RouterReturn a = learned.forward(x, 3, {}, {.routing_tokens = toks});
  RouterReturn b = fixed.forward(x, 3);
  CHECK(a.indices.to_vector<int64_t>() == b.indices.to_vector<int64_t>());
  // (B, D) tokens: one route, with keep_one_route_dim a route dim of 1.
  CoordinateDescentRouter one(D, {.learned_routing_tokens = true}, gen);
  RouterReturn c = one.forward(x, 3, {}, {.routing_tokens = randn64({B, D}, 32)});
  CHECK(c.indices.shape() == Shape{B, 3});
  // Block routing repeats the tokens per block.
  CoordinateDescentRouter blk(D, {.learned_routing_tokens = true, .route_block_size = 4}, gen);
  RouterReturn d = blk.forward(x, 4, {}, {.routing_tokens = randn64({B, D}, 33)});
  CHECK(d.indices.shape() == Shape{B, 4});
}

TEST_CASE("layers router: random_route is a negative control") {
  const int64_t B = 2, N = 40, D = 4, nt = 6;
  Generator gen(40);
  CoordinateDescentRouter router(D, {}, gen);
  router.to(DType::f64);
  Tensor x = randn64({B, N, D}, 41);
  Tensor mask = random_mask(B, N, 0.6, 42);
  RouterReturn base = router.forward(x, nt, mask);
  Generator g1(7), g2(7), g3(8);
  RouterReturn r1 = router.forward(x, nt, mask, {.random_route = true, .generator = &g1});
  RouterReturn r2 = router.forward(x, nt, mask, {.random_route = true, .generator = &g2});
  RouterReturn r3 = router.forward(x, nt, mask, {.random_route = true, .generator = &g3});
  CHECK(r1.indices.to_vector<int64_t>() != base.indices.to_vector<int64_t>());
  CHECK(r1.indices.to_vector<int64_t>() == r2.indices.to_vector<int64_t>());  // reproducible from the seed
  CHECK(r1.indices.to_vector<int64_t>() != r3.indices.to_vector<int64_t>());
  // masked tokens are never picked while enough tokens are kept; scores exactly 1
  CHECK(r1.routed_mask.to_vector<bool>() == std::vector<bool>(B * nt, true));
  CHECK(min(r1.scores).item<double>() == 1.0);
  CHECK(max(r1.scores).item<double>() == 1.0);
  // without a mask (the package needs one)
  RouterReturn r4 = router.forward(x, nt, {}, {.random_route = true, .generator = &g1});
  CHECK(distinct_rows(r4.indices));
}

TEST_CASE("layers router: straight-through scores are exactly 1 with the coordinate-descent gradient") {
  const int64_t B = 2, N = 12, D = 5, nt = 4;
  Generator gen(50);
  auto st = std::make_shared<CoordinateDescentRouter>(D, RouterConfig{.straight_through = true}, gen);
  auto soft = std::make_shared<CoordinateDescentRouter>(D, RouterConfig{.straight_through = false}, gen);
  st->to(DType::f64);
  soft->to(DType::f64);
  soft->load_state_dict(st->state_dict());
  Tensor x = randn64({B, N, D}, 51);
  Tensor mask = random_mask(B, N, 0.75, 52);
  mask.select(0, 0).fill_(0.0);  // row 0: 2 kept tokens < nt
  mask.select(0, 0).narrow(0, 5, 2).fill_(1.0);
  RouterReturn a = st->forward(x, nt, mask);
  RouterReturn b = soft->forward(x, nt, mask);
  CHECK(a.indices.to_vector<int64_t>() == b.indices.to_vector<int64_t>());
  std::vector<double> sa = a.scores.to_vector<double>();
  std::vector<bool> ma = a.routed_mask.to_vector<bool>();
  for (size_t i = 0; i < sa.size(); ++i) CHECK(sa[i] == (ma[i] ? 1.0 : 0.0));
  CHECK(std::count(ma.begin(), ma.begin() + nt, false) == 2);
  // d(sum w * scores)/d(routing_token) is the soft router's where the token is kept.
  Tensor w = randn64({B, nt}, 53);
  Tensor wk = where(a.routed_mask, w, 0.0);
  sum(a.scores * w).backward();
  sum(b.scores * wk).backward();
  Tensor ga = st->routing_token.grad(), gb = soft->routing_token.grad();
  REQUIRE(ga.defined());
  REQUIRE(gb.defined());
  CHECK(max(abs(ga)).item<double>() > 0);
  check_close(ga, gb, 1e-10, 1e-12);
}

TEST_CASE("layers router: invalid configurations throw at construction") {
  Generator gen(60);
  auto bad = [&](int64_t dim, RouterConfig c, const char* msg) {
    CHECK_THROWS_WITH_AS(CoordinateDescentRouter(dim, c, gen), doctest::Contains(msg), Error);
  };
  bad(0, {}, "dim must be positive");
  bad(4, {.fetch_k_ratio = 0.9}, "fetch_k_ratio");
  bad(4, {.n_iters = 0}, "n_iters");
  bad(4, {.eps = 0}, "eps must be");
  bad(4, {.eps_decay = 1.5}, "eps_decay");
  bad(4, {.eps_init = -1.0}, "eps_init");
  bad(4, {.num_routing_tokens = 0}, "num_routing_tokens");
  bad(4, {.route_block_size = 0}, "route_block_size");
  CoordinateDescentRouter ok(4, {}, gen);
  CHECK_THROWS_AS(ok.forward(randn({2, 8, 5}), 3), Error);             // wrong dim
  CHECK_THROWS_AS(ok.forward(randn({2, 8, 4}), 0), Error);             // num_tokens
  CHECK_THROWS_AS(ok.forward(randn({2, 8, 4}), 3, ones({2, 8})), Error);  // float mask
  CHECK(ok.named_parameters().size() == 1);
  CHECK(ok.named_parameters()[0].first == "routing_token");
  CHECK(ok.routing_token.shape() == Shape{1, 4});
}

TEST_CASE("layers router: f64 gradcheck of the scores (soft, routes, mask, blocks, cosine sim)") {
  // Learned routing tokens let gradcheck perturb the tokens as inputs; gentle
  // coordinate-descent settings keep the finite differences well conditioned.
  struct Case {
    int64_t R;
    bool masked, cosine;
    std::optional<int64_t> block;
  };
  for (Case c : {Case{1, false, false, {}}, Case{2, true, false, {}}, Case{2, true, true, {}}, Case{1, true, false, 4}}) {
    INFO("R " << c.R << " masked " << c.masked << " cosine " << c.cosine << " block " << c.block.value_or(0));
    RouterConfig cfg{.n_iters = 6, .eps = 0.3, .eps_decay = 0.9, .eps_init = 1.0, .num_routing_tokens = c.R,
                     .learned_routing_tokens = true, .cosine_sim_routing = c.cosine, .cosine_sim_scale = 3.0,
                     .route_block_size = c.block, .straight_through = false};
    Generator gen(70);
    CoordinateDescentRouter router(3, cfg, gen);
    Tensor x = rleaf({2, 12, 3}, 71);
    Tensor toks = rleaf({2, c.R, 3}, 72);
    Tensor mask = c.masked ? random_mask(2, 12, 0.7, 73) : Tensor();
    check_grad(
        [&](const std::vector<Tensor>& in) {
          RouterReturn r = router.forward(in[0], 4, mask, {.routing_tokens = in[1]});
          // scores and routed tokens weighted by them (gradients to x through both)
          Tensor s = r.scores.unsqueeze(-1);
          return (r.routed_tokens * s).flatten();
        },
        {x, toks}, {.eps = 1e-6, .atol = 1e-6, .rtol = 1e-4});
  }
}
