// The CoLT5 layers (SPEC §3-4): FeedForward, LayerNorm, heavy Attention,
// LocalMHA, SelfAttention, ConditionalRoutedFeedForward,
// ConditionalRoutedAttention, ConditionalRoutedTransformerBlock.
//
// - state-dict keys against lists written by hand from SPEC §3-4 (in PyTorch order)
// - forward of the attention layers against oracles written with primitive
//   ops head by head (the to_kv route/head/channel row layout, null key/value,
//   masks per route, scores, rotary written out by hand)
// - invariants: no routing when num_heavy_tokens >= N (scores 1); a routed
//   token's output is the heavy branch applied to it alone; unrouted query
//   positions get null_q_token through the heavy branch
// - f64 gradchecks of whole layers (parameters and inputs) with routing
//   active and inactive
// - configuration errors, strict loading of a hand-built state dict
#include <cfloat>
#include <cmath>
#include <algorithm>
#include <functional>
#include <map>
#include <set>

#include "helpers.h"

using namespace colt5;
using namespace colt5::testing;

namespace {

const Options kF64{.dtype = DType::f64};

Tensor randn64(const Shape& s, uint64_t seed, double scale = 1.0) {
  Generator g(seed);
  return randn(s, g, kF64) * scale;
}

Tensor random_mask(int64_t B, int64_t N, double keep, uint64_t seed) {
  Generator g(seed);
  Tensor m = lt(rand({B, N}, g, kF64), keep);
  m.select(1, 0).fill_(1.0);  // keep the first token of every row
  return m;
}

std::vector<std::string> param_names(const Module& m) {
  std::vector<std::string> out;
  for (const auto& [n, t] : m.named_parameters()) out.push_back(n);
  return out;
}
std::vector<std::string> state_keys(const Module& m) {
  std::vector<std::string> out;
  for (const auto& [n, t] : m.state_dict()) out.push_back(n);
  return out;
}
// PyTorch-order list -> its parameters (no buffers) and its sorted key set.
void check_keys(const Module& m, const std::vector<std::string>& torch_order, const std::set<std::string>& buffers = {}) {
  std::vector<std::string> params;
  for (const auto& k : torch_order)
    if (!buffers.count(k)) params.push_back(k);
  CHECK(param_names(m) == params);
  std::vector<std::string> sorted = torch_order;
  std::sort(sorted.begin(), sorted.end());
  CHECK(state_keys(m) == sorted);
}

// ---- oracles from primitive ops

Tensor rms_oracle(const Tensor& x, const Tensor& gamma) {
  const double D = static_cast<double>(x.size(-1));
  return x / clamp_min(sqrt(sum(x * x, -1, true)), 1e-12) * std::sqrt(D) * gamma;
}

Tensor layer_norm_oracle(const Tensor& x, const Tensor& w, const Tensor& b) {
  Tensor mu = mean(x, -1, true);
  Tensor var = mean((x - mu) * (x - mu), -1, true);
  return (x - mu) / sqrt(var + 1e-5) * w + b;
}

// x (..., n, d); pos f64 broadcastable to x.shape[:-1]
Tensor rotary_oracle(const Tensor& x, const Tensor& pos, const Tensor& inv_freq) {
  const int64_t d = x.size(-1);
  Tensor f = pos.to(DType::f64).unsqueeze(-1) * inv_freq.to(DType::f64);
  f = cat({f, f}, -1);
  Tensor x1 = x.narrow(-1, 0, d / 2), x2 = x.narrow(-1, d / 2, d / 2);
  Tensor rh = cat({neg(x2), x1}, -1);
  return x * cos(f) + rh * sin(f);
}

// softmax(q k^T * scale) v over the visible keys (vis bool broadcastable to (B, Nq, Nk)); rows without
// a visible key give zeros.
Tensor masked_attend(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& vis) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  Tensor sim = matmul(q, k.transpose(-1, -2)) * scale;
  if (!vis.defined()) return matmul(softmax(sim, -1), v);
  Tensor p = softmax(where(vis, sim, -DBL_MAX), -1) * vis.to(DType::f64);
  return matmul(p, v);
}

// SPEC §3.1 step by step, head by head, reading to_kv's rows as (r, j, c).
Tensor attention_oracle(const Attention& m, const Tensor& x, const AttentionCall& a) {
  const int64_t h = m.config().heads, dh = m.config().dim_head;
  const int64_t B = x.size(0), Nq = x.size(1);
  Tensor xn = rms_oracle(x, m.norm->gamma);
  Tensor ctx = a.context.defined() ? rms_oracle(a.context, m.norm->gamma) : xn;
  if (ctx.dim() == 3) ctx = ctx.unsqueeze(1);
  const int64_t R = ctx.size(1), Nk = ctx.size(2), hr = h / R;
  const Tensor &Wq = m.to_q->weight, &Wkv = m.to_kv->weight;
  std::vector<Tensor> outs;
  for (int64_t r = 0; r < R; ++r)
    for (int64_t j = 0; j < hr; ++j) {
      const int64_t head = r * hr + j;
      Tensor q = matmul(xn, Wq.narrow(0, head * dh, dh).t());
      if (a.scores_q.defined()) q = q * a.scores_q.unsqueeze(-1);
      Tensor cr = ctx.select(1, r);
      Tensor k = matmul(cr, Wkv.narrow(0, head * 2 * dh, dh).t());
      Tensor v = matmul(cr, Wkv.narrow(0, head * 2 * dh + dh, dh).t());
      if (a.scores_kv.defined()) {
        Tensor s = (a.scores_kv.dim() == 2 ? a.scores_kv : a.scores_kv.select(1, r)).unsqueeze(-1);
        v = v * s;
        if (m.config().multiply_keys_by_score) k = k * s;
      }
      if (a.rotary_inv_freq.defined()) {
        q = rotary_oracle(q, a.q_positions, a.rotary_inv_freq);
        Tensor kp = a.k_positions.dim() == 3 ? a.k_positions.select(1, r) : a.k_positions;
        k = rotary_oracle(k, kp, a.rotary_inv_freq);
      }
      k = cat({m.null_kv.select(0, 0).select(0, head).view({1, 1, dh}).expand({B, 1, dh}), k}, 1);
      v = cat({m.null_kv.select(0, 1).select(0, head).view({1, 1, dh}).expand({B, 1, dh}), v}, 1);
      Tensor vis;
      if (a.mask.defined()) {
        Tensor mr = a.mask.dim() == 2 ? a.mask : a.mask.select(1, r);
        std::vector<bool> keep;
        for (int64_t b = 0; b < B; ++b) {
          keep.push_back(true);  // the null key
          for (int64_t t = 0; t < Nk; ++t) keep.push_back(mr.select(0, b).select(0, t).item<bool>());
        }
        vis = from_vector_bool(keep, {B, 1, Nk + 1});
      }
      outs.push_back(masked_attend(q, k, v, vis));
    }
  (void)Nq;
  return matmul(cat(outs, -1), m.to_out->weight.t());
}

// Dense oracle for LocalMHA: visibility written out per SPEC §3.2.
Tensor local_mha_oracle(const LocalMHA& m, const Tensor& x, const Tensor& mask) {
  const auto& c = m.config();
  const int64_t B = x.size(0), N = x.size(1), h = c.heads, dh = c.dim_head, w = c.window_size;
  Tensor xn = m.norm ? layer_norm_oracle(x, m.norm->weight, m.norm->bias) : x;
  Tensor qkv = matmul(xn, m.to_qkv->weight.t());
  std::vector<bool> vis;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < N; ++t)
      for (int64_t j = 0; j < N; ++j) {
        bool v;
        if (c.causal) {
          const int64_t wi = t / w, wj = j / w;
          v = (wj == wi - 1) || (wj == wi && j <= t);
        } else {
          v = std::abs(t - j) <= w;
        }
        if (mask.defined()) v = v && mask.select(0, b).select(0, j).item<bool>();
        vis.push_back(v);
      }
  Tensor V = from_vector_bool(vis, {B, N, N});
  std::vector<Tensor> outs;
  for (int64_t hd = 0; hd < h; ++hd) {
    Tensor q = qkv.narrow(-1, hd * dh, dh), k = qkv.narrow(-1, h * dh + hd * dh, dh),
           v = qkv.narrow(-1, 2 * h * dh + hd * dh, dh);
    outs.push_back(masked_attend(q, k, v, V));
  }
  return matmul(cat(outs, -1), m.to_out->weight.t());
}

Tensor self_attention_oracle(const SelfAttention& m, const Tensor& x) {
  const int64_t h = m.config().heads, dh = m.config().dim_head;
  Tensor xn = m.norm ? rms_oracle(x, m.norm->gamma) : x;
  Tensor qkv = matmul(xn, m.to_qkv->weight.t());
  std::vector<Tensor> outs;
  for (int64_t hd = 0; hd < h; ++hd)
    outs.push_back(masked_attend(qkv.narrow(-1, hd * dh, dh), qkv.narrow(-1, h * dh + hd * dh, dh),
                                 qkv.narrow(-1, 2 * h * dh + hd * dh, dh), Tensor()));
  return matmul(cat(outs, -1), m.to_out->weight.t());
}

// ---- gradcheck of a module's parameters and extra inputs (all f64 CPU leaves)


}  // namespace

// ============================================================ building blocks

TEST_CASE("layers blocks: FeedForward and LayerNorm keys, shapes, forward") {
  Generator gen(1);
  FeedForward ff(6, 0.5, gen);
  check_keys(ff, {"0.gamma", "1.weight", "1.bias", "3.weight", "3.bias"});
  CHECK(ff.get("1.weight").shape() == Shape{3, 6});
  CHECK(ff.get("3.weight").shape() == Shape{6, 3});
  CHECK(ff.get("3.bias").shape() == Shape{6});
  CHECK(FeedForward(10, 4, gen).hidden_dim() == 40);
  CHECK(FeedForward(5, 0.5, gen).hidden_dim() == 2);  // int(2.5)
  ff.to(DType::f64);
  Tensor x = randn64({2, 5, 6}, 2);
  Tensor want = matmul(gelu(matmul(rms_oracle(x, ff.norm->gamma), ff.proj_in->weight.t()) + ff.proj_in->bias),
                       ff.proj_out->weight.t()) +
                ff.proj_out->bias;
  check_close(ff.forward(x), want, 1e-12, 1e-12);
  CHECK_THROWS_WITH_AS(FeedForward(3, 0.2, gen), doctest::Contains("at least 1"), Error);
  CHECK_THROWS_AS(FeedForward(0, 2, gen), Error);

  LayerNorm ln(4);
  check_keys(ln, {"weight", "bias"});
  CHECK(ln.weight.to_vector<double>() == std::vector<double>(4, 1.0));
  CHECK(ln.bias.to_vector<double>() == std::vector<double>(4, 0.0));
}

TEST_CASE("layers blocks: heavy Attention keys, to_kv row layout per route, null kv, masks, scores, rotary") {
  const int64_t D = 8, h = 4, dh = 6, B = 2, Nq = 3, Nk = 5;
  Generator gen(10);
  Attention heavy({.dim = D, .dim_head = dh, .heads = h}, gen);
  check_keys(heavy, {"null_kv", "norm.gamma", "to_q.weight", "to_kv.weight", "to_out.weight"});
  CHECK(heavy.null_kv.shape() == Shape{2, h, dh});
  CHECK(heavy.to_q->weight.shape() == Shape{h * dh, D});
  CHECK(heavy.to_kv->weight.shape() == Shape{2 * h * dh, D});
  CHECK(heavy.to_out->weight.shape() == Shape{D, h * dh});
  CHECK(heavy.to_q->bias.defined() == false);
  heavy.to(DType::f64);
  // non-trivial norm gain
  heavy.norm->gamma.detach().copy_(randn64({D}, 11, 0.3) + 1.0);
  Tensor x = randn64({B, Nq, D}, 12);
  Tensor inv = rotary_inv_freq(dh, kF64);
  for (int64_t R : {1, 2, 4}) {
    for (bool masked : {false, true}) {
      for (bool scored : {false, true}) {
        INFO("R " << R << " masked " << masked << " scored " << scored);
        Tensor ctx = R == 1 ? randn64({B, Nk, D}, 13) : randn64({B, R, Nk, D}, 14);
        AttentionCall a{.context = ctx};
        if (masked) {
          Generator g(15);
          a.mask = lt(rand(R == 1 ? Shape{B, Nk} : Shape{B, R, Nk}, g), 0.5);
          a.mask.select(0, 0).fill_(0.0);  // batch 0: every key masked -> only the null key
        }
        if (scored) {
          a.scores_kv = uniform(R == 1 ? Shape{B, Nk} : Shape{B, R, Nk}, 0.2, 1.0, gen, kF64);
          a.scores_q = uniform({B, Nq}, 0.2, 1.0, gen, kF64);
          a.rotary_inv_freq = inv;
          a.q_positions = from_vector_i64({7, 2, 11, 0, 3, 5}, {B, Nq});
          a.k_positions = R == 1 ? arange(Nk) : randint(0, 50, {B, R, Nk}, gen);
        }
        Tensor got = heavy.forward(x, a);
        CHECK(got.shape() == Shape{B, Nq, D});
        check_close(got, attention_oracle(heavy, x, a), 1e-10, 1e-10);
      }
    }
  }
  // multiply_keys_by_score and self-attention (no context)
  Attention mk({.dim = D, .dim_head = dh, .heads = 2, .multiply_keys_by_score = true}, gen);
  mk.to(DType::f64);
  AttentionCall a{.scores_kv = uniform({B, Nq}, 0.1, 1.0, gen, kF64)};
  check_close(mk.forward(x, a), attention_oracle(mk, x, a), 1e-10, 1e-10);
  // the context's routes must divide the heads
  CHECK_THROWS_WITH_AS(heavy.forward(x, {.context = randn64({B, 3, Nk, D}, 16)}), doctest::Contains("divisible"),
                       Error);
  CHECK_THROWS_AS(heavy.forward(x, {.context = randn64({B, Nk, D}, 16), .mask = ones({B, Nk})}), Error);
  CHECK_THROWS_AS(Attention({.dim = D, .dim_head = 0}, gen), Error);
}

TEST_CASE("layers blocks: LocalMHA keys and both forms of SPEC 3.2") {
  const int64_t D = 8, B = 2;
  Generator gen(20);
  for (bool causal : {false, true}) {
    for (int64_t N : {12, 13}) {  // 13: not a multiple of the window
      for (bool masked : {false, true}) {
        INFO("causal " << causal << " N " << N << " masked " << masked);
        LocalMHAConfig cfg{.dim = D, .window_size = causal ? 4 : 2, .dim_head = 3, .heads = 2, .causal = causal,
                           .prenorm = true, .exact_windowsize = !causal, .look_backward = 1,
                           .look_forward = causal ? 0 : 1};
        LocalMHA attn(cfg, gen);
        check_keys(attn, {"norm.weight", "norm.bias", "to_qkv.weight", "to_out.weight"});
        CHECK(attn.to_qkv->weight.shape() == Shape{18, D});
        attn.to(DType::f64);
        attn.norm->weight.detach().copy_(randn64({D}, 21, 0.2) + 1.0);
        attn.norm->bias.detach().copy_(randn64({D}, 22, 0.2));
        Tensor x = randn64({B, N, D}, 23);
        Tensor mask = masked ? random_mask(B, N, 0.6, 24) : Tensor();
        Tensor got = attn.forward(x, mask);
        CHECK(got.shape() == Shape{B, N, D});
        check_close(got, local_mha_oracle(attn, x, mask), 1e-10, 1e-10);
      }
    }
  }
  LocalMHA plain({.dim = D, .window_size = 4, .dim_head = 2, .heads = 2}, gen);
  check_keys(plain, {"to_qkv.weight", "to_out.weight"});
  CHECK_THROWS_AS(LocalMHA({.dim = D, .window_size = 4, .causal = true, .look_forward = 1}, gen), Error);
  CHECK_THROWS_AS(LocalMHA({.dim = D, .window_size = 0}, gen), Error);
}

TEST_CASE("layers blocks: SelfAttention keys and forward") {
  Generator gen(30);
  SelfAttention a({.dim = 6, .dim_head = 4, .heads = 3, .prenorm = true}, gen);
  check_keys(a, {"norm.gamma", "to_qkv.weight", "to_out.weight"});
  SelfAttention b({.dim = 6, .dim_head = 4, .heads = 3}, gen);
  check_keys(b, {"to_qkv.weight", "to_out.weight"});
  a.to(DType::f64);
  b.to(DType::f64);
  Tensor x = randn64({2, 7, 6}, 31);
  check_close(a.forward(x), self_attention_oracle(a, x), 1e-10, 1e-10);
  check_close(b.forward(x), self_attention_oracle(b, x), 1e-10, 1e-10);
}

// ============================================================ routed layers

namespace {
const RouterConfig kSoftRouter{.n_iters = 6, .eps = 0.3, .eps_decay = 0.9, .eps_init = 1.0};

std::vector<std::string> ff_keys(const std::string& p) {
  return {p + "0.gamma", p + "1.weight", p + "1.bias", p + "3.weight", p + "3.bias"};
}
std::vector<std::string> cra_keys(const std::string& p, bool null_q, bool light, bool rotary) {
  std::vector<std::string> k;
  if (null_q) k.push_back(p + "null_q_token");
  if (light)
    for (const char* s : {"light_attn.norm.weight", "light_attn.norm.bias", "light_attn.to_qkv.weight",
                          "light_attn.to_out.weight"})
      k.push_back(p + s);
  for (const char* s : {"q_router.routing_token", "kv_router.routing_token", "heavy_attn.null_kv",
                        "heavy_attn.norm.gamma", "heavy_attn.to_q.weight", "heavy_attn.to_kv.weight",
                        "heavy_attn.to_out.weight"})
    k.push_back(p + s);
  if (rotary) k.push_back(p + "rotary_emb.inv_freq");
  return k;
}
std::vector<std::string> concat(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}
// the position's row of a (B, N, D) tensor
Tensor tok(const Tensor& x, int64_t b, int64_t i) { return x.select(0, b).select(0, i); }
}  // namespace

TEST_CASE("layers blocks: ConditionalRoutedFeedForward keys and routing invariants") {
  const int64_t D = 6, B = 2, N = 10;
  Generator gen(40);
  ConditionalRoutedFeedForward ff({.dim = D, .num_heavy_tokens = 4, .light_ff_mult = 0.5, .heavy_ff_mult = 2,
                                   .router_straight_through = false, .router_kwargs = kSoftRouter},
                                  gen);
  check_keys(ff, concat({"router.routing_token"}, concat(ff_keys("light_ff."), ff_keys("heavy_ff."))));
  CHECK(ff.get("light_ff.1.weight").shape() == Shape{3, D});
  CHECK(ff.get("heavy_ff.1.weight").shape() == Shape{12, D});
  CHECK(ff.router->config().straight_through == false);
  ff.to(DType::f64);
  Tensor x = randn64({B, N, D}, 41);
  Tensor mask = random_mask(B, N, 0.7, 42);
  Tensor out = ff.forward(x, mask);
  CHECK(out.shape() == Shape{B, N, D});
  RouterReturn r = ff.router->forward(x, 4, mask);
  REQUIRE(r.routed());
  Tensor light = ff.light_ff->forward(x);
  std::vector<int64_t> idx = r.indices.to_vector<int64_t>();
  std::vector<double> sc = r.scores.to_vector<double>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < N; ++i) {
      Tensor want = tok(light, b, i);
      for (int64_t j = 0; j < 4; ++j)
        if (idx[b * 4 + j] == i) want = want + ff.heavy_ff->forward(tok(x, b, i).view({1, 1, D})).view({D}) * sc[b * 4 + j];
      check_close(tok(out, b, i), want, 1e-12, 1e-12);
    }
  // num_heavy_tokens >= N: no routing, every token through both branches (scores 1)
  for (int64_t nt : {N, N + 5}) {
    Tensor all = ff.forward(x, mask, {.num_heavy_tokens = nt});
    check_close(all, light + ff.heavy_ff->forward(x), 1e-12, 1e-12);
  }
  // router_kwargs cannot carry the route count or learned tokens; bad kwargs throw
  CHECK_THROWS_WITH_AS(ConditionalRoutedFeedForward({.dim = D, .num_heavy_tokens = 2,
                                                     .router_kwargs = {.num_routing_tokens = 2}},
                                                    gen),
                       doctest::Contains("num_routing_tokens"), Error);
  CHECK_THROWS_AS(ConditionalRoutedFeedForward({.dim = D, .num_heavy_tokens = 2,
                                                .router_kwargs = {.learned_routing_tokens = true}},
                                               gen),
                  Error);
  CHECK_THROWS_WITH_AS(ConditionalRoutedFeedForward({.dim = D, .num_heavy_tokens = 2,
                                                     .router_kwargs = {.fetch_k_ratio = 0.5}},
                                                    gen),
                       doctest::Contains("fetch_k_ratio"), Error);
  CHECK_THROWS_AS(ConditionalRoutedFeedForward({.dim = 0, .num_heavy_tokens = 2}, gen), Error);
  CHECK_THROWS_AS(ConditionalRoutedFeedForward({.dim = D, .num_heavy_tokens = 0}, gen), Error);
}

TEST_CASE("layers blocks: ConditionalRoutedAttention keys for every option") {
  Generator gen(50);
  const int64_t D = 8;
  for (bool null_q : {true, false})
    for (bool light : {true, false})
      for (bool rotary : {false, true}) {
        INFO("null_q " << null_q << " light " << light << " rotary " << rotary);
        ConditionalRoutedAttention a({.dim = D, .num_heavy_tokens_q = 2, .num_heavy_tokens_kv = 3, .num_routed_kv = 2,
                                      .has_light_attn = light, .light_dim_head = 3, .light_heads = 2,
                                      .light_window_size = 4, .heavy_dim_head = 4, .heavy_heads = 4,
                                      .use_null_q_tokens = null_q, .rotary_emb = rotary},
                                     gen);
        check_keys(a, cra_keys("", null_q, light, rotary), {"rotary_emb.inv_freq"});
        CHECK(a.get("kv_router.routing_token").shape() == Shape{2, D});
        CHECK(a.get("q_router.routing_token").shape() == Shape{1, D});
        CHECK(a.get("heavy_attn.to_kv.weight").shape() == Shape{32, D});
        if (rotary) check_values(a.get("rotary_emb.inv_freq"), {1.0, 0.01});
        if (light) CHECK(a.light_attn->config().window_size == 2);
      }
  auto bad = [&](ConditionalRoutedAttentionConfig c, const char* msg) {
    CHECK_THROWS_WITH_AS(ConditionalRoutedAttention(c, gen), doctest::Contains(msg), Error);
  };
  bad({.dim = D, .num_heavy_tokens_q = 2, .num_heavy_tokens_kv = 2, .num_routed_kv = 3, .heavy_heads = 4},
      "divisible");
  bad({.dim = D, .num_heavy_tokens_q = 2, .num_heavy_tokens_kv = 2, .light_window_size = 1}, "light_window_size");
  bad({.dim = 0, .num_heavy_tokens_q = 2, .num_heavy_tokens_kv = 2}, "dim");
  bad({.dim = D, .num_heavy_tokens_q = 0, .num_heavy_tokens_kv = 2}, "num_heavy_tokens");
  bad({.dim = D, .num_heavy_tokens_q = 2, .num_heavy_tokens_kv = 2, .num_routed_kv = 0}, "num_routed_kv");
  bad({.dim = D, .num_heavy_tokens_q = 2, .num_heavy_tokens_kv = 2, .heavy_dim_head = 5, .rotary_emb = true}, "even");
  bad({.dim = D, .num_heavy_tokens_q = 2, .num_heavy_tokens_kv = 2, .router_kwargs = {.fetch_k_ratio = 0.9}},
      "fetch_k_ratio");
  bad({.dim = D, .num_heavy_tokens_q = 2, .num_heavy_tokens_kv = 2, .router_kwargs = {.num_routing_tokens = 2}},
      "num_routing_tokens");
}

TEST_CASE("layers blocks: ConditionalRoutedAttention invariants (routed tokens, null_q_token, no routing)") {
  const int64_t D = 8, B = 2, N = 12, nq = 3, nkv = 5;
  for (bool light : {true, false})
    for (bool rotary : {false, true})
      for (bool mult : {false, true}) {
        INFO("light " << light << " rotary " << rotary << " multiply_*_by_score " << mult);
        Generator gen(60);
        ConditionalRoutedAttention a({.dim = D, .num_heavy_tokens_q = nq, .num_heavy_tokens_kv = nkv,
                                      .num_routed_kv = 2, .has_light_attn = light, .light_dim_head = 3,
                                      .light_heads = 2, .light_window_size = 4, .heavy_dim_head = 4,
                                      .heavy_heads = 4, .router_straight_through = false,
                                      .router_kwargs = kSoftRouter, .multiply_keys_by_score = mult,
                                      .multiply_queries_by_score = mult, .rotary_emb = rotary},
                                     gen);
        a.to(DType::f64);
        Tensor x = randn64({B, N, D}, 61);
        Tensor mask = random_mask(B, N, 0.75, 62);
        Tensor out = a.forward(x, mask);
        CHECK(out.shape() == Shape{B, N, D});
        Tensor light_out = light ? a.light_attn->forward(x, mask) : zeros({B, N, D}, kF64);
        RouterReturn rq = a.q_router->forward(x, nq, mask);
        RouterReturn rkv = a.kv_router->forward(x, nkv, mask);
        REQUIRE(rq.routed());
        REQUIRE(rkv.routed());
        CHECK(rkv.indices.shape() == Shape{B, 2, nkv});
        {  // the picks the layer reports are its routers' choices
          RoutedPicks picks;
          RoutedAttentionCall pc;
          pc.picks = &picks;
          check_close(a.forward(x, mask, pc), out, 0, 0);
          CHECK(picks.q_indices.to_vector<int64_t>() == rq.indices.to_vector<int64_t>());
          CHECK(picks.kv_indices.to_vector<int64_t>() == rkv.indices.to_vector<int64_t>());
        }
        std::vector<int64_t> qi = rq.indices.to_vector<int64_t>();
        std::vector<double> qs = rq.scores.to_vector<double>();
        for (int64_t b = 0; b < B; ++b) {
          AttentionCall ac{.context = rkv.routed_tokens.narrow(0, b, 1),
                           .mask = rkv.routed_mask.narrow(0, b, 1),
                           .scores_kv = rkv.scores.narrow(0, b, 1)};
          if (rotary) {
            ac.rotary_inv_freq = a.rotary_emb->inv_freq;
            ac.k_positions = rkv.indices.narrow(0, b, 1);
          }
          for (int64_t i = 0; i < N; ++i) {
            int64_t j = -1;
            for (int64_t jj = 0; jj < nq; ++jj)
              if (qi[b * nq + jj] == i) j = jj;
            Tensor want;
            if (j < 0) {
              want = tok(light_out, b, i) + a.null_q_token;  // unrouted: null_q_token through the heavy branch
            } else {
              // a routed token's output: the heavy branch applied to it alone
              if (rotary) ac.q_positions = from_vector_i64({i}, {1, 1});
              if (mult) ac.scores_q = full({1, 1}, qs[b * nq + j], kF64);
              Tensor alone = a.heavy_attn->forward(tok(x, b, i).view({1, 1, D}), ac).view({D});
              want = tok(light_out, b, i) + alone * qs[b * nq + j];
            }
            check_close(tok(out, b, i), want, 1e-11, 1e-11);
          }
        }
        // no null_q_token: unrouted positions get the light branch only
        if (!light && !rotary && !mult) {
          Generator g2(60);
          ConditionalRoutedAttention z({.dim = D, .num_heavy_tokens_q = nq, .num_heavy_tokens_kv = nkv,
                                        .num_routed_kv = 2, .has_light_attn = false, .heavy_dim_head = 4,
                                        .heavy_heads = 4, .router_kwargs = kSoftRouter, .use_null_q_tokens = false},
                                       g2);
          z.to(DType::f64);
          Tensor zo = z.forward(x, mask);
          RouterReturn zq = z.q_router->forward(x, nq, mask);
          std::vector<int64_t> zi = zq.indices.to_vector<int64_t>();
          for (int64_t b = 0; b < B; ++b)
            for (int64_t i = 0; i < N; ++i)
              if (std::find(zi.begin() + b * nq, zi.begin() + (b + 1) * nq, i) == zi.begin() + (b + 1) * nq)
                CHECK(max(abs(tok(zo, b, i))).item<double>() == 0.0);
        }
        // num_heavy_tokens >= N: nothing routed, scores 1, heavy attention over all tokens
        // (kv: each of the 2 routes sees the whole sequence); no null_q_token anywhere
        Tensor all = a.forward(x, mask, {.num_heavy_tokens_q = N, .num_heavy_tokens_kv = N + 1});
        AttentionCall full_call{.context = x.unsqueeze(1).expand({B, 2, N, D}),
                                .mask = mask.unsqueeze(1).expand({B, 2, N}),
                                .scores_kv = ones({B, 2, N}, kF64)};
        if (rotary) {
          full_call.rotary_inv_freq = a.rotary_emb->inv_freq;
          full_call.q_positions = arange(N);
          full_call.k_positions = arange(N);
        }
        if (mult) full_call.scores_q = ones({B, N}, kF64);
        check_close(all, light_out + a.heavy_attn->forward(x, full_call), 1e-11, 1e-11);
      }
}

TEST_CASE("layers blocks: straight-through routed attention outputs are unscaled heavy outputs") {
  const int64_t D = 8, B = 1, N = 10;
  Generator gen(65);
  ConditionalRoutedAttention a({.dim = D, .num_heavy_tokens_q = 3, .num_heavy_tokens_kv = 4, .has_light_attn = false,
                                .heavy_dim_head = 4, .heavy_heads = 2},
                               gen);
  a.to(DType::f64);
  Tensor x = randn64({B, N, D}, 66);
  RouterReturn rq = a.q_router->forward(x, 3);
  CHECK(min(rq.scores).item<double>() == 1.0);
  CHECK(max(rq.scores).item<double>() == 1.0);
  Tensor out = a.forward(x);
  CHECK(out.shape() == Shape{B, N, D});
}

TEST_CASE("layers blocks: ConditionalRoutedTransformerBlock keys and composition") {
  const int64_t D = 8, B = 2, N = 12;
  Generator gen(70);
  ConditionalRoutedTransformerBlock blk({.dim = D, .num_heavy_attn_tokens_q = 3, .num_heavy_attn_tokens_kv = 5,
                                         .num_routed_kv = 2, .num_heavy_ff_tokens = 4, .light_dim_head = 3,
                                         .light_heads = 2, .light_window_size = 4, .heavy_dim_head = 4,
                                         .heavy_heads = 4, .heavy_ff_mult = 2, .router_kwargs = kSoftRouter},
                                        gen);
  check_keys(blk, concat(concat({"conditional_ff.router.routing_token"},
                                concat(ff_keys("conditional_ff.light_ff."), ff_keys("conditional_ff.heavy_ff."))),
                         cra_keys("conditional_attn.", true, true, false)));
  blk.to(DType::f64);
  Tensor x = randn64({B, N, D}, 71);
  Tensor mask = random_mask(B, N, 0.8, 72);
  Tensor h = blk.conditional_attn->forward(x, mask) + x;
  check_close(blk.forward(x, mask), blk.conditional_ff->forward(h, mask) + h, 1e-12, 1e-12);
  CHECK_THROWS_AS(ConditionalRoutedTransformerBlock({.dim = D, .num_heavy_attn_tokens_q = 3,
                                                     .num_heavy_attn_tokens_kv = 5, .num_routed_kv = 3,
                                                     .num_heavy_ff_tokens = 4, .heavy_heads = 4},
                                                    gen),
                  Error);
  CHECK_THROWS_AS(ConditionalRoutedTransformerBlock({.dim = D, .num_heavy_attn_tokens_q = 3,
                                                     .num_heavy_attn_tokens_kv = 5, .num_heavy_ff_tokens = 0},
                                                    gen),
                  Error);
}

TEST_CASE("layers blocks: strict load of a state dict built by hand") {
  const int64_t D = 8;
  Generator gen(80);
  ConditionalRoutedAttentionConfig cfg{.dim = D, .num_heavy_tokens_q = 3, .num_heavy_tokens_kv = 4,
                                       .num_routed_kv = 2, .light_dim_head = 3, .light_heads = 2,
                                       .light_window_size = 4, .heavy_dim_head = 4, .heavy_heads = 4,
                                       .rotary_emb = true};
  // the package's keys and shapes, written out
  std::vector<std::pair<std::string, Shape>> spec = {
      {"null_q_token", {D}},
      {"light_attn.norm.weight", {D}},
      {"light_attn.norm.bias", {D}},
      {"light_attn.to_qkv.weight", {18, D}},
      {"light_attn.to_out.weight", {D, 6}},
      {"q_router.routing_token", {1, D}},
      {"kv_router.routing_token", {2, D}},
      {"heavy_attn.null_kv", {2, 4, 4}},
      {"heavy_attn.norm.gamma", {D}},
      {"heavy_attn.to_q.weight", {16, D}},
      {"heavy_attn.to_kv.weight", {32, D}},
      {"heavy_attn.to_out.weight", {D, 16}},
      {"rotary_emb.inv_freq", {2}},
  };
  std::map<std::string, Tensor> sd;
  uint64_t seed = 81;
  for (const auto& [k, s] : spec) sd[k] = randn(s, gen, {.dtype = DType::f32}) * (0.1 * static_cast<double>(++seed % 7 + 1));
  sd["rotary_emb.inv_freq"] = from_vector({1.0, 0.01});
  ConditionalRoutedAttention a(cfg, gen), b(cfg, gen);
  a.load_state_dict(sd);
  b.load_state_dict(sd);
  for (const auto& [k, t] : sd) CHECK(max(abs(a.get(k).detach() - t)).item<double>() == 0.0);
  Tensor x = randn({2, 10, D}, gen);
  CHECK(max(abs(a.forward(x) - b.forward(x))).item<double>() == 0.0);
  // every problem at once: a missing key, an unexpected key, a wrong shape
  auto broken = sd;
  broken.erase("heavy_attn.null_kv");
  broken["heavy_attn.extra"] = zeros({1});
  broken["kv_router.routing_token"] = zeros({1, D});
  std::string msg;
  try {
    a.load_state_dict(broken);
  } catch (const Error& e) {
    msg = e.what();
  }
  CHECK(msg.find("missing keys (1): heavy_attn.null_kv") != std::string::npos);
  CHECK(msg.find("unexpected keys (1): heavy_attn.extra") != std::string::npos);
  CHECK(msg.find("kv_router.routing_token: shape [1, 8]") != std::string::npos);
}

// ============================================================ f64 gradchecks of whole layers

TEST_CASE("layers blocks: gradcheck heavy Attention, LocalMHA, SelfAttention") {
  Generator gen(90);
  {
    Attention heavy({.dim = 6, .dim_head = 4, .heads = 4, .multiply_keys_by_score = true}, gen);
    heavy.to(DType::f64);
    Tensor x = rleaf({2, 3, 6}, 91), ctx = rleaf({2, 2, 4, 6}, 92);
    Tensor skv = rleaf({2, 2, 4}, 93, 0.2, 1.0), sq = rleaf({2, 3}, 94, 0.2, 1.0);
    Generator g(95);
    Tensor mask = lt(rand({2, 2, 4}, g), 0.6);
    Tensor inv = rotary_inv_freq(4, kF64);
    Tensor qp = randint(0, 20, {2, 3}, g), kp = randint(0, 20, {2, 2, 4}, g);
    module_gradcheck(heavy, {{"x", x}, {"context", ctx}, {"scores_kv", skv}, {"scores_q", sq}}, [&] {
      return heavy.forward(x, {.context = ctx, .mask = mask, .scores_kv = skv, .scores_q = sq,
                               .rotary_inv_freq = inv, .q_positions = qp, .k_positions = kp});
    });
  }
  for (bool causal : {false, true}) {
    INFO("causal " << causal);
    LocalMHA attn({.dim = 6, .window_size = 3, .dim_head = 2, .heads = 2, .causal = causal, .prenorm = true,
                   .exact_windowsize = !causal},
                  gen);
    attn.to(DType::f64);
    Tensor x = rleaf({2, 7, 6}, 96);
    Tensor mask = random_mask(2, 7, 0.7, 97);
    module_gradcheck(attn, {{"x", x}}, [&] { return attn.forward(x, mask); });
  }
  {
    SelfAttention attn({.dim = 6, .dim_head = 2, .heads = 2, .prenorm = true}, gen);
    attn.to(DType::f64);
    Tensor x = rleaf({2, 5, 6}, 98);
    module_gradcheck(attn, {{"x", x}}, [&] { return attn.forward(x); });
  }
}

TEST_CASE("layers blocks: gradcheck ConditionalRoutedFeedForward, routing active and inactive") {
  Generator gen(100);
  ConditionalRoutedFeedForward ff({.dim = 4, .num_heavy_tokens = 3, .heavy_ff_mult = 2,
                                   .router_straight_through = false, .router_kwargs = kSoftRouter},
                                  gen);
  ff.to(DType::f64);
  Tensor x = rleaf({2, 8, 4}, 101);
  Tensor mask = random_mask(2, 8, 0.8, 102);
  SUBCASE("routing active") { module_gradcheck(ff, {{"x", x}}, [&] { return ff.forward(x, mask); }); }
  SUBCASE("routing inactive") {
    module_gradcheck(ff, {{"x", x}}, [&] { return ff.forward(x, mask, {.num_heavy_tokens = 8}); });
  }
  SUBCASE("the package's default router settings (eps-scaling 4 -> 0.03, 20 iterations), soft scores") {
    Generator g2(103);
    ConditionalRoutedFeedForward d({.dim = 4, .num_heavy_tokens = 3, .heavy_ff_mult = 2,
                                    .router_straight_through = false},
                                   g2);
    d.to(DType::f64);
    module_gradcheck(d, {{"x", x}}, [&] { return d.forward(x, mask); }, 100000, 1e-5, 1e-3);
  }
}

TEST_CASE("layers blocks: gradcheck ConditionalRoutedAttention, routing active and inactive") {
  Generator gen(110);
  ConditionalRoutedAttention a({.dim = 6, .num_heavy_tokens_q = 3, .num_heavy_tokens_kv = 4, .num_routed_kv = 2,
                                .light_dim_head = 2, .light_heads = 2, .light_window_size = 4, .heavy_dim_head = 2,
                                .heavy_heads = 2, .router_straight_through = false, .router_kwargs = kSoftRouter,
                                .multiply_keys_by_score = true, .multiply_queries_by_score = true,
                                .rotary_emb = true},
                               gen);
  a.to(DType::f64);
  Tensor x = rleaf({2, 8, 6}, 111);
  Tensor mask = random_mask(2, 8, 0.8, 112);
  SUBCASE("routing active") { module_gradcheck(a, {{"x", x}}, [&] { return a.forward(x, mask); }); }
  SUBCASE("routing inactive") {
    module_gradcheck(a, {{"x", x}}, [&] {
      return a.forward(x, mask, {.num_heavy_tokens_q = 8, .num_heavy_tokens_kv = 8});
    });
  }
  SUBCASE("queries routed, key/values not") {
    module_gradcheck(a, {{"x", x}}, [&] { return a.forward(x, mask, {.num_heavy_tokens_kv = 8}); });
  }
}

TEST_CASE("layers blocks: gradcheck ConditionalRoutedTransformerBlock") {
  Generator gen(120);
  ConditionalRoutedTransformerBlock blk({.dim = 4, .num_heavy_attn_tokens_q = 3, .num_heavy_attn_tokens_kv = 4,
                                         .num_heavy_ff_tokens = 3, .light_dim_head = 2, .light_heads = 2,
                                         .light_window_size = 4, .heavy_dim_head = 2, .heavy_heads = 2,
                                         .heavy_ff_mult = 1, .router_straight_through = false,
                                         .router_kwargs = kSoftRouter},
                                        gen);
  blk.to(DType::f64);
  Tensor x = rleaf({1, 7, 4}, 121);
  module_gradcheck(blk, {{"x", x}}, [&] { return blk.forward(x); });
}
