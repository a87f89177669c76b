// ConditionalRoutedCrossAttention, ConditionalRoutedImageAttention and
// ConditionalRoutedViT (SPEC §4) on the CPU.
//
// - state-dict keys against lists written by hand from SPEC §4 (PyTorch order)
// - cross attention: no query routing returns the heavy output as is; routed
//   queries = heavy branch on the routed tokens times scores, others null_q_token;
//   block routing picks indices inside each block and gathers from the context
// - image attention: per-patch pipeline written by hand (patches cut with
//   narrow, light SelfAttention, routers and heavy attention per patch),
//   channel_first, global_routing, shape errors
// - ViT: patchify layout, position embedding values, logits shape, determinism
// - f64 gradchecks with routing active and inactive
#include <algorithm>
#include <cmath>
#include <functional>

#include "helpers.h"

using namespace colt5;
using namespace colt5::testing;

namespace {

const Options kF64{.dtype = DType::f64};
const RouterConfig kSoft{.n_iters = 6, .eps = 0.3, .eps_decay = 0.9, .eps_init = 1.0};

Tensor randn64(const Shape& s, uint64_t seed, double scale = 1.0) {
  Generator g(seed);
  return randn(s, g, kF64) * scale;
}

void check_keys(const Module& m, const std::vector<std::string>& torch_order) {
  std::vector<std::string> params, keys;
  for (const auto& [n, t] : m.named_parameters()) params.push_back(n);
  CHECK(params == torch_order);
  std::vector<std::string> sorted = torch_order;
  std::sort(sorted.begin(), sorted.end());
  for (const auto& [k, t] : m.state_dict()) keys.push_back(k);
  CHECK(keys == sorted);
}


const std::vector<std::string> kHeavyKeys = {"heavy_attn.null_kv", "heavy_attn.norm.gamma", "heavy_attn.to_q.weight",
                                             "heavy_attn.to_kv.weight", "heavy_attn.to_out.weight"};

// The routed pipeline on one batch of rows: routers, heavy attention, scatter into null_q_token.
Tensor routed_heavy(const CoordinateDescentRouter& qr, const CoordinateDescentRouter& kvr, const Attention& heavy,
                    const Tensor& null_q, const Tensor& xq, const Tensor& xkv, int64_t ntq, int64_t ntkv,
                    const Tensor& qmask, const Tensor& kvmask, bool mul_q) {
  RouterReturn rq = qr.forward(xq, ntq, qmask);
  RouterReturn rkv = kvr.forward(xkv, ntkv, kvmask);
  AttentionCall ac{.context = rkv.routed_tokens, .mask = rkv.routed_mask, .scores_kv = rkv.scores};
  if (mul_q) ac.scores_q = rq.scores;
  Tensor out = heavy.forward(rq.routed_tokens, ac);
  if (!rq.routed()) return out;
  const int64_t B = xq.size(0), N = xq.size(1), D = xq.size(2);
  Tensor base = null_q.defined() ? null_q.view({1, 1, D}).expand({B, N, D}) : zeros({B, N, D}, kF64);
  return route_back_scaled(base, out, rq.indices, rq.scores);
}

}  // namespace

// ============================================================ cross attention

TEST_CASE("layers cross: keys, shapes, configuration errors") {
  Generator gen(1);
  const int64_t D = 8;
  for (bool null_q : {true, false}) {
    ConditionalRoutedCrossAttention a({.dim = D, .num_tokens_q = 3, .num_tokens_kv = 4, .dim_head = 4, .heads = 4,
                                       .kv_routing_tokens = 2, .use_null_q_tokens = null_q},
                                      gen);
    std::vector<std::string> keys;
    if (null_q) keys.push_back("null_q_token");
    keys.push_back("q_router.routing_token");
    keys.push_back("kv_router.routing_token");
    keys.insert(keys.end(), kHeavyKeys.begin(), kHeavyKeys.end());
    check_keys(a, keys);
    CHECK(a.get("kv_router.routing_token").shape() == Shape{2, D});
    CHECK(a.get("heavy_attn.to_kv.weight").shape() == Shape{32, D});
    Generator gx(2);
    CHECK(a.forward(randn({2, 7, D}, gx), randn({2, 11, D}, gx)).shape() == Shape{2, 7, D});
  }
  auto bad = [&](ConditionalRoutedCrossAttentionConfig c, const char* msg) {
    CHECK_THROWS_WITH_AS(ConditionalRoutedCrossAttention(c, gen), doctest::Contains(msg), Error);
  };
  bad({.dim = D, .num_tokens_q = 3, .num_tokens_kv = 4, .heads = 4, .kv_routing_tokens = 3}, "divisible");
  bad({.dim = D, .num_tokens_q = 0, .num_tokens_kv = 4}, "num_tokens");
  bad({.dim = D, .num_tokens_q = 3, .num_tokens_kv = 4, .route_block_size = 0}, "route_block_size");
  bad({.dim = D, .num_tokens_q = 3, .num_tokens_kv = 4, .router_kwargs = {.num_routing_tokens = 2}},
      "num_routing_tokens");
  ConditionalRoutedCrossAttention a({.dim = D, .num_tokens_q = 3, .num_tokens_kv = 4, .dim_head = 4, .heads = 2}, gen);
  Generator gx(3);
  CHECK_THROWS_AS(a.forward(randn({2, 5, D}, gx), randn({1, 5, D}, gx)), Error);
}

TEST_CASE("layers cross: routing invariants") {
  Generator gen(10);
  const int64_t D = 8, B = 2, Nq = 9, Nk = 13;
  ConditionalRoutedCrossAttention a({.dim = D, .num_tokens_q = 3, .num_tokens_kv = 5, .dim_head = 4, .heads = 4,
                                     .kv_routing_tokens = 2},
                                    gen);
  a.to(DType::f64);
  Tensor x = randn64({B, Nq, D}, 11), ctx = randn64({B, Nk, D}, 12);
  Tensor cmask = ge(rand({B, Nk}, *std::make_unique<Generator>(13), kF64), 0.2);
  SUBCASE("Nq <= num_tokens_q: the heavy output as is") {
    Tensor y = a.forward(x, ctx, {}, cmask, {.num_tokens_q = Nq});
    RouterReturn rkv = a.kv_router->forward(ctx, 5, cmask);
    Tensor want = a.heavy_attn->forward(x, {.context = rkv.routed_tokens, .mask = rkv.routed_mask,
                                            .scores_kv = rkv.scores});
    check_close(y, want, 1e-12, 1e-12);
    // and with nothing routed: plain heavy attention over the whole context
    Tensor y2 = a.forward(x, ctx, {}, cmask, {.num_tokens_q = Nq, .num_tokens_kv = Nk});
    check_close(y2, a.heavy_attn->forward(x, {.context = ctx, .mask = cmask}), 1e-12, 1e-12);
  }
  SUBCASE("routed queries: heavy output times scores at their positions, null_q_token elsewhere") {
    Tensor y = a.forward(x, ctx, {}, cmask);
    RouterReturn rq = a.q_router->forward(x, 3);
    RouterReturn rkv = a.kv_router->forward(ctx, 5, cmask);
    Tensor heavy = a.heavy_attn->forward(rq.routed_tokens, {.context = rkv.routed_tokens, .mask = rkv.routed_mask,
                                                            .scores_kv = rkv.scores});
    for (int64_t b = 0; b < B; ++b) {
      std::vector<int64_t> idx;
      for (int64_t j = 0; j < 3; ++j) idx.push_back(rq.indices.select(0, b).select(0, j).item<int64_t>());
      for (int64_t t = 0; t < Nq; ++t) {
        auto it = std::find(idx.begin(), idx.end(), t);
        Tensor got = y.select(0, b).select(0, t);
        if (it == idx.end()) {
          check_close(got, a.null_q_token, 0, 0);
        } else {
          const int64_t j = it - idx.begin();
          check_close(got, heavy.select(0, b).select(0, j) * rq.scores.select(0, b).select(0, j), 1e-12, 1e-12);
        }
      }
    }
  }
}

TEST_CASE("layers cross: block routing picks inside each block and gathers from the context") {
  Generator gen(20);
  const int64_t D = 8, B = 2, Nq = 6, Nk = 26, blk = 8;  // 3 blocks of 8 (the last 2 tokens dropped)
  ConditionalRoutedCrossAttention a({.dim = D, .num_tokens_q = 3, .num_tokens_kv = 6, .dim_head = 4, .heads = 4,
                                     .kv_routing_tokens = 2, .route_block_size = blk},
                                    gen);
  a.to(DType::f64);
  Tensor x = randn64({B, Nq, D}, 21), ctx = randn64({B, Nk, D}, 22);
  RouterReturn rkv = a.kv_router->forward(ctx, 6);
  REQUIRE(rkv.indices.shape() == Shape{B, 2, 6});  // 2 per block, 3 blocks
  for (int64_t b = 0; b < B; ++b)
    for (int64_t r = 0; r < 2; ++r)
      for (int64_t j = 0; j < 6; ++j) {
        const int64_t i = rkv.indices.select(0, b).select(0, r).select(0, j).item<int64_t>();
        CHECK(i / blk == j / 2);
        check_close(rkv.routed_tokens.select(0, b).select(0, r).select(0, j), ctx.select(0, b).select(0, i), 0, 0);
      }
  Tensor y = a.forward(x, ctx);
  Tensor want = routed_heavy(*a.q_router, *a.kv_router, *a.heavy_attn, a.null_q_token, x, ctx, 3, 6, {}, {}, false);
  check_close(y, want, 1e-12, 1e-12);
}

TEST_CASE("layers cross: f64 gradcheck, routing active and inactive") {
  Generator gen(30);
  ConditionalRoutedCrossAttention a({.dim = 4, .num_tokens_q = 2, .num_tokens_kv = 3, .dim_head = 2, .heads = 2,
                                     .router_straight_through = false, .router_kwargs = kSoft,
                                     .kv_routing_tokens = 2, .multiply_keys_by_score = true},
                                    gen);
  a.to(DType::f64);
  Tensor x = rleaf({2, 4, 4}, 31), ctx = rleaf({2, 6, 4}, 32);
  SUBCASE("routing active") { module_gradcheck(a, {{"x", x}, {"context", ctx}}, [&] { return a.forward(x, ctx); }); }
  SUBCASE("routing inactive") {
    module_gradcheck(a, {{"x", x}, {"context", ctx}},
                     [&] { return a.forward(x, ctx, {}, {}, {.num_tokens_q = 4, .num_tokens_kv = 6}); });
  }
}

// ============================================================ image attention

using ImgConfig = ConditionalRoutedImageAttentionConfig;

TEST_CASE("layers image: keys, shapes, errors") {
  Generator gen(40);
  const int64_t D = 8;
  ConditionalRoutedImageAttention a({.dim = D, .num_heavy_tokens_q = 3, .num_heavy_tokens_kv = 4, .num_routed_kv = 2,
                                     .light_dim_head = 4, .light_heads = 2, .light_window_size = 2,
                                     .heavy_dim_head = 4, .heavy_heads = 2},
                                    gen);
  std::vector<std::string> keys = {"null_q_token", "light_attn.norm.gamma", "light_attn.to_qkv.weight",
                                   "light_attn.to_out.weight", "q_router.routing_token", "kv_router.routing_token"};
  keys.insert(keys.end(), kHeavyKeys.begin(), kHeavyKeys.end());
  check_keys(a, keys);
  Generator gx(41);
  CHECK(a.forward(randn({2, 4, 6, D}, gx)).shape() == Shape{2, 4, 6, D});
  CHECK_THROWS_WITH_AS(a.forward(randn({2, 5, 6, D}, gx)), doctest::Contains("multiples"), Error);
  CHECK_THROWS_AS(a.forward(randn({2, 4, 6, D + 1}, gx)), Error);
  CHECK_THROWS_WITH_AS(ConditionalRoutedImageAttention(ImgConfig{.dim = D, .num_heavy_tokens_q = 3,
                                                                 .num_heavy_tokens_kv = 4, .num_routed_kv = 3,
                                                                 .heavy_heads = 2},
                                                       gen),
                       doctest::Contains("divisible"), Error);
  CHECK_THROWS_WITH_AS(ConditionalRoutedImageAttention(ImgConfig{.dim = D, .num_heavy_tokens_q = 3,
                                                                 .num_heavy_tokens_kv = 4, .light_window_size = 0},
                                                       gen),
                       doctest::Contains("light_window_size"), Error);
}

TEST_CASE("layers image: equals the per-patch pipeline by hand; channel_first; global routing") {
  Generator gen(50);
  const int64_t D = 8, B = 2, H = 4, W = 6, w = 2;
  ImgConfig c{.dim = D, .num_heavy_tokens_q = 2, .num_heavy_tokens_kv = 3, .num_routed_kv = 2, .light_dim_head = 4,
              .light_heads = 2, .light_window_size = w, .heavy_dim_head = 4, .heavy_heads = 2,
              .multiply_queries_by_score = true};
  ConditionalRoutedImageAttention a(c, gen);
  a.to(DType::f64);
  Tensor x = randn64({B, H, W, D}, 51);
  Tensor y = a.forward(x);
  // by hand: each w x w patch cut with narrow, its own rows for every branch
  std::vector<Tensor> rows_of_image;
  for (int64_t i = 0; i < H / w; ++i) {
    std::vector<Tensor> cols;
    for (int64_t j = 0; j < W / w; ++j) {
      Tensor p = x.narrow(1, i * w, w).narrow(2, j * w, w).reshape({B, w * w, D});
      Tensor o = a.light_attn->forward(p) + routed_heavy(*a.q_router, *a.kv_router, *a.heavy_attn, a.null_q_token, p,
                                                         p, 2, 3, {}, {}, true);
      cols.push_back(o.reshape({B, w, w, D}));
    }
    rows_of_image.push_back(cat(cols, 2));
  }
  check_close(y, cat(rows_of_image, 1), 1e-12, 1e-12);

  SUBCASE("channel_first") {
    Generator g2(50);
    ImgConfig cf = c;
    cf.channel_first = true;
    ConditionalRoutedImageAttention b(cf, g2);
    b.to(DType::f64);
    check_close(b.forward(x.permute({0, 3, 1, 2}).contiguous()), y.permute({0, 3, 1, 2}), 1e-12, 1e-12);
  }
  SUBCASE("global_routing routes over the whole image") {
    Generator g2(50);
    ImgConfig cg = c;
    cg.global_routing = true;
    cg.num_heavy_tokens_q = 5;
    cg.num_heavy_tokens_kv = 7;
    ConditionalRoutedImageAttention b(cg, g2);
    b.to(DType::f64);
    Tensor flat = x.reshape({B, H * W, D});
    Tensor light = patches_to_image(b.light_attn->forward(image_to_patches(x, w)), B, H, W, w);
    Tensor heavy = routed_heavy(*b.q_router, *b.kv_router, *b.heavy_attn, b.null_q_token, flat, flat, 5, 7, {}, {},
                                true);
    check_close(b.forward(x), light + heavy.reshape({B, H, W, D}), 1e-12, 1e-12);
  }
}

TEST_CASE("layers image: f64 gradcheck, routing active and inactive") {
  Generator gen(60);
  ConditionalRoutedImageAttention a({.dim = 4, .num_heavy_tokens_q = 2, .num_heavy_tokens_kv = 3, .num_routed_kv = 2,
                                     .light_dim_head = 2, .light_heads = 2, .light_window_size = 2,
                                     .heavy_dim_head = 2, .heavy_heads = 2, .router_straight_through = false,
                                     .router_kwargs = kSoft, .multiply_queries_by_score = true},
                                    gen);
  a.to(DType::f64);
  Tensor x = rleaf({1, 2, 4, 4}, 61);
  SUBCASE("routing active") { module_gradcheck(a, {{"x", x}}, [&] { return a.forward(x); }); }
  SUBCASE("routing inactive") {
    module_gradcheck(a, {{"x", x}}, [&] {
      return a.forward(x, {}, {.num_heavy_tokens_q = 4, .num_heavy_tokens_kv = 4});
    });
  }
}

// ============================================================ ViT

TEST_CASE("layers vit: keys, patchify, position embedding, logits, determinism") {
  ConditionalRoutedViTConfig c{.image_size = 8, .patch_size = 2, .num_classes = 5, .dim = 8, .depth = 2,
                               .attn_num_heavy_tokens_q = 2, .attn_num_heavy_tokens_kv = 3,
                               .attn_light_dim_head = 4, .attn_light_heads = 2, .attn_light_window_size = 2,
                               .attn_heavy_dim_head = 4, .attn_heavy_heads = 2, .ff_num_heavy_tokens = 5,
                               .ff_heavy_mult = 2, .channels = 3};
  Generator gen(70);
  ConditionalRoutedViT v(c, gen);
  std::vector<std::string> keys = {"to_patch_embedding.1.weight", "to_patch_embedding.1.bias",
                                   "to_patch_embedding.2.weight", "to_patch_embedding.2.bias",
                                   "to_patch_embedding.3.weight", "to_patch_embedding.3.bias"};
  for (int i = 0; i < 2; ++i) {
    const std::string p = "transformer.layers." + std::to_string(i);
    for (const char* k : {".0.null_q_token", ".0.light_attn.norm.gamma", ".0.light_attn.to_qkv.weight",
                          ".0.light_attn.to_out.weight", ".0.q_router.routing_token", ".0.kv_router.routing_token",
                          ".0.heavy_attn.null_kv", ".0.heavy_attn.norm.gamma", ".0.heavy_attn.to_q.weight",
                          ".0.heavy_attn.to_kv.weight", ".0.heavy_attn.to_out.weight", ".1.router.routing_token",
                          ".1.light_ff.0.gamma", ".1.light_ff.1.weight", ".1.light_ff.1.bias",
                          ".1.light_ff.3.weight", ".1.light_ff.3.bias", ".1.heavy_ff.0.gamma",
                          ".1.heavy_ff.1.weight", ".1.heavy_ff.1.bias", ".1.heavy_ff.3.weight",
                          ".1.heavy_ff.3.bias"})
      keys.push_back(p + k);
  }
  for (const char* k : {"linear_head.1.weight", "linear_head.1.bias", "linear_head.2.weight", "linear_head.2.bias"})
    keys.push_back(k);
  check_keys(v, keys);
  CHECK(v.get("to_patch_embedding.2.weight").shape() == Shape{8, 12});
  CHECK(v.get("linear_head.2.weight").shape() == Shape{5, 8});
  CHECK(v.attn_layers[0]->q_router->config().eps == 1.0);  // default_coor_descent_eps
  CHECK(v.ff_layers[1]->router->config().eps == 1.0);

  // patchify: channel fastest
  Tensor img = arange(0.0, 2.0 * 3 * 8 * 8, 1.0, kF64).view({2, 3, 8, 8});
  Tensor p = patchify(img, 2);
  REQUIRE(p.shape() == Shape{2, 4, 4, 12});
  for (int64_t b : {0, 1})
    for (int64_t h : {0, 3})
      for (int64_t w : {1, 2})
        for (int64_t p1 = 0; p1 < 2; ++p1)
          for (int64_t p2 = 0; p2 < 2; ++p2)
            for (int64_t ch = 0; ch < 3; ++ch)
              CHECK(p.select(0, b).select(0, h).select(0, w).select(0, (p1 * 2 + p2) * 3 + ch).item<double>() ==
                    img.select(0, b).select(0, ch).select(0, h * 2 + p1).select(0, w * 2 + p2).item<double>());
  // position embedding: [sin x, cos x, sin y, cos y], omega_i = 10000^(-i / (D/4 - 1))
  Tensor pe = posemb_sincos_2d(3, 4, 8);
  for (int64_t y = 0; y < 3; ++y)
    for (int64_t x = 0; x < 4; ++x)
      for (int64_t i = 0; i < 2; ++i) {
        const double om = std::pow(10000.0, -static_cast<double>(i));
        Tensor e = pe.select(0, y).select(0, x);
        CHECK(e.select(0, i).item<double>() == doctest::Approx(std::sin(x * om)));
        CHECK(e.select(0, 2 + i).item<double>() == doctest::Approx(std::cos(x * om)));
        CHECK(e.select(0, 4 + i).item<double>() == doctest::Approx(std::sin(y * om)));
        CHECK(e.select(0, 6 + i).item<double>() == doctest::Approx(std::cos(y * om)));
      }

  Generator gi(71);
  Tensor images = randn({2, 3, 8, 8}, gi);
  Tensor l1 = v.forward(images), l2 = v.forward(images);
  CHECK(l1.shape() == Shape{2, 5});
  check_close(l1, l2, 0, 0);
  Generator gen2(70);
  ConditionalRoutedViT v2(c, gen2);
  check_close(v2.forward(images), l1, 0, 0);

  auto bad = [&](ConditionalRoutedViTConfig cc, const char* msg) {
    CHECK_THROWS_WITH_AS(ConditionalRoutedViT(cc, gen), doctest::Contains(msg), Error);
  };
  ConditionalRoutedViTConfig cc = c;
  cc.patch_size = 3;
  bad(cc, "divisible");
  cc = c;
  cc.attn_light_window_size = 3;
  bad(cc, "attn_light_window_size");
  cc = c;
  cc.dim = 6;
  bad(cc, "multiple of 4");
  CHECK_THROWS_AS(v.forward(randn({2, 1, 8, 8}, gi)), Error);
}

TEST_CASE("layers vit: f64 gradcheck of a tiny model, routing inactive (image input and every parameter)") {
  // The ViT's routers are straight-through (scores exactly 1): with routing active finite differences
  // cannot see the straight-through gradient, so the whole-model check runs with every layer unrouted
  // (patch rows of 4 tokens <= 4 heavy tokens, 16 tokens <= 16 feed-forward tokens); the routed
  // layers are gradchecked with soft scores in their own tests.
  Generator gen(80);
  ConditionalRoutedViT v({.image_size = 4, .patch_size = 1, .num_classes = 2, .dim = 8, .depth = 1,
                          .attn_num_heavy_tokens_q = 4, .attn_num_heavy_tokens_kv = 4, .attn_light_dim_head = 2,
                          .attn_light_heads = 1, .attn_light_window_size = 2, .attn_heavy_dim_head = 2,
                          .attn_heavy_heads = 1, .ff_num_heavy_tokens = 16, .ff_light_mult = 0.25,
                          .ff_heavy_mult = 0.5, .channels = 1, .router_kwargs = kSoft,
                          .router_kwargs_has_eps = true},
                         gen);
  v.to(DType::f64);
  Tensor img = rleaf({1, 1, 4, 4}, 81);
  module_gradcheck(v, {{"img", img}}, [&] { return v.forward(img); }, 100000, 1e-5, 1e-3);
}
