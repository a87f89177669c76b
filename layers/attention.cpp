#include "layers/attention.h"

#include "ops/attention.h"
#include "ops/elementwise.h"
#include "ops/matmul.h"
#include "ops/rotary.h"

namespace colt5 {

namespace {
std::string shape_or_none(const Tensor& t) { return t.defined() ? shape_str(t.shape()) : std::string("(none)"); }
}  // namespace

Attention::Attention(const AttentionConfig& config, Generator& gen) : cfg_(config) {
  const char* who = "Attention";
  COLT5_CHECK(cfg_.dim > 0, who, ": dim must be positive, got ", cfg_.dim);
  COLT5_CHECK(cfg_.dim_head > 0 && cfg_.heads > 0, who, ": dim_head and heads must be positive, got ", cfg_.dim_head,
              " and ", cfg_.heads);
  const int64_t inner = cfg_.dim_head * cfg_.heads;
  // The package's construction order: norm, null_kv, to_q, to_kv, to_out.
  norm = register_module("norm", std::make_shared<RMSNorm>(cfg_.dim));
  register_parameter("null_kv", null_kv, empty({2, cfg_.heads, cfg_.dim_head}));
  init_normal(null_kv, gen);
  to_q = register_module("to_q", std::make_shared<Linear>(cfg_.dim, inner, false, gen));
  to_kv = register_module("to_kv", std::make_shared<Linear>(cfg_.dim, inner * 2, false, gen));
  to_out = register_module("to_out", std::make_shared<Linear>(inner, cfg_.dim, false, gen));
}

Tensor Attention::forward(const Tensor& x0, const AttentionCall& a) const {
  const char* who = "Attention";
  const int64_t D = cfg_.dim, h = cfg_.heads, dh = cfg_.dim_head;
  COLT5_CHECK(x0.defined() && x0.dim() == 3 && x0.size(2) == D, who, ": x must be (batch, seq, ", D, "), got ",
              shape_or_none(x0));
  const int64_t B = x0.size(0), Nq = x0.size(1);

  // 1. prenorm; context viewed as (B, R, Nk, D)
  Tensor x = norm->forward(x0);
  Tensor ctx = x;
  if (a.context.defined()) {
    COLT5_CHECK((a.context.dim() == 3 || a.context.dim() == 4) && a.context.size(0) == B && a.context.size(-1) == D,
                who, ": context must be (", B, ", Nk, ", D, ") or (", B, ", R, Nk, ", D, "), got ",
                shape_str(a.context.shape()));
    ctx = norm->forward(a.context);
  }
  if (ctx.dim() == 3) ctx = ctx.unsqueeze(1);
  const int64_t R = ctx.size(1), Nk = ctx.size(2);
  COLT5_CHECK(h % R == 0, who, ": number of heads (", h, ") must be divisible by the number of key / value routes (",
              R, ")");
  const int64_t hr = h / R;

  // 2. queries (B, h, Nq, dh)
  Tensor q = to_q->forward(x).view({B, Nq, h, dh}).permute({0, 2, 1, 3});
  if (a.scores_q.defined()) {
    COLT5_CHECK(a.scores_q.shape() == Shape({B, Nq}), who, ": scores_q must be (", B, ", ", Nq, "), got ",
                shape_str(a.scores_q.shape()));
    q = q * a.scores_q.view({B, 1, Nq, 1});
  }

  // 3. keys / values per route: rows of to_kv are (r, j, c) with c in [0, 2 dh)
  Tensor kv;  // (B, R, Nk, hr * 2 dh)
  if (R == 1) {
    kv = to_kv->forward(ctx);
  } else {
    Tensor w = to_kv->weight.view({R, hr * 2 * dh, D});
    kv = matmul(ctx, w.transpose(1, 2));
  }
  kv = kv.view({B, R, Nk, hr, 2 * dh}).permute({0, 1, 3, 2, 4});  // (B, R, hr, Nk, 2 dh)
  Tensor k = kv.narrow(-1, 0, dh), v = kv.narrow(-1, dh, dh);

  // 4. scores on values (and keys)
  if (a.scores_kv.defined()) {
    const Tensor& s = a.scores_kv;
    const bool ok = (s.dim() == 2 && s.size(0) == B && s.size(1) == Nk) ||
                    (s.dim() == 3 && s.size(0) == B && s.size(1) == R && s.size(2) == Nk);
    COLT5_CHECK(ok, who, ": scores_kv must be (", B, ", ", Nk, ") or (", B, ", ", R, ", ", Nk, "), got ",
                shape_str(s.shape()));
    Tensor s5 = s.dim() == 2 ? s.view({B, 1, 1, Nk, 1}) : s.view({B, R, 1, Nk, 1});
    v = v * s5;
    if (cfg_.multiply_keys_by_score) k = k * s5;
  }

  // 5. rotary at the tokens' original positions
  const bool rot = a.rotary_inv_freq.defined();
  COLT5_CHECK(rot == a.q_positions.defined() && rot == a.k_positions.defined(), who,
              ": rotary needs rotary_inv_freq, q_positions and k_positions together");
  if (rot) {
    Tensor qp = a.q_positions, kp = a.k_positions;
    COLT5_CHECK(qp.dim() == 1 ? qp.size(0) == Nq : (qp.dim() == 2 && qp.size(0) == B && qp.size(1) == Nq), who,
                ": q_positions must be (", Nq, ") or (", B, ", ", Nq, "), got ", shape_str(qp.shape()));
    if (qp.dim() == 2) qp = qp.unsqueeze(1);  // (B, 1, Nq) against q's (B, h, Nq)
    const bool kok = kp.dim() == 1 ? kp.size(0) == Nk
                                   : (kp.dim() == 2 ? kp.size(0) == B && kp.size(1) == Nk
                                                    : kp.dim() == 3 && kp.size(0) == B && kp.size(1) == R &&
                                                          kp.size(2) == Nk);
    COLT5_CHECK(kok, who, ": k_positions must be (", Nk, "), (", B, ", ", Nk, ") or (", B, ", ", R, ", ", Nk,
                "), got ", shape_str(kp.shape()));
    if (kp.dim() == 2) kp = kp.view({B, 1, 1, Nk});  // against k's (B, R, hr, Nk)
    if (kp.dim() == 3) kp = kp.unsqueeze(2);
    q = apply_rotary(q, qp, a.rotary_inv_freq);
    k = apply_rotary(k, kp, a.rotary_inv_freq);
  }

  // 6. merge the routes' heads: (B, h, Nk, dh)
  k = k.reshape({B, h, Nk, dh});
  v = v.reshape({B, h, Nk, dh});

  // 7. mask per route -> per head
  Tensor mask = a.mask;
  if (mask.defined()) {
    const bool ok = mask.dtype() == DType::b8 &&
                    ((mask.dim() == 2 && mask.size(0) == B && mask.size(1) == Nk) ||
                     (mask.dim() == 3 && mask.size(0) == B && mask.size(1) == R && mask.size(2) == Nk));
    COLT5_CHECK(ok, who, ": mask must be bool (", B, ", ", Nk, ") or (", B, ", ", R, ", ", Nk, "), got ",
                dtype_name(mask.dtype()), " ", shape_str(mask.shape()));
    if (mask.dim() == 3) mask = mask.unsqueeze(2).expand({B, R, hr, Nk}).reshape({B, h, Nk});
  }

  // 8. attention with one null key/value per head, merge heads, project out
  AttentionOptions ao;
  ao.null_k = null_kv.select(0, 0);
  ao.null_v = null_kv.select(0, 1);
  ao.allow_tf32 = cfg_.allow_tf32;
  ao.fused = cfg_.fused;
  Tensor out = attention(q, k, v, mask, ao);  // (B, h, Nq, dh)
  return to_out->forward(out.permute({0, 2, 1, 3}).reshape({B, Nq, h * dh}));
}

}  // namespace colt5
