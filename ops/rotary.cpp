#include "ops/rotary.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "engine/autograd.h"
#include "engine/backend.h"
#include "engine/strided.h"
#include "kernels/cpu/rotary.h"
#ifdef COLT5_WITH_CUDA
#include "engine/cuda/memory.h"
#include "kernels/cuda/rotary.h"
#endif

namespace colt5 {
namespace {

bool rotary_float(DType t) { return t == DType::f32 || t == DType::f64 || t == DType::bf16 || t == DType::f16; }

// A fresh tensor of t's shape laid out in t's memory order (last dim innermost).
Tensor empty_like_layout(const Tensor& t, DType dt) {
  const int n = t.dim();
  if (n == 0) return make_tensor({}, dt, t.device());
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end() - 1, [&](int a, int b) { return t.stride(a) > t.stride(b); });
  Shape shape(n);
  for (int i = 0; i < n; ++i) shape[i] = t.size(order[i]);
  std::vector<int> inv(n);
  for (int i = 0; i < n; ++i) inv[order[i]] = i;
  return make_tensor(shape, dt, t.device()).permute(inv);
}

// Last dim contiguous, non-negative strides: read in place; else a contiguous copy.
Tensor last_dim_ready(const Tensor& t) {
  bool ok = t.size(-1) <= 1 || t.stride(-1) == 1;
  for (int i = 0; i < t.dim(); ++i) ok = ok && t.stride(i) >= 0;
  return ok ? t : t.contiguous();
}

Shape leading(const Shape& s) { return Shape(s.begin(), s.end() - 1); }

// Rows geometry (out, x, positions) over x.shape[:-1].
Geometry<3> rows_geometry(const Tensor& out, const Tensor& x, const Tensor& pos, const char* op) {
  const Shape rows = leading(x.shape());
  return make_geometry<3>(rows, {leading(out.strides()), leading(x.strides()), broadcast_strides(pos, rows, op)});
}

void run_rotary(const kernels::RotaryParams& p, Tensor& out, const Tensor& x) {
  const Device dev = x.device();
  COLT5_ON_DEVICE("apply_rotary", dev, kernels::cpu::apply_rotary(p, out.data_ptr(), x.data_ptr()), {
    cuda::DeviceGuard guard(dev.index);
    kernels::cuda::apply_rotary(p, out.data_ptr(), x.data_ptr(), cuda::current_stream(dev.index));
  });
}

}  // namespace

Tensor rotary_inv_freq(int64_t dim, Options opt) {
  COLT5_CHECK(dim >= 0, "rotary_inv_freq: dim must be non-negative, got ", dim);
  // torch.arange(0, dim, 2): ceil(dim / 2) frequencies (dim / 2 for the even head dims in use).
  const int64_t half = (dim + 1) / 2;
  std::vector<double> v(half);
  for (int64_t i = 0; i < half; ++i) {
    if (opt.dtype == DType::f64) {
      v[i] = 1.0 / std::pow(10000.0, double(2 * i) / double(dim));
    } else {
      const float e = static_cast<float>(2 * i) / static_cast<float>(dim);
      v[i] = static_cast<double>(1.0f / std::pow(10000.0f, e));
    }
  }
  return from_vector(v, {half}, {.dtype = opt.dtype, .device = opt.device});
}

Tensor apply_rotary(const Tensor& x0, const Tensor& positions, const Tensor& inv_freq) {
  const char* op = "apply_rotary";
  COLT5_CHECK(x0.defined() && positions.defined() && inv_freq.defined(), op,
              ": x, positions and inv_freq must be defined");
  COLT5_CHECK(x0.dim() >= 1 && rotary_float(x0.dtype()), op, ": x must be a f32, f64, bf16 or f16 tensor (..., n, d), got ",
              dtype_name(x0.dtype()), " ", shape_str(x0.shape()));
  COLT5_CHECK(inv_freq.dim() == 1 && is_floating(inv_freq.dtype()), op, ": inv_freq must be a 1-D float tensor, got ",
              dtype_name(inv_freq.dtype()), " ", shape_str(inv_freq.shape()));
  COLT5_CHECK(positions.dtype() == DType::i64 || is_floating(positions.dtype()), op,
              ": positions must be i64 or floating, got ", dtype_name(positions.dtype()));
  check_same_device(op, {&x0, &positions, &inv_freq});
  const int64_t d = x0.size(-1), half = inv_freq.size(0);
  COLT5_CHECK(2 * half <= d, op, ": x's last dim d=", d, " is smaller than 2 * len(inv_freq) = ", 2 * half,
              " (x ", shape_str(x0.shape()), ")");
  const Shape rows = leading(x0.shape());
  Shape pst = broadcast_strides(positions, rows, op);  // throws naming op and both shapes when not broadcastable
  (void)pst;
  const DType dt = x0.dtype(), ct = kernels::rotary_compute_dtype(dt);
  Tensor pos = positions.detach().to(ct);
  Tensor invf = inv_freq.detach().to(ct).contiguous();
  Tensor x = last_dim_ready(x0);
  Tensor out = empty_like_layout(x, dt);

  kernels::RotaryParams p;
  p.dtype = dt;
  p.d = d;
  p.half = half;
  p.positions = pos.data_ptr();
  p.inv_freq = invf.data_ptr();
  p.rows = rows_geometry(out, x, pos, op);
  run_rotary(p, out, x);

  if (needs_grad({&x})) {
    record(out, op, {x}, [p, pos, invf, dt](const Tensor& g0) {
      Tensor g = last_dim_ready(g0.dtype() == dt ? g0 : g0.to(dt));
      Tensor dx = empty_like_layout(g, dt);
      kernels::RotaryParams bp = p;
      bp.inverse = true;
      bp.rows = rows_geometry(dx, g, pos, "apply_rotary backward");
      run_rotary(bp, dx, g);
      return std::vector<Tensor>{dx};
    });
  }
  return out;
}

}  // namespace colt5
