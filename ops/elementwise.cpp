#include "ops/elementwise.h"

#include <cmath>

#include "engine/autograd.h"
#include "engine/backend.h"
#include "engine/strided.h"
#include "kernels/cpu/elementwise.h"
#ifdef COLT5_WITH_CUDA
#include "kernels/cuda/elementwise.h"
#endif

namespace colt5 {

void check_same_device(const char* op, std::initializer_list<const Tensor*> ts) {
  const Tensor* first = nullptr;
  int i = 0;
  for (const Tensor* t : ts) {
    ++i;
    if (!t || !t->defined()) continue;
    if (!first) first = t;
    COLT5_CHECK(t->device() == first->device(), op, ": expected all tensors on ", first->device().str(), ", got ",
                t->device().str(), " for argument ", i);
  }
}

namespace {

void check_defined(const char* op, std::initializer_list<const Tensor*> ts) {
  int i = 0;
  for (const Tensor* t : ts) {
    ++i;
    COLT5_CHECK(t->defined(), op, ": argument ", i, " is an undefined tensor");
  }
}

// ---- raw kernels (no autograd)

Tensor unary_raw(UnaryOp op, const Tensor& x, double p0 = 0, double p1 = 0) {
  Tensor out = empty_like(x);
  auto g = make_geometry<2>(x.shape(), {out.strides(), x.strides()});
  COLT5_ON_DEVICE(unary_op_name(op), x.device(),
                  kernels::cpu::unary(op, p0, p1, x.dtype(), out.data_ptr(), x.data_ptr(), g),
                  kernels::cuda::unary(op, p0, p1, x.dtype(), out.data_ptr(), x.data_ptr(), g, x.device().index));
  return out;
}

Tensor binary_raw(BinaryOp op, const Tensor& a0, const Tensor& b0) {
  const char* name = binary_op_name(op);
  check_defined(name, {&a0, &b0});
  check_same_device(name, {&a0, &b0});
  DType dt = promote(a0.dtype(), b0.dtype());
  if (dt == DType::b8) dt = DType::i64;
  if (dt == DType::f16 || dt == DType::bf16) dt = DType::f32;
  Tensor a = a0.dtype() == dt ? a0 : a0.detach().to(dt);
  Tensor b = b0.dtype() == dt ? b0 : b0.detach().to(dt);
  Shape shape = broadcast_shapes(a.shape(), b.shape(), name);
  Tensor out = make_tensor(shape, dt, a.device());
  auto g = make_geometry<3>(shape, {out.strides(), broadcast_strides(a, shape, name), broadcast_strides(b, shape, name)});
  COLT5_ON_DEVICE(name, a.device(), kernels::cpu::binary(op, dt, out.data_ptr(), a.data_ptr(), b.data_ptr(), g),
                  kernels::cuda::binary(op, dt, out.data_ptr(), a.data_ptr(), b.data_ptr(), g, a.device().index));
  return out;
}

Tensor compare_raw(CompareOp op, const Tensor& a0, const Tensor& b0) {
  const char* name = compare_op_name(op);
  check_defined(name, {&a0, &b0});
  check_same_device(name, {&a0, &b0});
  DType dt = promote(a0.dtype(), b0.dtype());
  if (dt == DType::f16 || dt == DType::bf16) dt = DType::f32;
  if ((op == CompareOp::logical_and || op == CompareOp::logical_or)) dt = DType::b8;
  Tensor a = a0.dtype() == dt ? a0 : a0.to(dt);
  Tensor b = b0.dtype() == dt ? b0 : b0.to(dt);
  Shape shape = broadcast_shapes(a.shape(), b.shape(), name);
  Tensor out = make_tensor(shape, DType::b8, a.device());
  auto g = make_geometry<3>(shape, {out.strides(), broadcast_strides(a, shape, name), broadcast_strides(b, shape, name)});
  COLT5_ON_DEVICE(name, a.device(),
                  kernels::cpu::compare(op, dt, out.data<bool>(), a.data_ptr(), b.data_ptr(), g),
                  kernels::cuda::compare(op, dt, out.data<bool>(), a.data_ptr(), b.data_ptr(), g, a.device().index));
  return out;
}

Tensor scalar_like(double v, const Tensor& like) { return full({}, v, {.dtype = like.dtype(), .device = like.device()}); }

void check_float(const char* op, const Tensor& x) {
  COLT5_CHECK(x.defined(), op, ": the tensor is undefined");
  COLT5_CHECK(x.dtype() == DType::f32 || x.dtype() == DType::f64, op, ": expected an f32 or f64 tensor, got ",
              dtype_name(x.dtype()), " of shape ", shape_str(x.shape()));
}

// Unary op with its backward rule given as a function of (g, x, out).
template <class Rule>
Tensor unary_op(UnaryOp op, const Tensor& x, double p0, double p1, Rule rule) {
  check_float(unary_op_name(op), x);
  Tensor out = unary_raw(op, x, p0, p1);
  if (needs_grad({&x})) {
    Tensor xs = x.detach(), ys = out.detach();
    record(out, unary_op_name(op), {x}, [xs, ys, rule](const Tensor& g) { return std::vector<Tensor>{rule(g, xs, ys)}; },
           {x});
  }
  return out;
}

}  // namespace

// ------------------------------------------------------------ unary

Tensor neg(const Tensor& x) {
  return unary_op(UnaryOp::neg, x, 0, 0, [](const Tensor& g, const Tensor&, const Tensor&) { return neg(g); });
}
Tensor exp(const Tensor& x) {
  return unary_op(UnaryOp::exp, x, 0, 0, [](const Tensor& g, const Tensor&, const Tensor& y) { return g * y; });
}
Tensor log(const Tensor& x) {
  return unary_op(UnaryOp::log, x, 0, 0, [](const Tensor& g, const Tensor& x, const Tensor&) { return g / x; });
}
Tensor sqrt(const Tensor& x) {
  return unary_op(UnaryOp::sqrt, x, 0, 0,
                  [](const Tensor& g, const Tensor&, const Tensor& y) { return g / (y * 2.0); });
}
Tensor rsqrt(const Tensor& x) {
  return unary_op(UnaryOp::rsqrt, x, 0, 0,
                  [](const Tensor& g, const Tensor&, const Tensor& y) { return g * (y * y * y) * -0.5; });
}
Tensor abs(const Tensor& x) {
  return unary_op(UnaryOp::abs, x, 0, 0,
                  [](const Tensor& g, const Tensor& x, const Tensor&) { return g * unary_raw(UnaryOp::sign, x); });
}
Tensor sign(const Tensor& x) {
  return unary_op(UnaryOp::sign, x, 0, 0, [](const Tensor& g, const Tensor&, const Tensor&) { return zeros_like(g); });
}
Tensor relu(const Tensor& x) {
  return unary_op(UnaryOp::relu, x, 0, 0, [](const Tensor& g, const Tensor& x, const Tensor&) {
    return binary_raw(BinaryOp::relu_backward, g, x);
  });
}
Tensor gelu(const Tensor& x) {
  return unary_op(UnaryOp::gelu, x, 0, 0, [](const Tensor& g, const Tensor& x, const Tensor&) {
    return binary_raw(BinaryOp::gelu_backward, g, x);
  });
}
Tensor sigmoid(const Tensor& x) {
  return unary_op(UnaryOp::sigmoid, x, 0, 0, [](const Tensor& g, const Tensor&, const Tensor& y) {
    return binary_raw(BinaryOp::sigmoid_backward, g, y);
  });
}
Tensor tanh(const Tensor& x) {
  return unary_op(UnaryOp::tanh, x, 0, 0, [](const Tensor& g, const Tensor&, const Tensor& y) {
    return binary_raw(BinaryOp::tanh_backward, g, y);
  });
}
Tensor sin(const Tensor& x) {
  return unary_op(UnaryOp::sin, x, 0, 0, [](const Tensor& g, const Tensor& x, const Tensor&) { return g * cos(x); });
}
Tensor cos(const Tensor& x) {
  return unary_op(UnaryOp::cos, x, 0, 0, [](const Tensor& g, const Tensor& x, const Tensor&) { return -(g * sin(x)); });
}
Tensor erf(const Tensor& x) {
  return unary_op(UnaryOp::erf, x, 0, 0, [](const Tensor& g, const Tensor& x, const Tensor&) {
    return g * exp(-(x * x)) * (2.0 / std::sqrt(M_PI));
  });
}
Tensor pow(const Tensor& x, double p) {
  return unary_op(UnaryOp::pow_scalar, x, p, 0, [p](const Tensor& g, const Tensor& x, const Tensor&) {
    return g * pow(x, p - 1.0) * p;
  });
}
Tensor clamp(const Tensor& x, double lo, double hi) {
  COLT5_CHECK(!(lo > hi), "clamp: min ", lo, " is greater than max ", hi);
  return unary_op(UnaryOp::clamp, x, lo, hi, [lo, hi](const Tensor& g, const Tensor& x, const Tensor&) {
    return where(logical_and(ge(x, lo), le(x, hi)), g, 0.0);
  });
}
Tensor clamp_min(const Tensor& x, double lo) { return clamp(x, lo, INFINITY); }
Tensor clamp_max(const Tensor& x, double hi) { return clamp(x, -INFINITY, hi); }

// ------------------------------------------------------------ binary

Tensor add(const Tensor& a, const Tensor& b) {
  Tensor out = binary_raw(BinaryOp::add, a, b);
  if (needs_grad({&a, &b}))
    record(out, "add", {a, b}, [](const Tensor& g) { return std::vector<Tensor>{g, g}; });
  return out;
}
Tensor sub(const Tensor& a, const Tensor& b) {
  Tensor out = binary_raw(BinaryOp::sub, a, b);
  if (needs_grad({&a, &b}))
    record(out, "sub", {a, b}, [](const Tensor& g) { return std::vector<Tensor>{g, neg(g)}; });
  return out;
}
Tensor mul(const Tensor& a, const Tensor& b) {
  Tensor out = binary_raw(BinaryOp::mul, a, b);
  if (needs_grad({&a, &b})) {
    bool ga = a.requires_grad(), gb = b.requires_grad();
    Tensor as = a.detach(), bs = b.detach();
    record(out, "mul", {a, b}, [as, bs, ga, gb](const Tensor& g) {
      return std::vector<Tensor>{ga ? g * bs : Tensor(), gb ? g * as : Tensor()};
    }, {a, b});
  }
  return out;
}
Tensor div(const Tensor& a, const Tensor& b) {
  Tensor out = binary_raw(BinaryOp::div, a, b);
  if (needs_grad({&a, &b})) {
    bool gb = b.requires_grad();
    Tensor bs = b.detach(), ys = out.detach();
    record(out, "div", {a, b}, [bs, ys, gb](const Tensor& g) {
      Tensor ga = g / bs;
      return std::vector<Tensor>{ga, gb ? neg(ga * ys) : Tensor()};
    }, {b});
  }
  return out;
}
Tensor pow(const Tensor& a, const Tensor& b) {
  Tensor out = binary_raw(BinaryOp::pow, a, b);
  if (needs_grad({&a, &b})) {
    bool gb = b.requires_grad();
    Tensor as = a.detach(), bs = b.detach(), ys = out.detach();
    record(out, "pow", {a, b}, [as, bs, ys, gb](const Tensor& g) {
      return std::vector<Tensor>{g * bs * pow(as, bs - 1.0), gb ? g * ys * log(as) : Tensor()};
    }, {a, b});
  }
  return out;
}

static Tensor minmax(BinaryOp op, const Tensor& a, const Tensor& b) {
  Tensor out = binary_raw(op, a, b);
  if (needs_grad({&a, &b})) {
    Tensor as = a.detach(), bs = b.detach();
    bool is_max = op == BinaryOp::maximum;
    record(out, binary_op_name(op), {a, b}, [as, bs, is_max](const Tensor& g) {
      Tensor win_a = is_max ? gt(as, bs) : lt(as, bs);
      Tensor tie = eq(as, bs);
      Tensor half = g * 0.5;
      Tensor ga = where(win_a, g, where(tie, half, 0.0));
      Tensor gb = where(logical_or(win_a, tie), where(tie, half, 0.0), g);
      return std::vector<Tensor>{ga, gb};
    }, {a, b});
  }
  return out;
}
Tensor maximum(const Tensor& a, const Tensor& b) { return minmax(BinaryOp::maximum, a, b); }
Tensor minimum(const Tensor& a, const Tensor& b) { return minmax(BinaryOp::minimum, a, b); }

// Scalar forms: one kernel pass, no scalar tensor on the device (floats).
static Tensor scalar_op(UnaryOp op, const Tensor& a, double c) {
  return unary_op(op, a, c, 0, [op, c](const Tensor& g, const Tensor& x, const Tensor& y) {
    switch (op) {
      case UnaryOp::add_scalar: return g;
      case UnaryOp::mul_scalar: return g * c;
      case UnaryOp::rsub_scalar: return neg(g);
      default: return neg(g * y / x);  // rdiv: d(c/x) = -c/x^2 = -y/x
    }
  });
}
static bool is_real(const Tensor& a) { return a.defined() && (a.dtype() == DType::f32 || a.dtype() == DType::f64); }
Tensor add(const Tensor& a, double b) {
  return is_real(a) ? scalar_op(UnaryOp::add_scalar, a, b) : add(a, scalar_like(b, a));
}
Tensor sub(const Tensor& a, double b) {
  return is_real(a) ? scalar_op(UnaryOp::add_scalar, a, -b) : sub(a, scalar_like(b, a));
}
Tensor mul(const Tensor& a, double b) {
  return is_real(a) ? scalar_op(UnaryOp::mul_scalar, a, b) : mul(a, scalar_like(b, a));
}
Tensor div(const Tensor& a, double b) {
  return is_real(a) ? scalar_op(UnaryOp::mul_scalar, a, 1.0 / b) : div(a, scalar_like(b, a));
}
Tensor rsub(double a, const Tensor& b) {
  return is_real(b) ? scalar_op(UnaryOp::rsub_scalar, b, a) : sub(scalar_like(a, b), b);
}
Tensor rdiv(double a, const Tensor& b) {
  check_float("rdiv", b);
  return scalar_op(UnaryOp::rdiv_scalar, b, a);
}
// ------------------------------------------------------------ comparisons

Tensor eq(const Tensor& a, const Tensor& b) { return compare_raw(CompareOp::eq, a, b); }
Tensor ne(const Tensor& a, const Tensor& b) { return compare_raw(CompareOp::ne, a, b); }
Tensor lt(const Tensor& a, const Tensor& b) { return compare_raw(CompareOp::lt, a, b); }
Tensor le(const Tensor& a, const Tensor& b) { return compare_raw(CompareOp::le, a, b); }
Tensor gt(const Tensor& a, const Tensor& b) { return compare_raw(CompareOp::gt, a, b); }
Tensor ge(const Tensor& a, const Tensor& b) { return compare_raw(CompareOp::ge, a, b); }
Tensor eq(const Tensor& a, double b) { return eq(a, scalar_like(b, a)); }
Tensor ne(const Tensor& a, double b) { return ne(a, scalar_like(b, a)); }
Tensor lt(const Tensor& a, double b) { return lt(a, scalar_like(b, a)); }
Tensor le(const Tensor& a, double b) { return le(a, scalar_like(b, a)); }
Tensor gt(const Tensor& a, double b) { return gt(a, scalar_like(b, a)); }
Tensor ge(const Tensor& a, double b) { return ge(a, scalar_like(b, a)); }
Tensor logical_and(const Tensor& a, const Tensor& b) { return compare_raw(CompareOp::logical_and, a, b); }
Tensor logical_or(const Tensor& a, const Tensor& b) { return compare_raw(CompareOp::logical_or, a, b); }
Tensor logical_not(const Tensor& a) {
  COLT5_CHECK(a.defined() && a.dtype() == DType::b8, "logical_not: expected a bool tensor, got ",
              a.defined() ? dtype_name(a.dtype()) : "undefined");
  return unary_raw(UnaryOp::logical_not, a);
}

// ------------------------------------------------------------ where

Tensor where(const Tensor& cond, const Tensor& a0, const Tensor& b0) {
  check_defined("where", {&cond, &a0, &b0});
  check_same_device("where", {&cond, &a0, &b0});
  COLT5_CHECK(cond.dtype() == DType::b8, "where: condition must be bool, got ", dtype_name(cond.dtype()));
  DType dt = promote(a0.dtype(), b0.dtype());
  Tensor a = a0.dtype() == dt ? a0 : a0.to(dt);
  Tensor b = b0.dtype() == dt ? b0 : b0.to(dt);
  Shape shape = broadcast_shapes(broadcast_shapes(cond.shape(), a.shape(), "where"), b.shape(), "where");
  Tensor out = make_tensor(shape, dt, a.device());
  auto g = make_geometry<4>(shape, {out.strides(), broadcast_strides(cond, shape, "where"),
                                    broadcast_strides(a, shape, "where"), broadcast_strides(b, shape, "where")});
  COLT5_ON_DEVICE("where", a.device(),
                  kernels::cpu::where(dt, out.data_ptr(), cond.data<bool>(), a.data_ptr(), b.data_ptr(), g),
                  kernels::cuda::where(dt, out.data_ptr(), cond.data<bool>(), a.data_ptr(), b.data_ptr(), g,
                                       a.device().index));
  if (needs_grad({&a, &b})) {
    Tensor c = cond.detach();
    record(out, "where", {a, b}, [c](const Tensor& g) {
      Tensor z = zeros({}, {.dtype = g.dtype(), .device = g.device()});
      return std::vector<Tensor>{where(c, g, z), where(c, z, g)};
    });
  }
  return out;
}
Tensor where(const Tensor& cond, const Tensor& a, double b) { return where(cond, a, scalar_like(b, a)); }
Tensor where(const Tensor& cond, double a, const Tensor& b) { return where(cond, scalar_like(a, b), b); }

Tensor masked_fill(const Tensor& x, const Tensor& mask, double value) {
  COLT5_CHECK(mask.defined() && mask.dtype() == DType::b8, "masked_fill: mask must be bool");
  broadcast_strides(mask, x.shape(), "masked_fill");  // mask must broadcast to x
  return where(mask, scalar_like(value, x), x);
}

}  // namespace colt5
