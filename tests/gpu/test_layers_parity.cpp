// CPU / GPU parity of the CoLT5 layers: each layer built twice from the same
// seed (one moved to the GPU), the same f32 inputs, forward compared, then the
// same random output gradient backpropagated on both and every parameter's
// gradient (by state-dict name) and the input's gradient compared. Routers'
// choices are compared exactly first (the GPU top-k is bit-identical to the
// CPU one on identical scores). Runs only with a GPU (tests/gpu/main.cpp exits
// 77 otherwise).
//
// Error metric: ||gpu - cpu|| / ||cpu|| per tensor (and NaN / inf must not
// appear). Tolerances (f32 on both devices; the CPU is not the exact answer
// either, so these bound the sum of both devices' rounding):
//   no attention kernel, or heavy / self attention with allow_tf32 = false:
//       forward 1e-4, gradients 1e-3 (coordinate descent's backward amplifies
//       rounding by ~1 / eps)
//   layers with the light branch (the CUDA local-attention kernel runs f32 on
//   TF32 tensor cores, no switch) or heavy attention with TF32 on (default):
//       forward 5e-3, gradients 2e-2
// Routed layers use soft router settings (eps 0.3) where TF32 noise feeds a
// router (the block's feed-forward router sees attention output): the CPU and
// GPU must pick the same tokens for a comparison to mean anything, and soft
// scores keep the selection boundary away from rounding-level ties.
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "colt5.h"
#include "gpu/layer_parity.h"

using namespace colt5;
using namespace colt5::layer_parity;

TEST_CASE("gpu layers parity: CoordinateDescentRouter (routes, mask, blocks, cosine, straight-through)") {
  struct Case {
    const char* name;
    RouterConfig cfg;
    int64_t N, nt;
  };
  std::vector<Case> cases = {
      {"default", {}, 64, 8},
      {"2 routes", {.num_routing_tokens = 2}, 64, 8},
      {"blocks", {.num_routing_tokens = 2, .route_block_size = 16}, 70, 12},
      {"cosine soft", {.cosine_sim_routing = true, .straight_through = false}, 64, 8},
      {"paper settings", {.n_iters = 50, .eps = 1.0, .eps_decay = 1.0, .eps_init = std::nullopt}, 64, 8},
  };
  for (const Case& c : cases) {
    INFO(c.name);
    auto [rc, rg] = twins<CoordinateDescentRouter>(1, [&](Generator& g) {
      return std::make_shared<CoordinateDescentRouter>(16, c.cfg, g);
    });
    Tensor x = rnd({2, c.N, 16}, 2), mask = rmask(2, c.N, 0.8, 3);
    Tensor xc = x.clone().requires_grad_(), xg = x.to(kGpu).requires_grad_();
    RouterReturn a = rc->forward(xc, c.nt, mask), b = rg->forward(xg, c.nt, mask.to(kGpu));
    expect_equal_idx(b.indices, a.indices, std::string(c.name) + ": indices");
    expect_near(b.scores, a.scores, kFwdTight, std::string(c.name) + ": scores");
    expect_near(b.routed_tokens, a.routed_tokens, 0.0, std::string(c.name) + ": routed tokens (exact)");
    CHECK(b.routed_mask.to(Device::cpu()).to_vector<bool>() == a.routed_mask.to_vector<bool>());
    Tensor w = rnd(a.scores.shape(), 4);
    Tensor lc = sum(a.scores * w) + sum(a.routed_tokens * a.routed_tokens);
    Tensor lg = sum(b.scores * w.to(kGpu)) + sum(b.routed_tokens * b.routed_tokens);
    lc.backward();
    lg.backward();
    expect_near(rg->routing_token.grad(), rc->routing_token.grad(), kBwdTight, std::string(c.name) + ": d routing_token");
    expect_near(xg.grad(), xc.grad(), kBwdTight, std::string(c.name) + ": d x");
  }
}

TEST_CASE("gpu layers parity: FeedForward, heavy Attention, SelfAttention (TF32 off)") {
  {
    auto [c, g] = twins<FeedForward>(10, [](Generator& gen) { return std::make_shared<FeedForward>(32, 4, gen); });
    parity<FeedForward>("FeedForward", *c, *g, rnd({2, 9, 32}, 11), {},
                        [](FeedForward& m, const Tensor& x, const Tensor&) { return m.forward(x); }, kFwdTight,
                        kBwdTight);
  }
  for (int64_t R : {1, 2}) {
    INFO("routes " << R);
    auto [c, g] = twins<Attention>(20, [](Generator& gen) {
      return std::make_shared<Attention>(
          AttentionConfig{.dim = 32, .dim_head = 16, .heads = 4, .multiply_keys_by_score = true, .allow_tf32 = false},
          gen);
    });
    const int64_t B = 2, Nq = 7, Nk = 11;
    Tensor ctx = rnd(R == 1 ? Shape{B, Nk, 32} : Shape{B, R, Nk, 32}, 21);
    Generator gg(22);
    Tensor mask = lt(rand(R == 1 ? Shape{B, Nk} : Shape{B, R, Nk}, gg), 0.7);
    Tensor skv = uniform(mask.shape(), 0.2, 1.0, gg), sq = uniform({B, Nq}, 0.2, 1.0, gg);
    Tensor qp = randint(0, 100, {B, Nq}, gg), kp = randint(0, 100, mask.shape(), gg);
    Tensor inv = rotary_inv_freq(16);
    auto call = [&](Attention& m, const Tensor& x, const Tensor&) {
      const Device d = x.device();
      return m.forward(x, {.context = ctx.to(d), .mask = mask.to(d), .scores_kv = skv.to(d), .scores_q = sq.to(d),
                           .rotary_inv_freq = inv.to(d), .q_positions = qp.to(d), .k_positions = kp.to(d)});
    };
    parity<Attention>("Attention", *c, *g, rnd({B, Nq, 32}, 23), {}, call, kFwdTight, kBwdTight);
  }
  {
    auto [c, g] = twins<SelfAttention>(30, [](Generator& gen) {
      return std::make_shared<SelfAttention>(
          SelfAttentionConfig{.dim = 32, .dim_head = 16, .heads = 2, .prenorm = true, .allow_tf32 = false}, gen);
    });
    parity<SelfAttention>("SelfAttention", *c, *g, rnd({3, 16, 32}, 31), {},
                          [](SelfAttention& m, const Tensor& x, const Tensor&) { return m.forward(x); }, kFwdTight,
                          kBwdTight);
  }
}

TEST_CASE("gpu layers parity: LocalMHA (non-causal exact and causal; TF32 kernel)") {
  for (bool causal : {false, true}) {
    INFO("causal " << causal);
    auto [c, g] = twins<LocalMHA>(40, [&](Generator& gen) {
      return std::make_shared<LocalMHA>(LocalMHAConfig{.dim = 32, .window_size = 8, .dim_head = 16, .heads = 2,
                                                       .causal = causal, .prenorm = true,
                                                       .exact_windowsize = !causal},
                                        gen);
    });
    parity<LocalMHA>("LocalMHA", *c, *g, rnd({2, 37, 32}, 41), rmask(2, 37, 0.8, 42),
                     [](LocalMHA& m, const Tensor& x, const Tensor& mask) { return m.forward(x, mask); }, kFwdTf32,
                     kBwdTf32);
  }
}

TEST_CASE("gpu layers parity: ConditionalRoutedFeedForward (routed and not, straight-through and soft)") {
  for (bool st : {true, false}) {
    INFO("straight-through " << st);
    auto [c, g] = twins<ConditionalRoutedFeedForward>(50, [&](Generator& gen) {
      return std::make_shared<ConditionalRoutedFeedForward>(
          ConditionalRoutedFeedForwardConfig{.dim = 32, .num_heavy_tokens = 12, .router_straight_through = st,
                                             .router_kwargs = st ? RouterConfig{} : kSoft},
          gen);
    });
    Tensor x = rnd({2, 40, 32}, 51), mask = rmask(2, 40, 0.8, 52);
    expect_equal_idx(g->router->forward(x.to(kGpu), 12, mask.to(kGpu)).indices,
                     c->router->forward(x, 12, mask).indices, "router indices");
    parity<ConditionalRoutedFeedForward>(
        "ConditionalRoutedFeedForward", *c, *g, x, mask,
        [](ConditionalRoutedFeedForward& m, const Tensor& x, const Tensor& mask) { return m.forward(x, mask); },
        kFwdTight, kBwdTight);
    parity<ConditionalRoutedFeedForward>(
        "ConditionalRoutedFeedForward (no routing)", *c, *g, x, mask,
        [](ConditionalRoutedFeedForward& m, const Tensor& x, const Tensor& mask) {
          return m.forward(x, mask, {.num_heavy_tokens = 40});
        },
        kFwdTight, kBwdTight);
  }
}

TEST_CASE("gpu layers parity: ConditionalRoutedAttention (2 kv routes, rotary, scores, null_q_token)") {
  for (bool light : {true, false}) {
    INFO("has_light_attn " << light);
    auto [c, g] = twins<ConditionalRoutedAttention>(60, [&](Generator& gen) {
      return std::make_shared<ConditionalRoutedAttention>(
          ConditionalRoutedAttentionConfig{.dim = 32, .num_heavy_tokens_q = 8, .num_heavy_tokens_kv = 16,
                                           .num_routed_kv = 2, .has_light_attn = light, .light_dim_head = 16,
                                           .light_heads = 2, .light_window_size = 8, .heavy_dim_head = 16,
                                           .heavy_heads = 4, .multiply_keys_by_score = true,
                                           .multiply_queries_by_score = true, .rotary_emb = true},
          gen);
    });
    Tensor x = rnd({2, 40, 32}, 61), mask = rmask(2, 40, 0.8, 62);
    expect_equal_idx(g->q_router->forward(x.to(kGpu), 8, mask.to(kGpu)).indices, c->q_router->forward(x, 8, mask).indices,
                     "q router indices");
    expect_equal_idx(g->kv_router->forward(x.to(kGpu), 16, mask.to(kGpu)).indices,
                     c->kv_router->forward(x, 16, mask).indices, "kv router indices");
    parity<ConditionalRoutedAttention>(
        "ConditionalRoutedAttention", *c, *g, x, mask,
        [](ConditionalRoutedAttention& m, const Tensor& x, const Tensor& mask) { return m.forward(x, mask); },
        kFwdTf32, kBwdTf32);
    parity<ConditionalRoutedAttention>(
        "ConditionalRoutedAttention (no routing)", *c, *g, x, mask,
        [](ConditionalRoutedAttention& m, const Tensor& x, const Tensor& mask) {
          return m.forward(x, mask, {.num_heavy_tokens_q = 40, .num_heavy_tokens_kv = 40});
        },
        kFwdTf32, kBwdTf32);
  }
}

TEST_CASE("gpu layers parity: ConditionalRoutedTransformerBlock") {
  auto [c, g] = twins<ConditionalRoutedTransformerBlock>(70, [](Generator& gen) {
    return std::make_shared<ConditionalRoutedTransformerBlock>(
        ConditionalRoutedTransformerBlockConfig{.dim = 32, .num_heavy_attn_tokens_q = 8,
                                                .num_heavy_attn_tokens_kv = 16, .num_routed_kv = 2,
                                                .num_heavy_ff_tokens = 12, .light_dim_head = 16, .light_heads = 2,
                                                .light_window_size = 8, .heavy_dim_head = 16, .heavy_heads = 4,
                                                .router_straight_through = false, .router_kwargs = kSoft},
        gen);
  });
  Tensor x = rnd({2, 40, 32}, 71), mask = rmask(2, 40, 0.8, 72);
  // the feed-forward router sees attention output (TF32 noise): check it agrees before comparing
  Tensor hc = c->conditional_attn->forward(x, mask) + x;
  Tensor hg = g->conditional_attn->forward(x.to(kGpu), mask.to(kGpu)) + x.to(kGpu);
  expect_equal_idx(g->conditional_ff->router->forward(hg, 12, mask.to(kGpu)).indices,
                   c->conditional_ff->router->forward(hc, 12, mask).indices, "feed-forward router indices");
  parity<ConditionalRoutedTransformerBlock>(
      "ConditionalRoutedTransformerBlock", *c, *g, x, mask,
      [](ConditionalRoutedTransformerBlock& m, const Tensor& x, const Tensor& mask) { return m.forward(x, mask); },
      kFwdTf32, kBwdTf32);
}
