#include "ops/loss.h"

#include "engine/autograd.h"
#include "engine/backend.h"
#include "engine/dispatch.h"
#include "kernels/cpu/loss.h"
#include "ops/elementwise.h"
#include "ops/reduce.h"
#ifdef COLT5_WITH_CUDA
#include "kernels/cuda/loss.h"
#endif

namespace colt5 {

Tensor cross_entropy(const Tensor& logits, const Tensor& target, int64_t ignore_index, Reduction reduction) {
  const char* name = "cross_entropy";
  COLT5_CHECK(logits.defined() && target.defined(), name, ": logits or target is undefined");
  COLT5_CHECK(logits.dtype() == DType::f32 || logits.dtype() == DType::f64, name,
              ": expected f32 or f64 logits, got ", dtype_name(logits.dtype()), " of shape ",
              shape_str(logits.shape()));
  COLT5_CHECK(logits.dim() >= 1, name, ": expected logits of shape (N, C) or (B, ..., C), got shape ",
              shape_str(logits.shape()));
  COLT5_CHECK(target.dtype() == DType::i64, name, ": expected an i64 target (class indices), got ",
              dtype_name(target.dtype()), " of shape ", shape_str(target.shape()));
  Shape want(logits.shape().begin(), logits.shape().end() - 1);
  COLT5_CHECK(target.shape() == want, name, ": target of shape ", shape_str(target.shape()),
              " does not match logits of shape ", shape_str(logits.shape()), " (expected target shape ",
              shape_str(want), ")");
  check_same_device(name, {&logits, &target});
  const int64_t C = logits.size(-1), rows = target.numel();
  COLT5_CHECK(C > 0 || rows == 0, name, ": logits of shape ", shape_str(logits.shape()), " have no classes");

  const Tensor xc = logits.detach().contiguous(), tc = target.detach().contiguous();
  Tensor losses = make_tensor(target.shape(), logits.dtype(), logits.device());
  Tensor lse = make_tensor(target.shape(), logits.dtype(), logits.device());
  const Device dev = logits.device();
  dispatch_float(logits.dtype(), name, [&](auto tag) {
    using T = decltype(tag);
    COLT5_ON_DEVICE(name, dev,
                    kernels::cpu::cross_entropy_forward(losses.data<T>(), lse.data<T>(), xc.data<T>(),
                                                        tc.data<int64_t>(), rows, C, ignore_index),
                    kernels::cuda::cross_entropy_forward(losses.data<T>(), lse.data<T>(), xc.data<T>(),
                                                         tc.data<int64_t>(), rows, C, ignore_index, dev.index));
  });
  if (needs_grad({&logits})) {
    record(losses, name, {logits}, [=](const Tensor& g) {
      const Tensor dl = (g.dtype() == xc.dtype() ? g : g.to(xc.dtype())).contiguous();
      Tensor dx = make_tensor(xc.shape(), xc.dtype(), xc.device());
      const Device dev = xc.device();
      dispatch_float(xc.dtype(), name, [&](auto tag) {
        using T = decltype(tag);
        COLT5_ON_DEVICE(name, dev,
                        kernels::cpu::cross_entropy_backward(dx.data<T>(), dl.data<T>(), xc.data<T>(), lse.data<T>(),
                                                             tc.data<int64_t>(), rows, C, ignore_index),
                        kernels::cuda::cross_entropy_backward(dx.data<T>(), dl.data<T>(), xc.data<T>(),
                                                              lse.data<T>(), tc.data<int64_t>(), rows, C,
                                                              ignore_index, dev.index));
      });
      return std::vector<Tensor>{dx};
    }, {logits, target});
  }
  switch (reduction) {
    case Reduction::none: return losses;
    case Reduction::sum: return sum(losses);
    case Reduction::mean: break;
  }
  // Divide by the number of non-ignored targets (at least 1: all ignored gives 0), on the device.
  Tensor count = clamp_min(sum(ne(tc, static_cast<double>(ignore_index))).to(logits.dtype()), 1.0);
  return div(sum(losses), count);
}

}  // namespace colt5
