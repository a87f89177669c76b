#include "ops/norm.h"

#include <cmath>

#include "engine/autograd.h"
#include "engine/backend.h"
#include "engine/dispatch.h"
#include "kernels/cpu/norm.h"
#include "ops/softmax.h"  // detail::LineLayout
#ifdef COLT5_WITH_CUDA
#include "kernels/cuda/norm.h"
#endif

namespace colt5 {
namespace {

using detail::LineLayout;

void check_input(const char* op, const Tensor& x) {
  COLT5_CHECK(x.defined(), op, ": the input is undefined");
  COLT5_CHECK(x.dtype() == DType::f32 || x.dtype() == DType::f64, op, ": expected an f32 or f64 input, got ",
              dtype_name(x.dtype()), " of shape ", shape_str(x.shape()));
  COLT5_CHECK(x.dim() >= 1, op, ": expected an input with at least one dim, got shape ", shape_str(x.shape()));
}

// An optional parameter of shape [n] matching x.
void check_param(const char* op, const char* what, const Tensor& p, const Tensor& x) {
  if (!p.defined()) return;
  COLT5_CHECK(p.dim() == 1 && p.size(0) == x.size(-1), op, ": ", what, " of shape ", shape_str(p.shape()),
              " does not match the last dim of the input of shape ", shape_str(x.shape()), " (expected [",
              x.size(-1), "])");
  COLT5_CHECK(p.dtype() == x.dtype(), op, ": ", what, " is ", dtype_name(p.dtype()), " but the input is ",
              dtype_name(x.dtype()), " (shapes ", shape_str(p.shape()), " and ", shape_str(x.shape()), ")");
  check_same_device(op, {&x, &p});
}

Tensor prep(const Tensor& t) { return t.defined() ? t.detach().contiguous() : Tensor(); }
template <class T> T* ptr(const Tensor& t) { return t.defined() ? t.data<T>() : nullptr; }
bool wants(const Tensor& t) { return t.defined() && t.requires_grad(); }
Tensor maybe_empty(bool want, const Shape& s, const Tensor& like) {
  return want ? make_tensor(s, like.dtype(), like.device()) : Tensor();
}
Tensor as_dtype(const Tensor& g, DType dt) { return g.dtype() == dt ? g : g.to(dt); }

}  // namespace

// ------------------------------------------------------------ layer_norm

Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  const char* name = "layer_norm";
  check_input(name, x);
  check_param(name, "weight", weight, x);
  check_param(name, "bias", bias, x);
  COLT5_CHECK(eps >= 0, name, ": eps must be >= 0, got ", eps);
  const int64_t n = x.size(-1), rows = n == 0 ? 0 : x.numel() / n;
  const Tensor xc = prep(x), wc = prep(weight), bc = prep(bias);
  Tensor out = make_tensor(x.shape(), x.dtype(), x.device());
  Tensor mean = make_tensor({rows}, x.dtype(), x.device()), rstd = make_tensor({rows}, x.dtype(), x.device());
  const Device dev = x.device();
  dispatch_float(x.dtype(), name, [&](auto tag) {
    using T = decltype(tag);
    COLT5_ON_DEVICE(name, dev,
                    kernels::cpu::layer_norm_forward(out.data<T>(), mean.data<T>(), rstd.data<T>(), xc.data<T>(),
                                                     ptr<T>(wc), ptr<T>(bc), rows, n, eps),
                    kernels::cuda::layer_norm_forward(out.data<T>(), mean.data<T>(), rstd.data<T>(), xc.data<T>(),
                                                      ptr<T>(wc), ptr<T>(bc), rows, n, eps, dev.index));
  });
  if (needs_grad({&x, &weight, &bias})) {
    const bool gx = wants(x), gw = wants(weight), gb = wants(bias);
    record(out, name, {x, weight, bias}, [=](const Tensor& g) {
      const Tensor dy = as_dtype(g, xc.dtype()).contiguous();
      Tensor dx = maybe_empty(gx, xc.shape(), xc), dw = maybe_empty(gw, {n}, xc), db = maybe_empty(gb, {n}, xc);
      const Device dev = xc.device();
      dispatch_float(xc.dtype(), name, [&](auto tag) {
        using T = decltype(tag);
        COLT5_ON_DEVICE(name, dev,
                        kernels::cpu::layer_norm_backward(ptr<T>(dx), ptr<T>(dw), ptr<T>(db), dy.data<T>(),
                                                          xc.data<T>(), ptr<T>(wc), mean.data<T>(), rstd.data<T>(),
                                                          rows, n),
                        kernels::cuda::layer_norm_backward(ptr<T>(dx), ptr<T>(dw), ptr<T>(db), dy.data<T>(),
                                                           xc.data<T>(), ptr<T>(wc), mean.data<T>(),
                                                           rstd.data<T>(), rows, n, dev.index));
      });
      return std::vector<Tensor>{dx, dw, db};
    }, {x, weight});
  }
  return out;
}

// ------------------------------------------------------------ rms_norm

Tensor rms_norm(const Tensor& x, const Tensor& gamma, double eps) {
  const char* name = "rms_norm";
  check_input(name, x);
  check_param(name, "gamma", gamma, x);
  COLT5_CHECK(eps > 0, name, ": eps (the clamp of the norm) must be > 0, got ", eps);
  const int64_t n = x.size(-1), rows = n == 0 ? 0 : x.numel() / n;
  const Tensor xc = prep(x), gc = prep(gamma);
  Tensor out = make_tensor(x.shape(), x.dtype(), x.device());
  Tensor norm = make_tensor({rows}, x.dtype(), x.device());
  const Device dev = x.device();
  dispatch_float(x.dtype(), name, [&](auto tag) {
    using T = decltype(tag);
    COLT5_ON_DEVICE(name, dev,
                    kernels::cpu::rms_norm_forward(out.data<T>(), norm.data<T>(), xc.data<T>(), ptr<T>(gc), rows, n,
                                                   eps),
                    kernels::cuda::rms_norm_forward(out.data<T>(), norm.data<T>(), xc.data<T>(), ptr<T>(gc), rows,
                                                    n, eps, dev.index));
  });
  if (needs_grad({&x, &gamma})) {
    const bool gx = wants(x), gg = wants(gamma);
    record(out, name, {x, gamma}, [=](const Tensor& g) {
      const Tensor dy = as_dtype(g, xc.dtype()).contiguous();
      Tensor dx = maybe_empty(gx, xc.shape(), xc), dgamma = maybe_empty(gg, {n}, xc);
      const Device dev = xc.device();
      dispatch_float(xc.dtype(), name, [&](auto tag) {
        using T = decltype(tag);
        COLT5_ON_DEVICE(name, dev,
                        kernels::cpu::rms_norm_backward(ptr<T>(dx), ptr<T>(dgamma), dy.data<T>(), xc.data<T>(),
                                                        ptr<T>(gc), norm.data<T>(), rows, n, eps),
                        kernels::cuda::rms_norm_backward(ptr<T>(dx), ptr<T>(dgamma), dy.data<T>(), xc.data<T>(),
                                                         ptr<T>(gc), norm.data<T>(), rows, n, eps, dev.index));
      });
      return std::vector<Tensor>{dx, dgamma};
    }, {x, gamma});
  }
  return out;
}

// ------------------------------------------------------------ l2norm

Tensor l2norm(const Tensor& x, int dim, double eps) {
  const char* name = "l2norm";
  check_input(name, x);
  COLT5_CHECK(eps > 0, name, ": eps (the clamp of the norm) must be > 0, got ", eps);
  const LineLayout L = detail::line_layout(x, dim, name);
  const Tensor xk = L.pack(x);
  Tensor yk = make_tensor(L.kshape, x.dtype(), x.device());
  Tensor norm = make_tensor({L.outer * L.inner}, x.dtype(), x.device());
  const Device dev = x.device();
  dispatch_float(x.dtype(), name, [&](auto tag) {
    using T = decltype(tag);
    COLT5_ON_DEVICE(name, dev,
                    kernels::cpu::l2norm_forward(yk.data<T>(), norm.data<T>(), xk.data<T>(), L.outer, L.n, L.inner,
                                                 eps),
                    kernels::cuda::l2norm_forward(yk.data<T>(), norm.data<T>(), xk.data<T>(), L.outer, L.n, L.inner,
                                                  eps, dev.index));
  });
  Tensor out = L.unpack(yk);
  if (needs_grad({&x})) {
    record(out, name, {x}, [=](const Tensor& g) {
      const Tensor dyk = L.pack(as_dtype(g, xk.dtype()));
      Tensor dxk = make_tensor(L.kshape, xk.dtype(), xk.device());
      const Device dev = xk.device();
      dispatch_float(xk.dtype(), name, [&](auto tag) {
        using T = decltype(tag);
        COLT5_ON_DEVICE(name, dev,
                        kernels::cpu::l2norm_backward(dxk.data<T>(), dyk.data<T>(), xk.data<T>(), norm.data<T>(),
                                                      L.outer, L.n, L.inner, eps),
                        kernels::cuda::l2norm_backward(dxk.data<T>(), dyk.data<T>(), xk.data<T>(), norm.data<T>(),
                                                       L.outer, L.n, L.inner, eps, dev.index));
      });
      return std::vector<Tensor>{L.unpack(dxk)};
    }, {x});
  }
  return out;
}

}  // namespace colt5
