// ConditionalRoutedAutoregressiveAttention (SPEC §4) on the CPU.
//
// - state-dict keys against a list written by hand from SPEC §4 (PyTorch order)
// - the layer (scores computed once, routed keys/values gathered from one
//   projection of x) against a naive oracle written here the package's way:
//   a copy of the whole padded sequence per window, the CoordinateDescentRouter
//   on those copies with a prefix mask, heavy_attn.forward on the routed tokens
// - invariants: window 0 is the light branch alone; causality (perturbing
//   x at t changes nothing before t); no routing when the numbers of heavy
//   tokens cover the window / sequence
// - f64 gradchecks with routing active and inactive
// - memory: peak bytes of forward + backward grow like N, not N^2 / W, and stay
//   below the size of one per-window copy of the sequence
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <functional>
#include <set>

#include "helpers.h"
#include "layers/routed_autoregressive_attention.h"

using namespace colt5;
using namespace colt5::testing;

namespace {

const Options kF64{.dtype = DType::f64};
const RouterConfig kSoft{.n_iters = 6, .eps = 0.3, .eps_decay = 0.9, .eps_init = 1.0};

Tensor randn64(const Shape& s, uint64_t seed, double scale = 1.0) {
  Generator g(seed);
  return randn(s, g, kF64) * scale;
}

std::vector<std::string> param_names(const Module& m) {
  std::vector<std::string> out;
  for (const auto& [n, t] : m.named_parameters()) out.push_back(n);
  return out;
}


// The package's algorithm, literally: every window's key/value row is a copy of
// the whole padded sequence with a prefix mask, routed by the router class.
Tensor naive_autoregressive(const ConditionalRoutedAutoregressiveAttention& m, const Tensor& x, int64_t ntq,
                            int64_t ntkv) {
  const auto& c = m.config();
  const int64_t B = x.size(0), N = x.size(1), D = x.size(2), W = m.heavy_window_size();
  const int64_t nw = (N + W - 1) / W, Np = nw * W, nwq = nw - 1, rows = B * nwq;
  Tensor light = m.light_attn->forward(x);
  if (nw <= 1) return light;
  Tensor xp = Np > N ? cat({x, zeros({B, Np - N, D}, kF64)}, 1) : x;
  // queries: windows 1.., padding masked
  Tensor xq = xp.narrow(1, W, Np - W).reshape({rows, W, D});
  std::vector<bool> qm, km;
  std::vector<double> qoff, qall;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 0; j < nwq; ++j) {
      qoff.push_back(static_cast<double>((j + 1) * W));
      for (int64_t t = 0; t < W; ++t) {
        qm.push_back((j + 1) * W + t < N);
        qall.push_back(static_cast<double>((j + 1) * W + t));
      }
      for (int64_t t = 0; t < Np; ++t) km.push_back(t < (j + 1) * W);
    }
  Tensor qmask = Np > N ? from_vector_bool(qm, {rows, W}) : Tensor();
  RouterReturn rq = m.q_router->forward(xq, ntq, qmask);
  Tensor xkv = xp.unsqueeze(1).expand({B, nwq, Np, D}).reshape({rows, Np, D});  // the per-window copies
  RouterReturn rkv = m.kv_router->forward(xkv, ntkv, from_vector_bool(km, {rows, Np}));
  AttentionCall ac;
  ac.context = rkv.routed_tokens;
  ac.mask = rkv.routed_mask;
  ac.scores_kv = rkv.scores;
  if (c.multiply_queries_by_score) ac.scores_q = rq.scores;
  if (m.rotary_emb) {
    ac.rotary_inv_freq = m.rotary_emb->inv_freq;
    ac.q_positions = rq.routed() ? rq.indices + from_vector(qoff, {rows, 1}, {.dtype = DType::i64})
                                 : from_vector(qall, {rows, W}, {.dtype = DType::i64});
    ac.k_positions = rkv.routed() ? rkv.indices : arange(Np);
  }
  Tensor out = m.heavy_attn->forward(rq.routed_tokens, ac);
  Tensor heavy;
  if (rq.routed()) {
    Tensor base = m.null_q_token.defined() ? m.null_q_token.view({1, 1, D}).expand({rows, W, D})
                                           : zeros({rows, W, D}, kF64);
    heavy = route_back_scaled(base, out, rq.indices, rq.scores);
  } else {
    heavy = out;
  }
  heavy = cat({zeros({B, W, D}, kF64), heavy.reshape({B, nwq * W, D})}, 1).narrow(1, 0, N);
  return light + heavy;
}

std::vector<std::string> ar_keys(bool null_q, bool rotary) {
  std::vector<std::string> k;
  if (null_q) k.push_back("null_q_token");
  for (const char* s : {"light_attn.norm.weight", "light_attn.norm.bias", "light_attn.to_qkv.weight",
                        "light_attn.to_out.weight", "q_router.routing_token", "kv_router.routing_token",
                        "heavy_attn.null_kv", "heavy_attn.norm.gamma", "heavy_attn.to_q.weight",
                        "heavy_attn.to_kv.weight", "heavy_attn.to_out.weight"})
    k.push_back(s);
  if (rotary) k.push_back("rotary_emb.inv_freq");
  return k;
}

using ARConfig = ConditionalRoutedAutoregressiveAttentionConfig;

ARConfig small_config(int64_t D, int64_t W, int64_t ntq, int64_t ntkv, int64_t R) {
  return {.dim = D, .num_heavy_tokens_q = ntq, .num_heavy_tokens_kv = ntkv, .num_routed_kv = R,
          .light_dim_head = 3, .light_heads = 2, .light_window_size = W, .heavy_dim_head = 4, .heavy_heads = 4};
}

}  // namespace

TEST_CASE("layers autoregressive: keys, shapes, configuration errors") {
  Generator gen(1);
  const int64_t D = 8;
  for (bool null_q : {true, false})
    for (bool rotary : {false, true}) {
      ARConfig c = small_config(D, 4, 2, 3, 2);
      c.use_null_q_tokens = null_q;
      c.rotary_emb = rotary;
      ConditionalRoutedAutoregressiveAttention a(c, gen);
      std::vector<std::string> torch_order = ar_keys(null_q, rotary), params;
      for (const auto& k : torch_order)
        if (k != "rotary_emb.inv_freq") params.push_back(k);
      CHECK(param_names(a) == params);
      std::vector<std::string> sorted = torch_order, keys;
      std::sort(sorted.begin(), sorted.end());
      for (const auto& [k, t] : a.state_dict()) keys.push_back(k);
      CHECK(keys == sorted);
      CHECK(a.get("kv_router.routing_token").shape() == Shape{2, D});
      CHECK(a.get("heavy_attn.to_kv.weight").shape() == Shape{32, D});
      CHECK(a.get("light_attn.to_qkv.weight").shape() == Shape{18, D});
      CHECK(a.light_attn->config().causal);
      CHECK(a.light_attn->config().window_size == 4);
      CHECK(a.heavy_window_size() == 4);
      Generator gx(2);
      CHECK(a.forward(randn({2, 13, D}, gx)).shape() == Shape{2, 13, D});
      CHECK(a.forward(randn({1, 3, D}, gx)).shape() == Shape{1, 3, D});  // one window: light only
    }
  auto bad = [&](ARConfig c, const char* msg) {
    CHECK_THROWS_WITH_AS(ConditionalRoutedAutoregressiveAttention(c, gen), doctest::Contains(msg), Error);
  };
  ARConfig c = small_config(D, 4, 2, 3, 3);
  bad(c, "divisible");
  c = small_config(D, 4, 2, 3, 1);
  c.heavy_window_size = 0;
  bad(c, "heavy_window_size");
  c = small_config(D, 0, 2, 3, 1);
  bad(c, "light_window_size");
  c = small_config(D, 4, 0, 3, 1);
  bad(c, "num_heavy_tokens");
  c = small_config(D, 4, 2, 3, 1);
  c.router_kwargs.route_block_size = 4;
  bad(c, "route_block_size");
  c = small_config(D, 4, 2, 3, 1);
  c.router_kwargs.num_routing_tokens = 2;
  bad(c, "num_routing_tokens");
}

TEST_CASE("layers autoregressive: equals the naive per-window implementation") {
  struct Case {
    const char* name;
    int64_t N, W, ntq, ntkv, R;
    bool rotary, mul_q, mul_k, null_q, straight;
    std::optional<int64_t> heavy_w;
  };
  const std::vector<Case> cases = {
      {"routed, N multiple of W", 16, 4, 2, 5, 2, false, false, false, true, true, {}},
      {"routed, padded last window, rotary, scores on q and k", 19, 4, 2, 5, 2, true, true, true, true, true, {}},
      {"soft scores, one route, no null_q_token", 17, 4, 3, 6, 1, true, true, false, false, false, {}},
      {"queries not routed (ntq >= W)", 14, 4, 4, 3, 2, false, false, false, true, true, {}},
      {"key/values not routed (ntkv >= N_pad)", 14, 4, 2, 16, 2, true, false, false, true, true, {}},
      {"nothing routed", 10, 4, 8, 40, 1, false, true, false, true, false, {}},
      {"heavy window larger than the light one", 21, 3, 2, 4, 2, false, false, false, true, true, 5},
  };
  for (const auto& k : cases) {
    INFO(k.name);
    ARConfig c = small_config(8, k.W, k.ntq, k.ntkv, k.R);
    c.heavy_window_size = k.heavy_w;
    c.rotary_emb = k.rotary;
    c.multiply_queries_by_score = k.mul_q;
    c.multiply_keys_by_score = k.mul_k;
    c.use_null_q_tokens = k.null_q;
    c.router_straight_through = k.straight;
    if (!k.straight) c.router_kwargs = kSoft;
    for (int64_t chunk : {int64_t(64) << 20, int64_t(1), int64_t(2000)}) {  // all windows / one / a few per chunk
      INFO("heavy_chunk_bytes " << chunk);
      c.heavy_chunk_bytes = chunk;
      Generator g(10);
      ConditionalRoutedAutoregressiveAttention a(c, g);
      a.to(DType::f64);
      Tensor x = randn64({2, k.N, 8}, 11);
      Tensor y = a.forward(x);
      Tensor want = naive_autoregressive(a, x, k.ntq, k.ntkv);
      check_close(y, want, 1e-9, 1e-11);
    }
  }
}

TEST_CASE("layers autoregressive: window 0 is the light branch; causality") {
  Generator gen(20);
  const int64_t D = 8, W = 4, N = 18;
  ConditionalRoutedAutoregressiveAttention a(small_config(D, W, 2, 5, 2), gen);
  a.to(DType::f64);
  Tensor x = randn64({2, N, D}, 21);
  Tensor y = a.forward(x);
  check_close(y.narrow(1, 0, W), a.light_attn->forward(x).narrow(1, 0, W), 0, 0);
  // the heavy branch does contribute after window 0
  CHECK(max(abs(y - a.light_attn->forward(x))).item<double>() > 1e-3);

  auto perturbed = [&](int64_t t, double delta) {
    Tensor xt = x.clone();
    Tensor row = xt.select(1, t);
    row.copy_(row + randn64({2, D}, 100 + t, delta));
    return a.forward(xt);
  };
  SUBCASE("a large change at a window start changes nothing before it") {
    for (int64_t t : {W, 2 * W, 4 * W}) {
      INFO("t = " << t);
      Tensor yt = perturbed(t, 3.0);
      check_close(yt.narrow(1, 0, t), y.narrow(1, 0, t), 0, 0);
      CHECK(max(abs(yt.narrow(1, t, N - t) - y.narrow(1, t, N - t))).item<double>() > 1e-6);
    }
  }
  SUBCASE("a small change anywhere changes nothing before it (straight-through scores)") {
    // Within a window the query router sees every token of the window (the
    // package's design), so a change large enough to alter which queries are
    // picked can move earlier outputs of the same window; a small one cannot.
    for (int64_t t = 1; t < N; ++t) {
      INFO("t = " << t);
      Tensor yt = perturbed(t, 1e-4);
      check_close(yt.narrow(1, 0, t), y.narrow(1, 0, t), 0, 1e-13);
    }
  }
}

TEST_CASE("layers autoregressive: the reported picks are where the heavy branch acted") {
  Generator gen(30);
  const int64_t D = 8, W = 4, N = 18, ntq = 2, ntkv = 3, R = 2;
  ConditionalRoutedAutoregressiveAttention a(small_config(D, W, ntq, ntkv, R), gen);
  a.to(DType::f64);
  Tensor x = randn64({2, N, D}, 31);
  const int64_t nwq = (N + W - 1) / W - 1;  // windows 1..4 (the last one partial: 2 tokens)
  for (bool random : {false, true}) {
    INFO("random_route = " << random);
    Generator noise(32);
    RoutedPicks picks;
    RoutedAttentionCall call;
    call.route.random_route = random;
    call.route.generator = &noise;
    call.picks = &picks;
    Tensor y = a.forward(x, call);
    REQUIRE(picks.q_indices.defined());
    REQUIRE(picks.kv_indices.defined());
    CHECK(picks.q_indices.shape() == Shape{2, nwq, ntq});
    CHECK(picks.kv_indices.shape() == Shape{2, nwq, R * ntkv});
    const std::vector<int64_t> qi = picks.q_indices.to_vector<int64_t>(), ki = picks.kv_indices.to_vector<int64_t>();
    // Queries not picked in windows >= 1 get the null_q_token as their heavy
    // output (zeros in window 0): the output minus the light branch minus that
    // base is nonzero exactly at the picked queries.
    Tensor base = cat({zeros({2, W, D}, kF64), a.null_q_token.view({1, 1, D}).expand({2, N - W, D})}, 1);
    const Tensor dt = sum(abs(y - a.light_attn->forward(x) - base), {-1});
    REQUIRE(dt.shape() == Shape{2, N});
    const std::vector<double> diff = dt.to_vector<double>();
    for (int64_t b = 0; b < 2; ++b) {
      std::set<int64_t> picked;
      for (int64_t w = 0; w < nwq; ++w) {
        for (int64_t j = 0; j < ntq; ++j) {
          const int64_t t = qi[(b * nwq + w) * ntq + j];
          CHECK(t >= (w + 1) * W);   // inside its own window ...
          CHECK(t < (w + 2) * W);
          if (t < N) picked.insert(t);  // (the short last window's padding is masked; never picked here)
          CHECK(t < N);
        }
        for (int64_t j = 0; j < R * ntkv; ++j) {
          const int64_t k = ki[(b * nwq + w) * R * ntkv + j];
          CHECK(k >= 0);
          CHECK(k < (w + 1) * W);  // before the window (every window has >= ntkv earlier tokens here)
        }
      }
      for (int64_t t = 0; t < N; ++t) {
        INFO("b = " << b << ", t = " << t);
        if (picked.count(t))
          CHECK(diff[b * N + t] > 1e-6);
        else
          CHECK(diff[b * N + t] <= 1e-12);
      }
    }
  }
  // No routing (enough heavy tokens for every window and the whole sequence): nothing reported.
  ConditionalRoutedAutoregressiveAttention all(small_config(D, W, W, 64, 1), gen);
  RoutedPicks none{randn({1}), randn({1})};
  RoutedAttentionCall c2;
  c2.picks = &none;
  all.forward(x.to(DType::f32), c2);
  CHECK(!none.q_indices.defined());
  CHECK(!none.kv_indices.defined());
}

TEST_CASE("layers autoregressive: f64 gradcheck, routing active and inactive") {
  Generator gen(30);
  ARConfig c{.dim = 4, .num_heavy_tokens_q = 2, .num_heavy_tokens_kv = 3, .num_routed_kv = 2, .light_dim_head = 2,
             .light_heads = 2, .light_window_size = 3, .heavy_dim_head = 2, .heavy_heads = 2,
             .router_straight_through = false, .router_kwargs = kSoft, .multiply_keys_by_score = true,
             .multiply_queries_by_score = true, .rotary_emb = true};
  ConditionalRoutedAutoregressiveAttention a(c, gen);
  a.to(DType::f64);
  Tensor x = rleaf({1, 8, 4}, 31);
  SUBCASE("routing active (soft scores)") { module_gradcheck(a, {{"x", x}}, [&] { return a.forward(x); }); }
  SUBCASE("routing active, one window per checkpointed chunk") {
    c.heavy_chunk_bytes = 1;
    Generator g1(30);
    ConditionalRoutedAutoregressiveAttention a1(c, g1);
    a1.to(DType::f64);
    Tensor x1 = rleaf({2, 10, 4}, 35);
    module_gradcheck(a1, {{"x", x1}}, [&] { return a1.forward(x1); });
  }
  SUBCASE("routing inactive") {
    module_gradcheck(a, {{"x", x}}, [&] {
      return a.forward(x, {.num_heavy_tokens_q = 3, .num_heavy_tokens_kv = 9});
    });
  }
  SUBCASE("straight-through scores, default router settings: gradients equal the naive oracle's") {
    // (finite differences see no dependence on the routers through scores that are exactly 1;
    // the straight-through gradient is compared with autograd through the naive implementation)
    for (int64_t chunk : {int64_t(64) << 20, int64_t(1)}) {  // every window in one chunk / one per chunk
      INFO("heavy_chunk_bytes " << chunk);
      Generator g2(32);
      ConditionalRoutedAutoregressiveAttention s({.dim = 4, .num_heavy_tokens_q = 2, .num_heavy_tokens_kv = 3,
                                                  .num_routed_kv = 2, .light_dim_head = 2, .light_heads = 2,
                                                  .light_window_size = 3, .heavy_dim_head = 2, .heavy_heads = 2,
                                                  .heavy_chunk_bytes = chunk},
                                                 g2);
      s.to(DType::f64);
      Tensor xs = rleaf({2, 11, 4}, 33);
      Tensor w = randn64({2, 11, 4}, 34);
      auto grads = [&](bool naive) {
        s.zero_grad();
        xs.zero_grad();
        Tensor y = naive ? naive_autoregressive(s, xs, 2, 3) : s.forward(xs);
        y.backward(w);
        std::vector<Tensor> g;
        for (const auto& [n, t] : s.named_parameters()) g.push_back(t.grad().defined() ? t.grad().clone() : zeros_like(t));
        g.push_back(xs.grad().clone());
        return g;
      };
      std::vector<Tensor> ga = grads(false), gb = grads(true);
      REQUIRE(ga.size() == gb.size());
      for (size_t i = 0; i < ga.size(); ++i) check_close(ga[i], gb[i], 1e-9, 1e-11);
    }
  }
}

TEST_CASE("layers autoregressive: memory of forward + backward grows like N, not N^2 / W") {
  // f32, D = 64, W = 32, 4 routed queries / 16 routed key/values per window, 2 routes.
  Generator gen(40);
  const int64_t D = 64, W = 32;
  ConditionalRoutedAutoregressiveAttention a({.dim = D, .num_heavy_tokens_q = 4, .num_heavy_tokens_kv = 16,
                                              .num_routed_kv = 2, .light_dim_head = 16, .light_heads = 4,
                                              .light_window_size = W, .heavy_dim_head = 16, .heavy_heads = 4},
                                             gen);
  auto peak = [&](int64_t N) {
    Generator g(41);
    Tensor x = randn({1, N, D}, g, {.requires_grad = true});
    const int64_t before = memory_stats(Device::cpu()).current_bytes;
    reset_peak_memory(Device::cpu());
    {
      Tensor y = a.forward(x);
      sum(y).backward();
    }
    const int64_t p = memory_stats(Device::cpu()).peak_bytes - before;
    a.zero_grad();
    return p;
  };
  const int64_t N1 = 512, N2 = 2048;
  const int64_t p1 = peak(N1), p2 = peak(N2);
  const double one_copy = static_cast<double>(N2 / W) * N2 * D * 4;  // one per-window copy of x at N2 (f32)
  INFO("peak at N = " << N1 << ": " << p1 << " bytes, at N = " << N2 << ": " << p2
                      << " bytes; one per-window copy of x: " << one_copy << " bytes");
  MESSAGE("autoregressive fwd+bwd peak: N=" << N1 << " " << p1 << " B, N=" << N2 << " " << p2
                                               << " B, one per-window copy " << one_copy << " B");
  CHECK(p1 > 0);
  // linear terms give 4x, the package's per-window copies 16x; the (B, nw-1, R, N_pad) score rows
  // (no D) are the only quadratic term and stay small
  CHECK(static_cast<double>(p2) < 7.0 * static_cast<double>(p1));
  CHECK(static_cast<double>(p2) < one_copy / 3);
}
