#include "ops/coor_descent.h"

#include <cfloat>
#include <cmath>

#include "engine/autograd.h"
#include "engine/backend.h"
#include "engine/dispatch.h"
#include "engine/strided.h"
#include "kernels/cpu/coor_descent.h"
#include "ops/elementwise.h"
#include "ops/reduce.h"
#ifdef COLT5_WITH_CUDA
#include "engine/cuda/memory.h"
#include "kernels/cuda/coor_descent.h"
#endif

namespace colt5 {
namespace {

double max_finite(DType t) { return t == DType::f64 ? DBL_MAX : FLT_MAX; }

kernels::CoorDescentParams params_for(const CoorDescentOptions& o, int64_t rows, int64_t n) {
  kernels::CoorDescentParams p;
  p.rows = rows;
  p.n = n;
  p.n_iters = o.n_iters;
  p.eps = o.eps;
  p.eps_init = o.eps_init;
  p.eps_decay = o.eps_decay;
  kernels::coor_descent_check_params(p);
  return p;
}

// k as a tensor of one value per row, shape s.shape[:-1] (broadcast allowed).
Tensor k_per_row(const Tensor& s, const Tensor& k, const char* op) {
  COLT5_CHECK(k.defined(), op, ": k is undefined");
  COLT5_CHECK(is_floating(k.dtype()), op, ": k must be a floating tensor, got ", dtype_name(k.dtype()));
  Shape rows_shape(s.shape().begin(), s.shape().end() - 1);
  Tensor kk = k;
  if (kk.dim() == s.dim() && kk.dim() > 0 && kk.size(-1) == 1) kk = kk.squeeze(-1);
  COLT5_CHECK(kk.dim() <= static_cast<int>(rows_shape.size()), op, ": k of shape ", shape_str(k.shape()),
              " does not give one value per row of scores ", shape_str(s.shape()));
  broadcast_strides(kk, rows_shape, op);  // throws with both shapes if not broadcastable
  return kk;
}

void check_inputs(const Tensor& s, const Tensor& mask, const char* op) {
  COLT5_CHECK(s.defined(), op, ": scores are undefined");
  COLT5_CHECK(s.dim() >= 1, op, ": scores need at least one dim, got a scalar");
  COLT5_CHECK(is_floating(s.dtype()), op, ": scores must be floating, got ", dtype_name(s.dtype()));
  if (mask.defined()) {
    COLT5_CHECK(mask.dtype() == DType::b8, op, ": mask must be bool, got ", dtype_name(mask.dtype()));
    broadcast_strides(mask, s.shape(), op);
    check_same_device(op, {&s, &mask});
  }
}

}  // namespace

Tensor coor_descent_reference(const Tensor& s0, const Tensor& k0, const Tensor& mask0, const CoorDescentOptions& o) {
  const char* op = "coor_descent_reference";
  check_inputs(s0, mask0, op);
  params_for(o, 1, s0.size(-1));
  Tensor s = (s0.dtype() == DType::f64 || s0.dtype() == DType::f32) ? s0 : s0.to(DType::f32);
  const double big = max_finite(s.dtype());
  Tensor k = k_per_row(s, k0, op).to(s.dtype()).unsqueeze(-1);
  Tensor m = mask0.defined() ? mask0.expand(s.shape()) : Tensor();
  Tensor keep_row;  // rows with at least one kept entry
  if (m.defined()) {
    keep_row = gt(sum(m, -1, true), 0.0);
    // A fully masked row is computed as if unmasked on zeros, then zeroed:
    // no -MAX arithmetic, so no inf/NaN reaches the gradient.
    m = logical_or(m, logical_not(keep_row));
    s = where(keep_row, where(m, s, -big), 0.0);
  }
  Tensor logk = log(clamp_min(k, 1e-20));
  Tensor a = zeros_like(logk);
  Tensor b = neg(s);
  double e = kernels::coor_descent_eps_first(params_for(o, 1, 1));
  for (int t = 0; t < o.n_iters; ++t) {
    Tensor z = (s + b) / e;
    if (m.defined()) z = where(m, z, -big);
    a = (logk - logsumexp(z, -1, true)) * e;
    b = neg(relu(s + a));
    e = kernels::coor_descent_eps_next(params_for(o, 1, 1), e);
  }
  Tensor out = exp((s + a + b) / e);
  if (m.defined()) out = where(logical_and(mask0.expand(s.shape()), keep_row), out, 0.0);
  return out;
}

Tensor coor_descent(const Tensor& s, double k, const Tensor& mask, const CoorDescentOptions& o) {
  COLT5_CHECK(k > 0 && std::isfinite(k), "coor_descent: k must be positive and finite, got ", k);
  return coor_descent(s, scalar_tensor(k, {.dtype = DType::f64, .device = s.device()}), mask, o);
}

Tensor coor_descent(const Tensor& s0, const Tensor& k0, const Tensor& mask0, const CoorDescentOptions& o) {
  const char* op = "coor_descent";
  check_inputs(s0, mask0, op);
  if (o.reference) return coor_descent_reference(s0, k0, mask0, o);
  const int64_t n = s0.size(-1);
  const int64_t rows = n == 0 ? 0 : s0.numel() / n;
  kernels::CoorDescentParams p = params_for(o, rows, n);
  DType dt = s0.dtype() == DType::f64 ? DType::f64 : DType::f32;
  COLT5_CHECK(!(dt == DType::f64 && s0.device().is_cuda()), op, ": f64 scores are supported on the CPU only");
  Tensor s = s0.to(dt).contiguous();
  Tensor kr = k_per_row(s, k0, op);
  Shape rows_shape(s.shape().begin(), s.shape().end() - 1);
  Tensor k = kr.detach().to(dt).to(s.device()).expand(rows_shape).contiguous();
  Tensor mask = mask0.defined() ? mask0.expand(s.shape()).contiguous() : Tensor();
  Tensor out = make_tensor(s.shape(), dt, s.device());
  Tensor saved = make_tensor({rows, kernels::coor_descent_saved_per_row(p)}, dt, s.device());
  const uint8_t* mp = mask.defined() ? static_cast<const uint8_t*>(mask.data_ptr()) : nullptr;
  if (rows > 0) {
    COLT5_ON_DEVICE(op, s.device(),
                    dispatch_float(dt, op, [&](auto tag) {
                      using T = decltype(tag);
                      kernels::cpu::coor_descent_forward<T>(p, s.data<T>(), mp, k.data<T>(), out.data<T>(),
                                                            saved.data<T>());
                    }),
                    {
                      int dev = s.device().index;
                      Tensor ws = make_tensor({static_cast<int64_t>(kernels::cuda::coor_descent_workspace_bytes(p)) + 1},
                                              DType::b8, s.device());
                      kernels::cuda::coor_descent_forward(p, s.data<float>(), mp, k.data<float>(), out.data<float>(),
                                                          saved.data<float>(), ws.data_ptr(), cuda::current_stream(dev));
                    });
  }
  if (needs_grad({&s0, &kr})) {
    bool want_k = kr.requires_grad();
    Tensor ss = s.detach(), os = out.detach();
    record(out, op, {s, kr}, [p, ss, os, k, mask, saved, want_k, rows_shape, dt](const Tensor& g0) {
      Tensor g = g0.to(dt).contiguous();
      Tensor ds = make_tensor(ss.shape(), dt, ss.device());
      Tensor dk = want_k ? make_tensor(rows_shape, dt, ss.device()) : Tensor();
      const uint8_t* mp = mask.defined() ? static_cast<const uint8_t*>(mask.data_ptr()) : nullptr;
      if (p.rows > 0) {
        COLT5_ON_DEVICE("coor_descent backward", ss.device(),
                        dispatch_float(dt, "coor_descent backward", [&](auto tag) {
                          using T = decltype(tag);
                          kernels::cpu::coor_descent_backward<T>(p, ss.data<T>(), mp, k.data<T>(), os.data<T>(),
                                                                 saved.data<T>(), g.data<T>(), ds.data<T>(),
                                                                 want_k ? dk.data<T>() : nullptr);
                        }),
                        {
                          int dev = ss.device().index;
                          Tensor ws = make_tensor(
                              {static_cast<int64_t>(kernels::cuda::coor_descent_workspace_bytes(p)) + 1}, DType::b8,
                              ss.device());
                          kernels::cuda::coor_descent_backward(p, ss.data<float>(), mp, k.data<float>(),
                                                               os.data<float>(), saved.data<float>(), g.data<float>(),
                                                               ds.data<float>(), want_k ? dk.data<float>() : nullptr,
                                                               ws.data_ptr(), cuda::current_stream(dev));
                        });
      } else {
        ds.zero_();
        if (want_k) dk.zero_();
      }
      return std::vector<Tensor>{ds, dk};
    }, {s});
  }
  if (s0.dtype() != dt) return out.to(s0.dtype());
  return out;
}

}  // namespace colt5
