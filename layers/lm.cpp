#include "layers/lm.h"

#include "engine/autograd.h"
#include "ops/elementwise.h"
#include "ops/index.h"
#include "ops/routing.h"
#include "ops/shape_ops.h"

namespace colt5 {
namespace {

struct Embedding : Module {
  Tensor weight;  // (V, D), standard normal like nn.Embedding
  Embedding(int64_t v, int64_t d, Generator& gen) {
    register_parameter("weight", weight, empty({v, d}));
    init_normal(weight, gen);
  }
};

// One block: attn + residual, ff + residual. Routed or light-only.
struct Block : Module {
  std::shared_ptr<CausalRoutedAttention> attn;
  std::shared_ptr<ConditionalRoutedFeedForward> ff;
  std::shared_ptr<LocalMHA> light_attn;   // light_only
  std::shared_ptr<FeedForward> light_ff;  // light_only
  int64_t n_ff = 0;

  Block(const ColT5LMConfig& c, Generator& gen) : n_ff(c.num_heavy_ff_tokens) {
    RouterConfig rk;
    rk.eps = c.router_eps;
    rk.n_iters = c.router_iters;
    if (c.light_only) {
      light_attn = register_module("attn", std::make_shared<LocalMHA>(
                                               LocalMHAConfig{.dim = c.dim,
                                                              .window_size = c.light_window_size,
                                                              .dim_head = c.light_dim_head,
                                                              .heads = c.light_heads,
                                                              .causal = true,
                                                              .prenorm = true,
                                                              .exact_windowsize = true,
                                                              .look_backward = 1,
                                                              .look_forward = 0},
                                               gen));
      light_ff = register_module("ff", std::make_shared<FeedForward>(c.dim, c.light_ff_mult, gen));
    } else {
      attn = register_module("attn", std::make_shared<CausalRoutedAttention>(
                                         CausalRoutedAttentionConfig{.dim = c.dim,
                                                                     .num_heavy_tokens_q = c.num_heavy_tokens_q,
                                                                     .num_heavy_tokens_kv = c.num_heavy_tokens_kv,
                                                                     .light_dim_head = c.light_dim_head,
                                                                     .light_heads = c.light_heads,
                                                                     .light_window_size = c.light_window_size,
                                                                     .heavy_window_size = c.heavy_window_size,
                                                                     .heavy_dim_head = c.heavy_dim_head,
                                                                     .heavy_heads = c.heavy_heads,
                                                                     .router_kwargs = rk},
                                         gen));
      ff = register_module("ff", std::make_shared<ConditionalRoutedFeedForward>(
                                     ConditionalRoutedFeedForwardConfig{.dim = c.dim,
                                                                        .num_heavy_tokens = c.num_heavy_ff_tokens,
                                                                        .light_ff_mult = c.light_ff_mult,
                                                                        .heavy_ff_mult = c.heavy_ff_mult,
                                                                        .router_kwargs = rk},
                                     gen));
    }
  }

  Tensor forward(const Tensor& x, const LMCall& call, LayerTrace* tr) const {
    if (light_attn) {
      Tensor h = light_attn->forward(x) + x;
      return light_ff->forward(h) + h;
    }
    Tensor h = attn->forward(x, call.route, tr) + x;
    if (tr && x.size(1) > n_ff) {
      NoGradGuard ng;
      RouteOptions ro = call.route;
      Generator copy = ro.generator ? *ro.generator : Generator(0);  // don't disturb the training stream
      if (ro.generator) ro.generator = &copy;
      tr->ff_indices = ff->router->forward(h.detach(), n_ff, {}, ro).indices;
    }
    RoutedFeedForwardCall fc;
    fc.route = call.route;
    return ff->forward(h, {}, fc) + h;
  }
};

}  // namespace

CausalRoutedAttention::CausalRoutedAttention(const CausalRoutedAttentionConfig& config, Generator& gen) : cfg_(config) {
  const auto& c = cfg_;
  const char* who = "CausalRoutedAttention";
  COLT5_CHECK(c.dim > 0 && c.heavy_window_size >= 2 && c.light_window_size >= 1, who, ": bad sizes");
  COLT5_CHECK(c.num_heavy_tokens_q >= 1 && c.num_heavy_tokens_q <= c.heavy_window_size, who,
              ": num_heavy_tokens_q must be in [1, heavy_window_size], got ", c.num_heavy_tokens_q);
  COLT5_CHECK(c.num_heavy_tokens_kv >= 1, who, ": num_heavy_tokens_kv must be >= 1");
  light_attn = register_module("light_attn", std::make_shared<LocalMHA>(
                                                 LocalMHAConfig{.dim = c.dim,
                                                                .window_size = c.light_window_size,
                                                                .dim_head = c.light_dim_head,
                                                                .heads = c.light_heads,
                                                                .causal = true,
                                                                .prenorm = true,
                                                                .exact_windowsize = true,
                                                                .look_backward = 1,
                                                                .look_forward = 0},
                                                 gen));
  if (c.use_null_q_tokens) {
    register_parameter("null_q_token", null_q_token, empty({c.dim}));
    init_normal(null_q_token, gen);
  }
  RouterConfig rc = layer_router_config(c.router_kwargs, true, 1, false, who);
  q_router = register_module("q_router", std::make_shared<CoordinateDescentRouter>(c.dim, rc, gen));
  kv_router = register_module("kv_router", std::make_shared<CoordinateDescentRouter>(c.dim, rc, gen));
  heavy_attn = register_module(
      "heavy_attn",
      std::make_shared<Attention>(AttentionConfig{.dim = c.dim, .dim_head = c.heavy_dim_head, .heads = c.heavy_heads},
                                  gen));
}

Tensor CausalRoutedAttention::forward(const Tensor& x, const RouteOptions& route, LayerTrace* trace) const {
  const auto& c = cfg_;
  COLT5_CHECK(x.dim() == 3 && x.size(2) == c.dim, "CausalRoutedAttention: x must be (batch, seq, ", c.dim, ")");
  const int64_t B = x.size(0), N = x.size(1), D = c.dim, W = c.heavy_window_size;
  Tensor light = light_attn->forward(x);
  const int64_t nw = (N + W - 1) / W;
  if (nw < 2) return light;  // window 0 gets no heavy output
  const int64_t Np = nw * W, nq = nw - 1, M = nq * W;
  Tensor xp = Np > N ? cat({x, zeros({B, Np - N, D}, {.dtype = x.dtype(), .device = x.device()})}, 1) : x;

  // queries: windows 1 .. nw-1, each its own row, padding masked
  Tensor xq = xp.narrow(1, W, M).reshape({B * nq, W, D});
  Tensor qmask;
  if (Np > N) {
    std::vector<bool> m(B * M);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < M; ++t) m[b * M + t] = W + t < N;
    qmask = from_vector_bool(m, {B * nq, W}).to(x.device());
  }
  RouterReturn rq = q_router->forward(xq, c.num_heavy_tokens_q, qmask, route);

  // key/values: for window i, all tokens of windows 0 .. i-1 (one row per window, prefix mask)
  Tensor xkv = xp.narrow(1, 0, M).unsqueeze(1).expand({B, nq, M, D}).reshape({B * nq, M, D});
  std::vector<bool> km(B * nq * M);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < nq; ++i)
      for (int64_t t = 0; t < M; ++t) km[(b * nq + i) * M + t] = t < (i + 1) * W && t < N;
  Tensor kmask = from_vector_bool(km, {B * nq, M}).to(x.device());
  RouterReturn rkv = kv_router->forward(xkv, c.num_heavy_tokens_kv, kmask, route);

  AttentionCall ac;
  ac.context = rkv.routed_tokens;
  ac.mask = rkv.routed_mask;
  ac.scores_kv = rkv.scores;
  Tensor routed_out = heavy_attn->forward(rq.routed_tokens, ac);  // (B nq, nq_tokens, D)

  Tensor heavy;
  if (rq.routed()) {
    Tensor base = null_q_token.defined() ? null_q_token.view({1, 1, D}).expand({B * nq, W, D})
                                         : zeros({B * nq, W, D}, {.dtype = x.dtype(), .device = x.device()});
    heavy = route_back_scaled(base, routed_out, rq.indices, rq.scores);
  } else {
    heavy = routed_out;
  }
  heavy = heavy.reshape({B, M, D});
  heavy = cat({zeros({B, W, D}, {.dtype = x.dtype(), .device = x.device()}), heavy}, 1).narrow(1, 0, N);

  if (trace) {
    NoGradGuard ng;
    Tensor off = (arange(nq, {.dtype = DType::i64, .device = x.device()}) * W + W).view({1, nq, 1});
    if (rq.routed()) trace->q_indices = rq.indices.view({B, nq, -1}) + off;
    if (rkv.routed()) trace->kv_indices = rkv.indices.view({B, nq, -1});
  }
  return light + heavy;
}

ColT5LM::ColT5LM(const ColT5LMConfig& config, Generator& gen) : cfg_(config) {
  const auto& c = cfg_;
  COLT5_CHECK(c.vocab_size >= 2 && c.dim >= 1 && c.depth >= 1, "ColT5LM: bad sizes (vocab ", c.vocab_size, ", dim ",
              c.dim, ", depth ", c.depth, ")");
  register_module("token_emb", std::make_shared<Embedding>(c.vocab_size, c.dim, gen));
  layers = register_module("layers", std::make_shared<ModuleList>());
  for (int64_t i = 0; i < c.depth; ++i) layers->push_back(std::make_shared<Block>(c, gen));
  norm = register_module("norm", std::make_shared<RMSNorm>(c.dim));
  to_logits = register_module("to_logits", std::make_shared<Linear>(c.dim, c.vocab_size, false, gen));
}

Tensor ColT5LM::forward(const Tensor& tokens, const LMCall& call) const {
  COLT5_CHECK(tokens.dim() == 2 && tokens.dtype() == DType::i64, "ColT5LM: tokens must be i64 (batch, seq)");
  // the embedding member may have been replaced by to(device): read it by name
  Tensor x = embedding(get("token_emb.weight"), tokens);
  if (call.trace) call.trace->assign(layers->size(), {});
  for (size_t i = 0; i < layers->size(); ++i)
    x = layers->at<Block>(i)->forward(x, call, call.trace ? &(*call.trace)[i] : nullptr);
  return to_logits->forward(norm->forward(x));
}

}  // namespace colt5
