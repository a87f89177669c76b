#include "ops/reduce.h"

#include <algorithm>
#include <cmath>

#include "engine/autograd.h"
#include "engine/backend.h"
#include "engine/strided.h"
#include "kernels/cpu/reduce.h"
#include "ops/elementwise.h"
#ifdef COLT5_WITH_CUDA
#include "kernels/cuda/reduce.h"
#endif

namespace colt5 {
namespace {

using kernels::cpu::ReduceOp;

struct Plan {
  std::vector<bool> reduced;
  Shape keep_shape;  // keepdim output shape
  Shape out_shape;   // requested output shape
  int64_t count = 1;  // elements reduced into each output
};

Plan plan(const Tensor& x, const std::vector<int>& dims, bool keepdim, const char* op) {
  COLT5_CHECK(x.defined(), op, ": the tensor is undefined");
  Plan p;
  int n = x.dim();
  p.reduced.assign(n, dims.empty());
  for (int d : dims) {
    int w = wrap_dim(d, n, op);
    COLT5_CHECK(!p.reduced[w] || dims.empty(), op, ": dim ", d, " listed twice");
    p.reduced[w] = true;
  }
  for (int i = 0; i < n; ++i) {
    if (p.reduced[i]) {
      p.count *= x.shape()[i];
      p.keep_shape.push_back(1);
      if (keepdim) p.out_shape.push_back(1);
    } else {
      p.keep_shape.push_back(x.shape()[i]);
      p.out_shape.push_back(x.shape()[i]);
    }
  }
  return p;
}

// Runs the kernel; returns the keepdim-shaped result.
Tensor run(ReduceOp op, const Tensor& x, const Plan& p, const char* name) {
  bool arg = op == ReduceOp::argmax || op == ReduceOp::argmin;
  DType odt = arg ? DType::i64 : x.dtype();
  Tensor out = make_tensor(p.keep_shape, odt, x.device());
  if (op == ReduceOp::sum && p.count == 0) return out.fill_(0.0);
  COLT5_CHECK(p.count > 0 || x.numel() == 0, name, ": cannot reduce over an empty dim (shape ", shape_str(x.shape()), ")");
  if (out.numel() == 0) return out;
  COLT5_CHECK(p.count > 0, name, ": cannot reduce over an empty dim (shape ", shape_str(x.shape()), ")");
  Shape ks, kos, kxs, rs, rxs;
  for (int i = 0; i < x.dim(); ++i) {
    if (p.reduced[i]) {
      rs.push_back(x.shape()[i]);
      rxs.push_back(x.strides()[i]);
    } else {
      ks.push_back(x.shape()[i]);
      kos.push_back(out.strides()[i]);
      kxs.push_back(x.strides()[i]);
    }
  }
  auto kept = make_geometry<2>(ks, {kos, kxs});
  auto red = make_geometry<1>(rs, {rxs});
  COLT5_ON_DEVICE(name, x.device(), kernels::cpu::reduce(op, x.dtype(), out.data_ptr(), x.data_ptr(), kept, red),
                  kernels::cuda::reduce(op, x.dtype(), out.data_ptr(), x.data_ptr(), kept, red, x.device().index));
  return out;
}

Tensor extreme(ReduceOp op, const Tensor& x, const std::vector<int>& dims, bool keepdim, const char* name) {
  Plan p = plan(x, dims, keepdim, name);
  COLT5_CHECK(x.dtype() != DType::b8, name, ": not defined for bool tensors");
  Tensor k = run(op, x, p, name);
  Tensor out = k.view(p.out_shape);
  if (needs_grad({&x})) {
    Tensor xs = x.detach(), ks = k.detach();
    Shape keep = p.keep_shape;
    std::vector<int> rdims;
    for (int i = 0; i < x.dim(); ++i)
      if (p.reduced[i]) rdims.push_back(i);
    record(out, name, {x}, [xs, ks, keep, rdims](const Tensor& g) {
      // Ties share the gradient equally (like torch.amax / amin).
      Tensor hit = eq(xs, ks);
      Tensor cnt = sum(hit.to(g.dtype()), rdims, true);
      return std::vector<Tensor>{where(hit, g.reshape(keep) / cnt, 0.0)};
    }, {x});
  }
  return out;
}

}  // namespace

Tensor sum(const Tensor& x, const std::vector<int>& dims, bool keepdim) {
  Plan p = plan(x, dims, keepdim, "sum");
  Tensor xx = x.dtype() == DType::b8 ? x.to(DType::i64) : x;
  COLT5_CHECK(xx.dtype() == DType::f32 || xx.dtype() == DType::f64 || xx.dtype() == DType::i64,
              "sum: expected f32, f64, i64 or bool, got ", dtype_name(x.dtype()));
  Tensor out = run(ReduceOp::sum, xx, p, "sum").view(p.out_shape);
  if (needs_grad({&x})) {
    Shape keep = p.keep_shape, in = x.shape();
    record(out, "sum", {x}, [keep, in](const Tensor& g) { return std::vector<Tensor>{g.reshape(keep).expand(in)}; });
  }
  return out;
}

Tensor mean(const Tensor& x, const std::vector<int>& dims, bool keepdim) {
  Plan p = plan(x, dims, keepdim, "mean");
  COLT5_CHECK(is_floating(x.dtype()), "mean: expected a floating tensor, got ", dtype_name(x.dtype()));
  COLT5_CHECK(p.count > 0, "mean: cannot average over an empty dim (shape ", shape_str(x.shape()), ")");
  return div(sum(x, dims, keepdim), static_cast<double>(p.count));
}

Tensor max(const Tensor& x, const std::vector<int>& dims, bool keepdim) {
  return extreme(ReduceOp::max, x, dims, keepdim, "max");
}
Tensor min(const Tensor& x, const std::vector<int>& dims, bool keepdim) {
  return extreme(ReduceOp::min, x, dims, keepdim, "min");
}

static Tensor arg(ReduceOp op, const Tensor& x, int dim, bool keepdim, const char* name) {
  COLT5_CHECK(x.defined(), name, ": the tensor is undefined");
  COLT5_CHECK(x.dtype() == DType::f32 || x.dtype() == DType::f64, name, ": expected f32 or f64, got ",
              dtype_name(x.dtype()));
  Plan p = plan(x, {dim}, keepdim, name);
  return run(op, x, p, name).view(p.out_shape);
}
Tensor argmax(const Tensor& x, int dim, bool keepdim) { return arg(ReduceOp::argmax, x, dim, keepdim, "argmax"); }
Tensor argmin(const Tensor& x, int dim, bool keepdim) { return arg(ReduceOp::argmin, x, dim, keepdim, "argmin"); }

Tensor logsumexp(const Tensor& x, const std::vector<int>& dims, bool keepdim) {
  Plan p = plan(x, dims, keepdim, "logsumexp");
  COLT5_CHECK(x.dtype() == DType::f32 || x.dtype() == DType::f64, "logsumexp: expected f32 or f64, got ",
              dtype_name(x.dtype()));
  Tensor m;
  {
    NoGradGuard ng;
    m = run(ReduceOp::max, x, p, "logsumexp");
    m = where(eq(abs(m), INFINITY), 0.0, m);  // rows of -inf (or +inf) shift by 0: no inf - inf
  }
  Tensor s = sum(exp(x - m), dims, true);
  Tensor out = log(s) + m;
  return out.view(p.out_shape);
}

}  // namespace colt5
