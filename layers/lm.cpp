#include "layers/lm.h"

#include "engine/autograd.h"
#include "layers/feed_forward.h"
#include "layers/local_mha.h"
#include "layers/routed_autoregressive_attention.h"
#include "layers/routed_feed_forward.h"
#include "ops/elementwise.h"
#include "ops/index.h"
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
  std::shared_ptr<ConditionalRoutedAutoregressiveAttention> attn;
  std::shared_ptr<ConditionalRoutedFeedForward> ff;
  std::shared_ptr<LocalMHA> light_attn;   // light_only
  std::shared_ptr<FeedForward> light_ff;  // light_only

  Block(const ColT5LMConfig& c, Generator& gen) {
    RouterConfig rk;
    rk.eps = c.router_eps;
    rk.n_iters = c.router_iters;
    const ConditionalRoutedAutoregressiveAttentionConfig ac{.dim = c.dim,
                                                            .num_heavy_tokens_q = c.num_heavy_tokens_q,
                                                            .num_heavy_tokens_kv = c.num_heavy_tokens_kv,
                                                            .num_routed_kv = c.num_routed_kv,
                                                            .light_dim_head = c.light_dim_head,
                                                            .light_heads = c.light_heads,
                                                            .light_window_size = c.light_window_size,
                                                            .heavy_window_size = c.heavy_window_size,
                                                            .heavy_dim_head = c.heavy_dim_head,
                                                            .heavy_heads = c.heavy_heads,
                                                            .router_kwargs = rk,
                                                            .rotary_emb = c.rotary};
    if (c.light_only) {  // the routed attention's light branch alone
      light_attn = register_module("attn", std::make_shared<LocalMHA>(autoregressive_light_attn_config(ac), gen));
      light_ff = register_module("ff", std::make_shared<FeedForward>(c.dim, c.light_ff_mult, gen));
      return;
    }
    attn = register_module("attn", std::make_shared<ConditionalRoutedAutoregressiveAttention>(ac, gen));
    ff = register_module("ff", std::make_shared<ConditionalRoutedFeedForward>(
                                   ConditionalRoutedFeedForwardConfig{.dim = c.dim,
                                                                      .num_heavy_tokens = c.num_heavy_ff_tokens,
                                                                      .light_ff_mult = c.light_ff_mult,
                                                                      .heavy_ff_mult = c.heavy_ff_mult,
                                                                      .router_kwargs = rk},
                                   gen));
  }

  Tensor forward(const Tensor& x, const LMCall& call, LayerTrace* tr) const {
    if (light_attn) {
      Tensor h = light_attn->forward(x) + x;
      return light_ff->forward(h) + h;
    }
    // the trace is what the layers report they picked
    RoutedPicks picks;
    RoutedAttentionCall ac;
    ac.route = call.route;
    if (tr) ac.picks = &picks;
    Tensor h = attn->forward(x, ac) + x;
    RoutedFeedForwardCall fc;
    fc.route = call.route;
    if (tr) {
      tr->q_indices = picks.q_indices;
      tr->kv_indices = picks.kv_indices;
      fc.picked = &tr->ff_indices;
    }
    return ff->forward(h, {}, fc) + h;
  }
};

}  // namespace

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
  COLT5_CHECK(tokens.dim() == 2 && tokens.dtype() == DType::i64, "ColT5LM: tokens must be i64 (batch, seq), got ",
              shape_str(tokens.shape()));
  // the embedding member may have been replaced by to(device): read it by name
  Tensor x = embedding(get("token_emb.weight"), tokens);
  if (call.trace) call.trace->assign(layers->size(), {});
  for (size_t i = 0; i < layers->size(); ++i)
    x = layers->at<Block>(i)->forward(x, call, call.trace ? &(*call.trace)[i] : nullptr);
  return to_logits->forward(norm->forward(x));
}

}  // namespace colt5
