#include "layers/router.h"

#include <cmath>
#include <limits>

#include "engine/autograd.h"
#include "ops/coor_descent.h"
#include "ops/elementwise.h"
#include "ops/matmul.h"
#include "ops/norm.h"
#include "ops/routing.h"
#include "ops/topk.h"

namespace colt5 {

void check_router_config(const RouterConfig& c, const char* who) {
  COLT5_CHECK(c.n_iters >= 1, who, ": n_iters must be >= 1, got ", c.n_iters);
  COLT5_CHECK(c.fetch_k_ratio >= 1.0 && std::isfinite(c.fetch_k_ratio), who, ": fetch_k_ratio must be >= 1, got ",
              c.fetch_k_ratio);
  COLT5_CHECK(c.eps > 0 && std::isfinite(c.eps), who, ": eps must be > 0, got ", c.eps);
  COLT5_CHECK(c.eps_decay > 0 && c.eps_decay <= 1.0, who, ": eps_decay must be in (0, 1], got ", c.eps_decay);
  COLT5_CHECK(!c.eps_init || (*c.eps_init > 0 && std::isfinite(*c.eps_init)), who,
              ": eps_init must be > 0 (or none), got ", c.eps_init.value_or(0));
  COLT5_CHECK(c.num_routing_tokens >= 1, who, ": num_routing_tokens must be >= 1, got ", c.num_routing_tokens);
  COLT5_CHECK(!c.route_block_size || *c.route_block_size >= 1, who, ": route_block_size must be >= 1 (or none), got ",
              c.route_block_size.value_or(0));
  COLT5_CHECK(std::isfinite(c.cosine_sim_scale), who, ": cosine_sim_scale must be finite, got ", c.cosine_sim_scale);
  COLT5_CHECK(!c.triton_checkpoint_segments || *c.triton_checkpoint_segments >= 1, who,
              ": triton_checkpoint_segments must be >= 1 (or none), got ", c.triton_checkpoint_segments.value_or(0));
}

CoordinateDescentRouter::CoordinateDescentRouter(int64_t dim, const RouterConfig& config, Generator& gen)
    : dim_(dim), cfg_(config) {
  COLT5_CHECK(dim > 0, "CoordinateDescentRouter: dim must be positive, got ", dim);
  check_router_config(cfg_, "CoordinateDescentRouter");
  if (!cfg_.learned_routing_tokens) {
    register_parameter("routing_token", routing_token, empty({cfg_.num_routing_tokens, dim}));
    init_normal(routing_token, gen);
  }
}

namespace {
double neg_max(DType dt) {
  return dt == DType::f64 ? -std::numeric_limits<double>::max() : -static_cast<double>(std::numeric_limits<float>::max());
}
}  // namespace

RouterReturn CoordinateDescentRouter::forward(const Tensor& x, int64_t num_tokens, const Tensor& mask,
                                              const RouteOptions& o) const {
  const char* who = "CoordinateDescentRouter";
  COLT5_CHECK(x.defined() && x.dim() == 3, who, ": x must be (batch, seq, dim), got ",
              x.defined() ? shape_str(x.shape()) : std::string("an undefined tensor"));
  const int64_t B = x.size(0), N = x.size(1), D = x.size(2), R = cfg_.num_routing_tokens;
  COLT5_CHECK(D == dim_, who, ": x's last dim is ", D, ", the router was built for dim ", dim_);
  COLT5_CHECK(num_tokens >= 1, who, ": num_tokens must be >= 1, got ", num_tokens);
  if (mask.defined()) {
    COLT5_CHECK(mask.dtype() == DType::b8 && mask.shape() == Shape({B, N}), who, ": mask must be bool (", B, ", ", N,
                "), got ", dtype_name(mask.dtype()), " ", shape_str(mask.shape()));
  }
  Tensor tok;  // (R, D) or (B, R, D)
  if (cfg_.learned_routing_tokens) {
    tok = o.routing_tokens;
    COLT5_CHECK(tok.defined(), who, ": learned_routing_tokens is set, so routing_tokens (B, D) or (B, R, D) must be "
                "passed to the call");
    if (tok.dim() == 2) tok = tok.unsqueeze(1);
    COLT5_CHECK(tok.dim() == 3 && tok.size(0) == B && tok.size(1) == R && tok.size(2) == D, who,
                ": routing_tokens must be (", B, ", ", D, ") or (", B, ", ", R, ", ", D, "), got ",
                shape_str(o.routing_tokens.shape()));
  } else {
    COLT5_CHECK(!o.routing_tokens.defined(), who,
                ": routing_tokens were passed but the router has its own (learned_routing_tokens is false)");
    tok = routing_token;
  }
  const bool route_dim = o.keep_one_route_dim || R > 1;
  const Options fopt{.dtype = x.dtype(), .device = x.device()};

  // 1. no routing
  if (N <= num_tokens) {
    RouterReturn r;
    if (route_dim) {
      r.scores = ones({B, R, N}, fopt);
      r.routed_tokens = x.unsqueeze(1).expand({B, R, N, D});
      if (mask.defined()) r.routed_mask = mask.unsqueeze(1).expand({B, R, N});
    } else {
      r.scores = ones({B, N}, fopt);
      r.routed_tokens = x;
      r.routed_mask = mask;
    }
    return r;
  }

  // 2. block routing: each block of w tokens is its own row
  Tensor xs = x, ms = mask;
  int64_t n = N, nt = num_tokens, nb = 1, w = N;
  const bool blocks = cfg_.route_block_size.has_value();
  if (blocks) {
    w = *cfg_.route_block_size;
    nb = N / w;
    COLT5_CHECK(nb >= 1, who, ": route_block_size ", w, " is longer than the sequence (", N, " tokens)");
    xs = x.narrow(1, 0, nb * w).reshape({B * nb, w, D});
    if (mask.defined()) ms = mask.narrow(1, 0, nb * w).reshape({B * nb, w});
    if (tok.dim() == 3) tok = tok.unsqueeze(1).expand({B, nb, R, D}).reshape({B * nb, R, D});
    n = w;
    nt = (num_tokens + nb - 1) / nb;
    COLT5_CHECK(nt <= w, who, ": routing ", num_tokens, " tokens from ", nb, " blocks of ", w, " needs ", nt,
                " per block, more than a block holds");
  }

  // 3. scores s (Bx, R, n)
  Tensor xq = xs;
  if (cfg_.cosine_sim_routing) {
    xq = l2norm(xq, -1);
    tok = l2norm(tok, -1);
  }
  Tensor s = matmul(tok, xq.transpose(1, 2));
  if (cfg_.cosine_sim_routing) s = s * cfg_.cosine_sim_scale;

  // 4-5. coordinate descent per (b, r) row (mask repeated per route), or noise
  Tensor m3 = ms.defined() ? ms.unsqueeze(1) : Tensor();  // (Bx, 1, n)
  Tensor c;
  if (o.random_route) {
    Generator& gen = o.generator ? *o.generator : default_generator();
    c = randn(s.shape(), gen, {.dtype = s.dtype(), .device = s.device()});
    if (m3.defined()) c = masked_fill(c, logical_not(m3), neg_max(c.dtype()));
  } else {
    const double k = std::min(static_cast<double>(nt) * cfg_.fetch_k_ratio, static_cast<double>(n));
    CoorDescentOptions co{.n_iters = cfg_.n_iters,
                          .eps = cfg_.eps,
                          .eps_init = cfg_.eps_init.value_or(0.0),
                          .eps_decay = cfg_.eps_decay,
                          .checkpoint_segments = cfg_.triton_checkpoint_segments.value_or(1)};
    c = coor_descent(s, k, m3, co);
  }

  // 6. hard top-k, sorted descending, ties to the lower index
  TopK top = hard_topk(c, nt);
  Tensor sel = top.values, idx = top.indices;  // (Bx, R, nt)

  // 7. straight-through: value exactly 1, gradient of the coordinate-descent scores; masked -> 0
  if (cfg_.straight_through) {
    sel = (sel - sel.detach()) + 1.0;
    if (ms.defined()) sel = masked_fill(sel, logical_not(gather_mask(ms, idx)), 0.0);
  }
  if (!route_dim) {
    sel = sel.squeeze(1);
    idx = idx.squeeze(1);
  }

  // undo the blocking: (B*nb, [R,] nt) -> (B, [R,] nb*nt) with global indices
  if (blocks) {
    Tensor offs = arange(0.0, static_cast<double>(nb * w), static_cast<double>(w),
                         {.dtype = DType::i64, .device = x.device()});  // (nb)
    if (route_dim) {
      sel = sel.reshape({B, nb, R, nt}).permute({0, 2, 1, 3}).reshape({B, R, nb * nt});
      idx = (idx.reshape({B, nb, R, nt}) + offs.view({1, nb, 1, 1})).permute({0, 2, 1, 3}).reshape({B, R, nb * nt});
    } else {
      sel = sel.reshape({B, nb * nt});
      idx = (idx.reshape({B, nb, nt}) + offs.view({1, nb, 1})).reshape({B, nb * nt});
    }
  }

  // 8. gather the routed tokens and mask from the original x / mask
  RouterReturn r;
  r.indices = idx;
  r.scores = sel;
  r.routed_tokens = gather_tokens(x, idx);
  if (mask.defined()) r.routed_mask = gather_mask(mask, idx);
  return r;
}

}  // namespace colt5
