#include "ops/routing.h"

#include "engine/autograd.h"
#include "engine/backend.h"
#include "engine/strided.h"
#include "kernels/cpu/index.h"
#include "kernels/cpu/routing.h"
#ifdef COLT5_WITH_CUDA
#include "engine/cuda/memory.h"
#include "kernels/cuda/index.h"
#include "kernels/cuda/routing.h"
#endif

namespace colt5 {
namespace {

using kernels::RoutingDims;
using kernels::RowsIn;
using kernels::RowsOut;

bool routing_float(DType t) {
  return t == DType::f32 || t == DType::f64 || t == DType::bf16 || t == DType::f16;
}

// Validates idx against x's (B, N): i64, (B, n) or (B, R, n) (3-D only when
// allowed), values in [0, N). Returns it contiguous.
Tensor check_index(const char* op, const Tensor& idx, int64_t B, int64_t N, bool allow_routes, const Tensor& x) {
  COLT5_CHECK(idx.defined(), op, ": indices are undefined");
  COLT5_CHECK(idx.dtype() == DType::i64, op, ": indices must be i64, got ", dtype_name(idx.dtype()), " (shape ",
              shape_str(idx.shape()), ")");
  const bool shape_ok = (idx.dim() == 2 || (allow_routes && idx.dim() == 3)) && idx.size(0) == B;
  COLT5_CHECK(shape_ok, op, ": indices must be ", allow_routes ? "(B, n) or (B, R, n)" : "(B, n)", " with B=", B,
              ", got ", shape_str(idx.shape()), " (input shape ", shape_str(x.shape()), ")");
  check_same_device(op, {&x, &idx});
  Tensor ix = idx.detach().contiguous();
  if (ix.numel() == 0) return ix;
  auto g = make_geometry<1>(ix.shape(), {ix.strides()});
  const int64_t* p = static_cast<const int64_t*>(ix.data_ptr());
  int64_t bad = 0;
  bool ok = true;
  COLT5_ON_DEVICE(op, ix.device(), ok = kernels::cpu::indices_in_range(p, g, N, &bad),
                  ok = kernels::cuda::indices_in_range(p, g, N, &bad, ix.device().index));
  COLT5_CHECK(ok, op, ": index ", bad, " is out of range for N=", N, " tokens (input shape ", shape_str(x.shape()),
              ", indices shape ", shape_str(idx.shape()), ")");
  return ix;
}

void check_rows3(const char* op, const Tensor& t, const char* what) {
  COLT5_CHECK(t.defined(), op, ": ", what, " is undefined");
  COLT5_CHECK(t.dim() == 3, op, ": ", what, " must be 3-D (B, N, D), got shape ", shape_str(t.shape()));
  COLT5_CHECK(routing_float(t.dtype()), op, ": ", what, " must be f32, f64, bf16 or f16, got ", dtype_name(t.dtype()),
              " (shape ", shape_str(t.shape()), ")");
}

// A (B, rows, D) tensor the kernels read in place: last dim contiguous, non-negative strides.
Tensor rows_ready(const Tensor& t) {
  const bool ok = (t.size(2) <= 1 || t.stride(2) == 1) && t.stride(0) >= 0 && t.stride(1) >= 0;
  return ok ? t : t.contiguous();
}
// A (B, R, n, D) or (B, n, D) gradient as (B, R * n, D) rows (a view when possible).
Tensor as_rows(const Tensor& t, int64_t B, int64_t m, int64_t D) {
  if (t.dim() == 4) {
    const bool merge = t.size(1) <= 1 || t.size(2) <= 1 || t.stride(1) == t.size(2) * t.stride(2);
    const bool last = D <= 1 || t.stride(3) == 1;
    Tensor c = (merge && last) ? t : t.contiguous();
    const int64_t sn = c.size(2) > 1 ? c.stride(2) : c.size(1) > 1 ? c.stride(1) : D;
    return make_view(c.storage(), {B, m, D}, {c.stride(0), sn, c.size(3) > 1 ? c.stride(3) : 1}, c.offset(),
                     c.dtype());
  }
  return rows_ready(t);
}

RowsIn rin(const Tensor& t) { return {t.data_ptr(), t.stride(0), t.stride(1)}; }
RowsOut rout(const Tensor& t) { return {t.data_ptr(), t.stride(0), t.stride(1)}; }
const void* ptr_or_null(const Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }

// Scores as a contiguous tensor of x's dtype and idx's shape (differentiable conversions).
Tensor prepare_scores(const char* op, const Tensor& scores, const Tensor& idx, DType dt) {
  COLT5_CHECK(scores.defined(), op, ": scores are undefined");
  COLT5_CHECK(is_floating(scores.dtype()), op, ": scores must be floating, got ", dtype_name(scores.dtype()));
  COLT5_CHECK(scores.shape() == idx.shape(), op, ": scores shape ", shape_str(scores.shape()),
              " must equal the indices shape ", shape_str(idx.shape()));
  check_same_device(op, {&scores, &idx});
  return scores.to(dt).contiguous();
}

// dx (B, N, D) of the gather: deterministic scatter-add of g (B, m, D) rows.
Tensor gather_backward_x(const RoutingDims& d, const Tensor& g3, const Tensor& ix, const Tensor& sc, Device dev) {
  Tensor dx = make_tensor({d.B, d.N, d.D}, d.dtype, dev);
  const int64_t* ip = static_cast<const int64_t*>(ix.data_ptr());
  COLT5_ON_DEVICE("gather_tokens backward", dev,
                  kernels::cpu::gather_rows_backward(d, rout(dx), rin(g3), ip, ptr_or_null(sc)), {
                    cuda::DeviceGuard guard(dev.index);
                    const size_t bytes = kernels::cuda::gather_rows_backward_workspace_bytes(d);
                    cuda::Workspace ws(bytes, dev.index);
                    kernels::cuda::gather_rows_backward(d, rout(dx), rin(g3), ip, ptr_or_null(sc), ws.get(), bytes,
                                                        cuda::current_stream(dev.index));
                  });
  return dx;
}

Tensor gather_impl(const char* op, const Tensor& x0, const Tensor& idx, const Tensor& scores0) {
  check_rows3(op, x0, "x");
  const int64_t B = x0.size(0), N = x0.size(1), D = x0.size(2);
  const DType dt = x0.dtype();
  const Device dev = x0.device();
  Tensor ix = check_index(op, idx, B, N, true, x0);
  const int64_t R = ix.dim() == 3 ? ix.size(1) : 1, n = ix.size(-1);
  Tensor x = rows_ready(x0);
  Tensor sc = scores0.defined() ? prepare_scores(op, scores0, ix, dt) : Tensor();
  RoutingDims d{dt, B, N, D, R, n};
  Shape out_shape = ix.shape();
  out_shape.push_back(D);
  Tensor out = make_tensor(out_shape, dt, dev);
  Tensor out3 = out.view({B, R * n, D});
  const int64_t* ip = static_cast<const int64_t*>(ix.data_ptr());
  COLT5_ON_DEVICE(op, dev, kernels::cpu::gather_rows(d, rout(out3), rin(x), ip, ptr_or_null(sc)), {
    cuda::DeviceGuard guard(dev.index);
    kernels::cuda::gather_rows(d, rout(out3), rin(x), ip, ptr_or_null(sc), cuda::current_stream(dev.index));
  });
  if (needs_grad({&x, &sc})) {
    const bool want_x = x.requires_grad(), want_s = sc.defined() && sc.requires_grad();
    Tensor xd = want_s ? x.detach() : Tensor(), sd = sc.defined() ? sc.detach() : Tensor();
    record(out, op, {x, sc}, [d, ix, xd, sd, want_x, want_s, dev, op](const Tensor& g0) {
      Tensor g = g0.dtype() == d.dtype ? g0 : g0.to(d.dtype);
      Tensor g3 = as_rows(g, d.B, d.m(), d.D);
      Tensor dx, ds;
      if (want_x) dx = gather_backward_x(d, g3, ix, sd, dev);
      if (want_s) {
        ds = make_tensor(ix.shape(), d.dtype, dev);
        const int64_t* ip = static_cast<const int64_t*>(ix.data_ptr());
        COLT5_ON_DEVICE(op, dev, kernels::cpu::gather_rows_dscores(d, ds.data_ptr(), rin(g3), rin(xd), ip), {
          cuda::DeviceGuard guard(dev.index);
          kernels::cuda::gather_rows_dscores(d, ds.data_ptr(), rin(g3), rin(xd), ip, cuda::current_stream(dev.index));
        });
      }
      return std::vector<Tensor>{dx, ds};
    }, {x, sc});
  }
  return out;
}

Tensor route_back_impl(const char* op, const Tensor& dst0, const Tensor& routed0, const Tensor& idx,
                       const Tensor& scores0) {
  check_rows3(op, dst0, "dst");
  check_rows3(op, routed0, "routed");
  const int64_t B = dst0.size(0), N = dst0.size(1), D = dst0.size(2);
  const DType dt = dst0.dtype();
  const Device dev = dst0.device();
  COLT5_CHECK(routed0.dtype() == dt, op, ": routed dtype ", dtype_name(routed0.dtype()), " differs from dst dtype ",
              dtype_name(dt));
  check_same_device(op, {&dst0, &routed0});
  Tensor ix = check_index(op, idx, B, N, false, dst0);
  const int64_t n = ix.size(1);
  COLT5_CHECK(routed0.size(0) == B && routed0.size(1) == n && routed0.size(2) == D, op, ": routed must be (B, n, D) = ",
              shape_str({B, n, D}), ", got ", shape_str(routed0.shape()), " (dst ", shape_str(dst0.shape()),
              ", indices ", shape_str(idx.shape()), ")");
  Tensor dst = rows_ready(dst0), routed = rows_ready(routed0);
  Tensor sc = scores0.defined() ? prepare_scores(op, scores0, ix, dt) : Tensor();
  RoutingDims d{dt, B, N, D, 1, n};
  Tensor inv = make_tensor({B, N}, DType::i64, dev);
  Tensor out = make_tensor({B, N, D}, dt, dev);
  const int64_t* ip = static_cast<const int64_t*>(ix.data_ptr());
  int64_t* invp = static_cast<int64_t*>(inv.data_ptr());
  COLT5_ON_DEVICE(op, dev,
                  {
                    kernels::cpu::route_back_inverse(d, ip, invp);
                    kernels::cpu::route_back_forward(d, rout(out), rin(dst), rin(routed), invp, ptr_or_null(sc));
                  },
                  {
                    cuda::DeviceGuard guard(dev.index);
                    cudaStream_t s = cuda::current_stream(dev.index);
                    kernels::cuda::route_back_inverse(d, ip, invp, s);
                    kernels::cuda::route_back_forward(d, rout(out), rin(dst), rin(routed), invp, ptr_or_null(sc), s);
                  });
  if (needs_grad({&dst, &routed, &sc})) {
    const bool want_d = dst.requires_grad(), want_r = routed.requires_grad();
    const bool want_s = sc.defined() && sc.requires_grad();
    Tensor rd = want_s ? routed.detach() : Tensor(), sd = sc.defined() ? sc.detach() : Tensor();
    record(out, op, {dst, routed, sc}, [d, ix, inv, rd, sd, want_d, want_r, want_s, dev, op](const Tensor& g0) {
      Tensor g = rows_ready(g0.dtype() == d.dtype ? g0 : g0.to(d.dtype));
      Tensor dd = want_d ? make_tensor({d.B, d.N, d.D}, d.dtype, dev) : Tensor();
      Tensor dr = want_r ? make_tensor({d.B, d.n, d.D}, d.dtype, dev) : Tensor();
      Tensor ds = want_s ? make_tensor({d.B, d.n}, d.dtype, dev) : Tensor();
      RowsOut o_d = dd.defined() ? rout(dd) : RowsOut{}, o_r = dr.defined() ? rout(dr) : RowsOut{};
      RowsIn r_in = rd.defined() ? rin(rd) : RowsIn{};
      const int64_t* ip = static_cast<const int64_t*>(ix.data_ptr());
      const int64_t* invp = static_cast<const int64_t*>(inv.data_ptr());
      void* dsp = ds.defined() ? ds.data_ptr() : nullptr;
      COLT5_ON_DEVICE(op, dev,
                      kernels::cpu::route_back_backward(d, o_d, o_r, dsp, rin(g), r_in, ip, invp, ptr_or_null(sd)),
                      {
                        cuda::DeviceGuard guard(dev.index);
                        kernels::cuda::route_back_backward(d, o_d, o_r, dsp, rin(g), r_in, ip, invp, ptr_or_null(sd),
                                                           cuda::current_stream(dev.index));
                      });
      return std::vector<Tensor>{dd, dr, ds};
    }, {dst, routed, sc});
  }
  return out;
}

}  // namespace

Tensor gather_tokens(const Tensor& x, const Tensor& idx) { return gather_impl("gather_tokens", x, idx, Tensor()); }

Tensor gather_tokens_scaled(const Tensor& x, const Tensor& idx, const Tensor& scores) {
  COLT5_CHECK(scores.defined(), "gather_tokens_scaled: scores are undefined");
  return gather_impl("gather_tokens_scaled", x, idx, scores);
}

Tensor gather_mask(const Tensor& mask, const Tensor& idx) {
  const char* op = "gather_mask";
  COLT5_CHECK(mask.defined(), op, ": mask is undefined");
  COLT5_CHECK(mask.dtype() == DType::b8 && mask.dim() == 2, op, ": mask must be bool (B, N), got ",
              dtype_name(mask.dtype()), " ", shape_str(mask.shape()));
  const int64_t B = mask.size(0), N = mask.size(1);
  Tensor ix = check_index(op, idx, B, N, true, mask);
  const int64_t R = ix.dim() == 3 ? ix.size(1) : 1, n = ix.size(-1);
  Tensor m = mask.detach();
  Tensor out = make_tensor(ix.shape(), DType::b8, mask.device());
  RoutingDims d{DType::b8, B, N, 1, R, n};
  RowsIn src{m.data_ptr(), m.stride(0), m.stride(1)};
  RowsOut dst{out.data_ptr(), R * n, 1};
  const int64_t* ip = static_cast<const int64_t*>(ix.data_ptr());
  const Device dev = mask.device();
  COLT5_ON_DEVICE(op, dev, kernels::cpu::gather_rows(d, dst, src, ip, nullptr), {
    cuda::DeviceGuard guard(dev.index);
    kernels::cuda::gather_rows(d, dst, src, ip, nullptr, cuda::current_stream(dev.index));
  });
  return out;
}

Tensor route_back(const Tensor& dst, const Tensor& routed, const Tensor& idx) {
  return route_back_impl("route_back", dst, routed, idx, Tensor());
}

Tensor route_back_scaled(const Tensor& dst, const Tensor& routed, const Tensor& idx, const Tensor& scores) {
  COLT5_CHECK(scores.defined(), "route_back_scaled: scores are undefined");
  return route_back_impl("route_back_scaled", dst, routed, idx, scores);
}

}  // namespace colt5
