#include "ops/topk.h"

#include <algorithm>
#include <cmath>

#include "engine/autograd.h"
#include "engine/backend.h"
#include "engine/dispatch.h"
#include "engine/strided.h"
#include "kernels/cpu/topk.h"
#include "ops/coor_descent.h"
#include "ops/elementwise.h"
#include "ops/index.h"
#ifdef COLT5_WITH_CUDA
#include "engine/cuda/memory.h"
#include "kernels/cuda/topk.h"
#endif

namespace colt5 {

TopK hard_topk(const Tensor& x0, int64_t k) {
  const char* op = "hard_topk";
  COLT5_CHECK(x0.defined(), op, ": input is undefined");
  COLT5_CHECK(x0.dim() >= 1, op, ": input needs at least one dim");
  COLT5_CHECK(x0.dtype() == DType::f32 || x0.dtype() == DType::f64, op, ": expected f32 or f64, got ",
              dtype_name(x0.dtype()));
  const int64_t n = x0.size(-1);
  COLT5_CHECK(k >= 0 && k <= n, op, ": k = ", k, " must be in [0, ", n, "] for input of shape ", shape_str(x0.shape()));
  Tensor x = x0.contiguous();
  const int64_t rows = n == 0 ? 0 : x.numel() / n;
  Shape oshape = x.shape();
  oshape.back() = k;
  Tensor values = make_tensor(oshape, x.dtype(), x.device());
  Tensor indices = make_tensor(oshape, DType::i64, x.device());
  if (rows > 0 && k > 0) {
    COLT5_ON_DEVICE(op, x.device(),
                    dispatch_float(x.dtype(), op, [&](auto tag) {
                      using T = decltype(tag);
                      kernels::cpu::topk<T>(x.data<T>(), rows, n, k, values.data<T>(), indices.data<int64_t>());
                    }),
                    {
                      int dev = x.device().index;
                      bool f64 = x.dtype() == DType::f64;
                      size_t wb = f64 ? kernels::cuda::topk_workspace_bytes_f64(rows, n, k)
                                      : kernels::cuda::topk_workspace_bytes(rows, n, k);
                      Tensor ws = make_tensor({static_cast<int64_t>(wb) + 1}, DType::b8, x.device());
                      if (f64)
                        kernels::cuda::topk(x.data<double>(), rows, n, k, values.data<double>(),
                                            indices.data<int64_t>(), ws.data_ptr(), cuda::current_stream(dev));
                      else
                        kernels::cuda::topk(x.data<float>(), rows, n, k, values.data<float>(),
                                            indices.data<int64_t>(), ws.data_ptr(), cuda::current_stream(dev));
                    });
  }
  if (needs_grad({&x0})) {
    Shape in_shape = x.shape();
    Tensor idx = indices;
    record(values, op, {x}, [in_shape, idx](const Tensor& g) {
      Tensor z = zeros(in_shape, {.dtype = g.dtype(), .device = g.device()});
      return std::vector<Tensor>{scatter_add(z, -1, idx, g)};
    });
  }
  return {values, indices};
}

DiffTopK topk(const Tensor& x, int64_t k, const TopkOptions& o) {
  COLT5_CHECK(x.defined() && x.dim() >= 1, "topk: input must be a tensor with at least one dim");
  const int64_t n = x.size(-1);
  COLT5_CHECK(k >= 1 && k <= n, "topk: k = ", k, " must be in [1, ", n, "] for input of shape ", shape_str(x.shape()));
  COLT5_CHECK(o.coor_descent_k_ratio >= 1.0, "topk: coor_descent_k_ratio must be >= 1, got ", o.coor_descent_k_ratio);
  if (o.non_differentiable) {
    NoGradGuard ng;
    Tensor xx = o.mask.defined() ? masked_fill(x, logical_not(o.mask), x.dtype() == DType::f64 ? -1.7976931348623157e308
                                                                                               : -3.4028234663852886e38)
                                 : x;
    TopK t = hard_topk(xx, k);
    return {t.values, t.indices, Tensor(), Tensor()};
  }
  double kk = std::min(static_cast<double>(k) * o.coor_descent_k_ratio, static_cast<double>(n));
  CoorDescentOptions co{.n_iters = o.n_iters, .eps = o.eps, .eps_init = o.eps_init, .eps_decay = o.eps_decay};
  Tensor c = coor_descent(x, kk, o.mask, co);
  Tensor gates = c + (1.0 - c).detach();
  Tensor y = x * gates;
  TopK t = hard_topk(y, k);
  return {t.values, t.indices, gather(c, -1, t.indices), gather(gates, -1, t.indices)};
}

}  // namespace colt5
