#include "layers/routed_autoregressive_attention.h"

#include <algorithm>
#include <cfloat>
#include <limits>

#include "layers/routed_feed_forward.h"  // layer_router_config
#include "layers/routed_heavy_branch.h"
#include "ops/attention.h"
#include "ops/coor_descent.h"
#include "ops/elementwise.h"
#include "ops/index.h"
#include "ops/matmul.h"
#include "ops/norm.h"
#include "ops/rotary.h"
#include "ops/routing.h"
#include "ops/shape_ops.h"
#include "ops/topk.h"
#include "engine/checkpoint.h"

namespace colt5 {

// ---------------------------------------------------------------- routing from scores

Tensor router_token_scores(const CoordinateDescentRouter& router, const Tensor& x) {
  const RouterConfig& c = router.config();
  COLT5_CHECK(router.routing_token.defined(), "router_token_scores: the router has no routing_token ",
              "(learned_routing_tokens)");
  COLT5_CHECK(x.defined() && x.dim() == 3 && x.size(2) == router.dim(), "router_token_scores: x must be (batch, seq, ",
              router.dim(), ")");
  Tensor tok = router.routing_token, xq = x;
  if (c.cosine_sim_routing) {
    xq = l2norm(xq, -1);
    tok = l2norm(tok, -1);
  }
  Tensor s = matmul(tok, xq.transpose(1, 2));  // (B, R, N)
  if (c.cosine_sim_routing) s = s * c.cosine_sim_scale;
  return s;
}

ScoreRouting route_from_scores(const Tensor& s, int64_t num_tokens, const Tensor& mask, const RouterConfig& cfg,
                               const RouteOptions& o, bool zero_masked_scores) {
  COLT5_CHECK(s.defined() && s.dim() >= 1, "route_from_scores: scores must have at least one dim");
  const int64_t n = s.size(-1);
  COLT5_CHECK(num_tokens >= 1 && num_tokens <= n, "route_from_scores: num_tokens must be in [1, ", n, "], got ",
              num_tokens);
  Tensor c;
  if (o.random_route) {
    Generator& gen = o.generator ? *o.generator : default_generator();
    c = randn(s.shape(), gen, {.dtype = s.dtype(), .device = s.device()});
    const double neg = s.dtype() == DType::f64 ? -DBL_MAX : -static_cast<double>(FLT_MAX);
    if (mask.defined()) c = where(mask, c, neg);
  } else {
    const double k = std::min(static_cast<double>(num_tokens) * cfg.fetch_k_ratio, static_cast<double>(n));
    CoorDescentOptions co{.n_iters = cfg.n_iters,
                          .eps = cfg.eps,
                          .eps_init = cfg.eps_init.value_or(0.0),
                          .eps_decay = cfg.eps_decay,
                          .checkpoint_segments = cfg.triton_checkpoint_segments.value_or(1)};
    c = coor_descent(s.contiguous(), k, mask, co);
  }
  TopK top = hard_topk(c, num_tokens);
  ScoreRouting r{top.indices, top.values};
  if (cfg.straight_through) {
    r.scores = (r.scores - r.scores.detach()) + 1.0;
    if (mask.defined() && zero_masked_scores) {
      Tensor m = mask.to(c.dtype()).expand(c.shape()).contiguous();
      Tensor valid = gt(gather(m, -1, r.indices), 0.5);
      r.scores = where(valid, r.scores, 0.0);
    }
  }
  return r;
}

// ---------------------------------------------------------------- the layer

LocalMHAConfig autoregressive_light_attn_config(const ConditionalRoutedAutoregressiveAttentionConfig& c) {
  return LocalMHAConfig{.dim = c.dim,
                        .window_size = c.light_window_size,
                        .dim_head = c.light_dim_head,
                        .heads = c.light_heads,
                        .causal = true,
                        .prenorm = true,
                        .exact_windowsize = false,
                        .look_backward = 1,
                        .look_forward = 0};
}

ConditionalRoutedAutoregressiveAttention::ConditionalRoutedAutoregressiveAttention(
    const ConditionalRoutedAutoregressiveAttentionConfig& config, Generator& gen)
    : cfg_(config) {
  const char* who = "ConditionalRoutedAutoregressiveAttention";
  const auto& c = cfg_;
  const RoutedHeavyBranchConfig heavy = routed_heavy_branch_config(c);
  check_routed_heavy_branch_config(heavy, who);
  COLT5_CHECK(c.heavy_chunk_bytes >= 1, who, ": heavy_chunk_bytes must be >= 1, got ", c.heavy_chunk_bytes);
  COLT5_CHECK(c.light_heads > 0 && c.light_dim_head > 0, who, ": light_heads and light_dim_head must be positive");
  COLT5_CHECK(c.light_window_size >= 1, who, ": light_window_size must be >= 1, got ", c.light_window_size);
  COLT5_CHECK(!c.heavy_window_size || *c.heavy_window_size >= 1, who, ": heavy_window_size must be >= 1, got ",
              c.heavy_window_size.value_or(0));
  COLT5_CHECK(!c.rotary_emb || c.heavy_dim_head % 2 == 0, who, ": rotary_emb needs an even heavy_dim_head, got ",
              c.heavy_dim_head);
  COLT5_CHECK(!c.router_kwargs.route_block_size, who,
              ": router_kwargs.route_block_size is not supported (the routing rows are the windows' prefixes)");
  RouterConfig q_rc = layer_router_config(c.router_kwargs, c.router_straight_through, 1, c.use_triton, who);
  RouterConfig kv_rc =
      layer_router_config(c.router_kwargs, c.router_straight_through, c.num_routed_kv, c.use_triton, who);

  // The package's construction order: light_attn, null_q_token, q_router, kv_router, heavy_attn, rotary_emb.
  light_attn = register_module("light_attn", std::make_shared<LocalMHA>(autoregressive_light_attn_config(c), gen));
  register_routed_heavy_branch(*this, heavy, q_rc, kv_rc, gen, null_q_token, q_router, kv_router, heavy_attn);
  if (c.rotary_emb) rotary_emb = register_module("rotary_emb", std::make_shared<RotaryEmbedding>(c.heavy_dim_head));
}

Tensor ConditionalRoutedAutoregressiveAttention::forward(const Tensor& x, const RoutedAttentionCall& call) const {
  const char* who = "ConditionalRoutedAutoregressiveAttention";
  const auto& c = cfg_;
  COLT5_CHECK(x.defined() && x.dim() == 3 && x.size(2) == c.dim, who, ": x must be (batch, seq, ", c.dim, "), got ",
              x.defined() ? shape_str(x.shape()) : std::string("an undefined tensor"));
  const int64_t B = x.size(0), N = x.size(1), D = c.dim, W = heavy_window_size();
  const int64_t ntq = call.num_heavy_tokens_q.value_or(c.num_heavy_tokens_q);
  const int64_t ntkv = call.num_heavy_tokens_kv.value_or(c.num_heavy_tokens_kv);
  COLT5_CHECK(ntq >= 1 && ntkv >= 1, who, ": the numbers of heavy tokens must be >= 1");
  if (call.picks) *call.picks = {};
  const Options fopt{.dtype = x.dtype(), .device = x.device()};
  const Options iopt{.dtype = DType::i64, .device = x.device()};

  // light causal local attention
  Tensor light = light_attn->forward(x);

  const int64_t nw = (N + W - 1) / W, Np = nw * W;
  if (nw <= 1) return light;  // only window 0: no heavy output
  const int64_t nwq = nw - 1, rows = B * nwq;  // windows 1 .. nw-1 have a past
  const int64_t R = c.num_routed_kv, h = c.heavy_heads, dh = c.heavy_dim_head, hr = h / R;
  Tensor xp = Np > N ? cat({x, zeros({B, Np - N, D}, fopt)}, 1) : x;  // (B, Np, D)
  // limit[j] = (j + 1) W: window j + 1 sees keys < limit[j]
  Tensor limit = arange(static_cast<double>(W), static_cast<double>(Np), static_cast<double>(W), iopt);  // (nwq)

  // ---- queries: routed within their window (padding masked)
  const bool route_q = W > ntq;
  const int64_t nq = route_q ? ntq : W;
  Tensor q_idx, q_scores;  // (B, nwq nq) global positions, scores
  if (route_q) {
    Tensor sq = router_token_scores(*q_router, xp).view({B, nw, W}).narrow(1, 1, nwq);  // (B, nwq, W)
    Tensor qmask;
    if (Np > N) qmask = lt(arange(static_cast<double>(W), static_cast<double>(Np), 1.0, iopt).view({1, nwq, W}),
                           static_cast<double>(N));
    ScoreRouting r = route_from_scores(sq, ntq, qmask, q_router->config(), call.route);
    q_idx = (r.indices + limit.view({1, nwq, 1})).reshape({B, nwq * nq});
    q_scores = r.scores.reshape({B, nwq * nq});
  }

  // ---- key/values: one row per window over the padded sequence, prefix mask; scores computed once
  const bool route_kv = Np > ntkv;
  const int64_t nk = route_kv ? ntkv : Np;
  Tensor kv_idx, kv_scores, kv_valid;  // (B, nwq, R, ntkv)
  if (route_kv) {
    Tensor skv = router_token_scores(*kv_router, xp);                  // (B, R, Np)
    Tensor srows = skv.unsqueeze(1).expand({B, nwq, R, Np});             // a broadcast view
    Tensor lim4 = limit.view({1, nwq, 1, 1});
    Tensor kvmask = lt(arange(Np, iopt).view({1, 1, 1, Np}), lim4);      // (1, nwq, 1, Np)
    // validity of a picked index is positional: straight-through zeros where it is >= the window's limit
    ScoreRouting r = route_from_scores(srows, ntkv, kvmask, kv_router->config(), call.route, false);
    kv_idx = r.indices;
    kv_valid = lt(kv_idx, lim4);
    kv_scores = kv_router->config().straight_through ? where(kv_valid, r.scores, 0.0) : r.scores;
  }
  if (call.picks) {
    call.picks->q_indices = route_q ? q_idx.detach().view({B, nwq, nq}) : Tensor();
    call.picks->kv_indices = route_kv ? kv_idx.detach().reshape({B, nwq, R * ntkv}) : Tensor();
  }

  // ---- heavy attention (SPEC §3.1) on the routed tokens, projecting every token once
  const Attention& A = *heavy_attn;
  Tensor xn = A.norm->forward(xp);  // (B, Np, D)
  Tensor qtok = route_q ? gather_tokens(xn, q_idx) : xn.narrow(1, W, Np - W);  // (B, nwq nq, D)
  Tensor q = A.to_q->forward(qtok).view({rows, nq, h, dh}).permute({0, 2, 1, 3});  // (rows, h, nq, dh)
  if (c.multiply_queries_by_score && route_q) q = q * q_scores.view({rows, 1, nq, 1});
  Tensor inv_freq = rotary_emb ? rotary_emb->inv_freq : Tensor();
  if (rotary_emb) {
    Tensor qpos = route_q ? q_idx.view({rows, 1, nq})
                          : arange(static_cast<double>(W), static_cast<double>(Np), 1.0, iopt)
                                .view({1, nwq, W})
                                .expand({B, nwq, W})
                                .reshape({rows, 1, W});
    q = apply_rotary(q, qpos, inv_freq);
  }
  // to_kv rows are (head, c) with c < dh a key channel: split into key and value weights (h dh, D)
  Tensor wkv = A.to_kv->weight.view({h, 2, dh, D});
  Tensor k_all = linear(xn, wkv.select(1, 0).reshape({h * dh, D}));  // (B, Np, h dh)
  Tensor v_all = linear(xn, wkv.select(1, 1).reshape({h * dh, D}));
  // Rotary rotates a key by its own position, so it is applied once per token
  // here rather than to every gathered copy (it is linear: commutes with the
  // multiplication by the routing score).
  if (rotary_emb)
    k_all = apply_rotary(k_all.view({B, Np, h, dh}).permute({0, 2, 1, 3}), arange(Np, iopt), inv_freq)
                .permute({0, 2, 1, 3})
                .reshape({B, Np, h * dh});
  AttentionOptions ao;
  ao.allow_tf32 = A.config().allow_tf32;
  ao.fused = A.config().fused;
  // Windows are processed in chunks of `nc`, each one checkpointed: the
  // gathered keys/values of a chunk (B nc ntkv tokens per route) exist only
  // while that chunk's attention runs, in the forward and again in the
  // backward, instead of for every window at once. Sized so that a chunk's
  // gathered keys + values stay near heavy_chunk_bytes.
  const int64_t tok_bytes = 2 * (h / R) * dh * static_cast<int64_t>(dtype_size(x.dtype()));
  const int64_t nc = std::clamp<int64_t>(c.heavy_chunk_bytes / std::max<int64_t>(1, B * nk * tok_bytes), 1, nwq);
  std::vector<Tensor> outs;
  for (int64_t r = 0; r < R; ++r) {  // each route's heads see only that route's key/values
    Tensor kr = k_all.narrow(2, r * hr * dh, hr * dh), vr = v_all.narrow(2, r * hr * dh, hr * dh);  // (B, Np, hr dh)
    Tensor qr = q.narrow(1, r * hr, hr).reshape({B, nwq, hr, nq, dh});
    ao.null_k = A.null_kv.select(0, 0).narrow(0, r * hr, hr);
    ao.null_v = A.null_kv.select(0, 1).narrow(0, r * hr, hr);
    std::vector<Tensor> chunks;
    for (int64_t w0 = 0; w0 < nwq; w0 += nc) {
      const int64_t n = std::min(nc, nwq - w0);
      Tensor qc = qr.narrow(1, w0, n).reshape({B * n, hr, nq, dh});
      if (!route_kv) {  // every token of the padded sequence, prefix-masked (Np <= num_heavy_tokens_kv: bounded)
        Tensor mask = lt(arange(Np, iopt).view({1, 1, Np}), limit.narrow(0, w0, n).view({1, n, 1}))
                          .expand({B, n, Np})
                          .reshape({B * n, Np});
        Tensor kc = kr.unsqueeze(1).expand({B, n, Np, hr * dh}).reshape({B * n, Np, hr, dh}).permute({0, 2, 1, 3});
        Tensor vc = vr.unsqueeze(1).expand({B, n, Np, hr * dh}).reshape({B * n, Np, hr, dh}).permute({0, 2, 1, 3});
        chunks.push_back(attention(qc, kc, vc, mask, ao));
        continue;
      }
      Tensor idx = kv_idx.select(2, r).narrow(1, w0, n), sc = kv_scores.select(2, r).narrow(1, w0, n);  // (B, n, ntkv)
      Tensor mask = kv_valid.select(2, r).narrow(1, w0, n).reshape({B * n, nk});
      const bool scale_keys = c.multiply_keys_by_score;
      AttentionOptions aoc = ao;  // null key/value come in as inputs (they need gradients)
      aoc.null_k = aoc.null_v = Tensor();
      chunks.push_back(checkpoint(
          [=](const std::vector<Tensor>& in) {
            // in: q chunk, route keys, route values, scores, null_k, null_v
            AttentionOptions o = aoc;
            o.null_k = in[4];
            o.null_v = in[5];
            Tensor kg = scale_keys ? gather_tokens_scaled(in[1], idx, in[3]) : gather_tokens(in[1], idx);
            Tensor vg = gather_tokens_scaled(in[2], idx, in[3]);  // (B, n, ntkv, hr dh)
            kg = kg.reshape({B * n, nk, hr, dh}).permute({0, 2, 1, 3});  // (B n, hr, nk, dh)
            vg = vg.reshape({B * n, nk, hr, dh}).permute({0, 2, 1, 3});
            return attention(in[0], kg, vg, mask, o);
          },
          {qc, kr, vr, sc, ao.null_k, ao.null_v}));
    }
    Tensor oc = chunks[0];  // (B n, hr, nq, dh) per chunk
    if (chunks.size() > 1) {  // back to (B, nwq) row order
      std::vector<Tensor> per;
      for (const Tensor& t : chunks) per.push_back(t.reshape({B, t.size(0) / B, hr, nq, dh}));
      oc = cat(per, 1).reshape({rows, hr, nq, dh});
    }
    outs.push_back(oc);  // (rows, hr, nq, dh)
  }
  Tensor o = R == 1 ? outs[0] : cat(outs, 1);  // (rows, h, nq, dh)
  Tensor routed_out = A.to_out->forward(o.permute({0, 2, 1, 3}).reshape({B, nwq * nq, h * dh}));  // (B, nwq nq, D)

  // ---- scatter into null_q_token (zeros in window 0), crop to N
  Tensor heavy;
  if (route_q) {
    Tensor base = null_q_token.defined()
                      ? cat({zeros({B, W, D}, fopt), null_q_token.view({1, 1, D}).expand({B, Np - W, D})}, 1)
                      : zeros({B, Np, D}, fopt);
    heavy = route_back_scaled(base, routed_out, q_idx, q_scores);
  } else {
    heavy = cat({zeros({B, W, D}, fopt), routed_out}, 1);  // scores are ones
  }
  return light + heavy.narrow(1, 0, N);
}

}  // namespace colt5
