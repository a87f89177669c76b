#include "ops/softmax.h"

#include "engine/autograd.h"
#include "engine/backend.h"
#include "engine/dispatch.h"
#include "kernels/cpu/softmax.h"
#ifdef COLT5_WITH_CUDA
#include "kernels/cuda/softmax.h"
#endif

namespace colt5 {

// ------------------------------------------------------------ layout

namespace detail {

Tensor LineLayout::pack(const Tensor& t) const {
  Tensor d = t.detach();
  return swapped ? d.transpose(dim, static_cast<int>(kshape.size()) - 1).contiguous() : d.contiguous();
}

Tensor LineLayout::unpack(const Tensor& buf) const {
  return swapped ? buf.transpose(dim, static_cast<int>(kshape.size()) - 1) : buf;
}

LineLayout line_layout(const Tensor& x, int dim, const char* op) {
  COLT5_CHECK(x.dim() >= 1, op, ": expected a tensor with at least one dim, got shape ", shape_str(x.shape()));
  LineLayout L;
  const int nd = x.dim();
  COLT5_CHECK(dim >= -nd && dim < nd, op, ": dim ", dim, " out of range for a tensor of shape ", shape_str(x.shape()));
  L.dim = wrap_dim(dim, nd, op);
  L.kshape = x.shape();
  const int last = nd - 1;
  if (!x.is_contiguous() && L.dim != last && x.transpose(L.dim, last).is_contiguous()) {
    L.swapped = true;
    std::swap(L.kshape[L.dim], L.kshape[last]);
  }
  const int kd = L.swapped ? last : L.dim;
  L.n = L.kshape[kd];
  for (int i = 0; i < kd; ++i) L.outer *= L.kshape[i];
  for (int i = kd + 1; i < nd; ++i) L.inner *= L.kshape[i];
  return L;
}

}  // namespace detail

namespace {

using detail::LineLayout;

void check_float(const char* op, const Tensor& x) {
  COLT5_CHECK(x.defined(), op, ": the tensor is undefined");
  COLT5_CHECK(x.dtype() == DType::f32 || x.dtype() == DType::f64, op, ": expected an f32 or f64 tensor, got ",
              dtype_name(x.dtype()), " of shape ", shape_str(x.shape()));
}

template <class T>
void forward_cpu(bool log, T* y, const T* x, const LineLayout& L) {
  if (log) kernels::cpu::log_softmax_forward(y, x, L.outer, L.n, L.inner);
  else kernels::cpu::softmax_forward(y, x, L.outer, L.n, L.inner);
}
template <class T>
void backward_cpu(bool log, T* dx, const T* dy, const T* y, const LineLayout& L) {
  if (log) kernels::cpu::log_softmax_backward(dx, dy, y, L.outer, L.n, L.inner);
  else kernels::cpu::softmax_backward(dx, dy, y, L.outer, L.n, L.inner);
}
#ifdef COLT5_WITH_CUDA
template <class T>
void forward_cuda(bool log, T* y, const T* x, const LineLayout& L, int dev) {
  if (log) kernels::cuda::log_softmax_forward(y, x, L.outer, L.n, L.inner, dev);
  else kernels::cuda::softmax_forward(y, x, L.outer, L.n, L.inner, dev);
}
template <class T>
void backward_cuda(bool log, T* dx, const T* dy, const T* y, const LineLayout& L, int dev) {
  if (log) kernels::cuda::log_softmax_backward(dx, dy, y, L.outer, L.n, L.inner, dev);
  else kernels::cuda::softmax_backward(dx, dy, y, L.outer, L.n, L.inner, dev);
}
#endif

Tensor softmax_op(const Tensor& x, int dim, bool log) {
  const char* name = log ? "log_softmax" : "softmax";
  check_float(name, x);
  if (x.dim() == 0) {  // a scalar is a line of one
    wrap_dim(dim, 0, name);
    return softmax_op(x.reshape({1}), 0, log).reshape({});
  }
  const LineLayout L = detail::line_layout(x, dim, name);
  const Tensor xk = L.pack(x);
  Tensor yk = make_tensor(L.kshape, x.dtype(), x.device());
  const Device dev = x.device();
  dispatch_float(x.dtype(), name, [&](auto tag) {
    using T = decltype(tag);
    COLT5_ON_DEVICE(name, dev, forward_cpu<T>(log, yk.data<T>(), xk.data<T>(), L),
                    forward_cuda<T>(log, yk.data<T>(), xk.data<T>(), L, dev.index));
  });
  Tensor out = L.unpack(yk);
  if (needs_grad({&x})) {
    Tensor ys = yk.detach();
    record(out, name, {x}, [L, ys, log, name](const Tensor& g) {
      const Tensor gk = L.pack(g.dtype() == ys.dtype() ? g : g.to(ys.dtype()));
      Tensor dxk = make_tensor(L.kshape, ys.dtype(), ys.device());
      const Device dev = ys.device();
      dispatch_float(ys.dtype(), name, [&](auto tag) {
        using T = decltype(tag);
        COLT5_ON_DEVICE(name, dev, backward_cpu<T>(log, dxk.data<T>(), gk.data<T>(), ys.data<T>(), L),
                        backward_cuda<T>(log, dxk.data<T>(), gk.data<T>(), ys.data<T>(), L, dev.index));
      });
      return std::vector<Tensor>{L.unpack(dxk)};
    }, {yk});
  }
  return out;
}

}  // namespace

Tensor softmax(const Tensor& x, int dim) { return softmax_op(x, dim, false); }
Tensor log_softmax(const Tensor& x, int dim) { return softmax_op(x, dim, true); }

}  // namespace colt5
