#include "ops/local_attention.h"

#include <cmath>
#include <limits>
#include <vector>

#include "engine/autograd.h"
#include "engine/backend.h"
#include "kernels/cpu/local_attention.h"
#include "ops/elementwise.h"
#include "ops/index.h"
#include "ops/matmul.h"
#include "ops/shape_ops.h"
#include "ops/softmax.h"
#ifdef COLT5_WITH_CUDA
#include "engine/cuda/memory.h"
#include "kernels/cuda/local_attention.h"
#endif

namespace colt5 {
namespace {

void check_inputs(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask,
                  const LocalAttentionOptions& o, const char* op) {
  COLT5_CHECK(q.defined() && k.defined() && v.defined(), op, ": q, k and v must be defined");
  COLT5_CHECK(q.dim() == 4, op, ": q must be (B, H, N, d), got ", shape_str(q.shape()));
  COLT5_CHECK(k.shape() == q.shape() && v.shape() == q.shape(), op, ": q, k and v must have the same shape, got q ",
              shape_str(q.shape()), " k ", shape_str(k.shape()), " v ", shape_str(v.shape()));
  COLT5_CHECK(is_floating(q.dtype()) && k.dtype() == q.dtype() && v.dtype() == q.dtype(), op,
              ": q, k and v must share one floating dtype, got ", dtype_name(q.dtype()), ", ", dtype_name(k.dtype()),
              ", ", dtype_name(v.dtype()));
  COLT5_CHECK(o.window >= 1, op, ": window must be >= 1, got ", o.window);
  COLT5_CHECK(o.look_backward >= 0 && o.look_forward >= 0, op, ": look_backward and look_forward must be >= 0, got ",
              o.look_backward, ", ", o.look_forward);
  COLT5_CHECK(std::isfinite(o.scale), op, ": scale must be finite, got ", o.scale);
  check_same_device(op, {&q, &k, &v, &mask});
  if (mask.defined()) {
    COLT5_CHECK(mask.dtype() == DType::b8, op, ": key_mask must be bool, got ", dtype_name(mask.dtype()));
    COLT5_CHECK(mask.dim() == 2 && mask.size(0) == q.size(0) && mask.size(1) == q.size(2), op,
                ": key_mask must be (B, N) = (", q.size(0), ", ", q.size(2), "), got ", shape_str(mask.shape()));
  }
}

double scale_of(const Tensor& q, const LocalAttentionOptions& o) {
  return o.scale != 0 ? o.scale : 1.0 / std::sqrt(static_cast<double>(q.size(3)));
}

// x in dtype dt with a contiguous last dim and rows at least d apart (the
// kernels' layout contract); a view of x when it already is one.
Tensor kernel_layout(const Tensor& x, DType dt) {
  Tensor y = x.to(dt);
  const bool ok = y.stride(3) == 1 && (y.size(2) <= 1 || y.stride(2) >= y.size(3)) && y.stride(0) >= 0 &&
                  y.stride(1) >= 0;
  return ok ? y : y.contiguous();
}

kernels::AttnStrides strides_of(const Tensor& x) { return {x.stride(0), x.stride(1), x.stride(2)}; }

kernels::LocalAttentionParams params_for(const Tensor& q, const LocalAttentionOptions& o, DType dt) {
  kernels::LocalAttentionParams p;
  p.dtype = dt;
  p.B = q.size(0), p.H = q.size(1), p.N = q.size(2), p.d = q.size(3);
  p.window = o.window;
  p.look_backward = o.look_backward, p.look_forward = o.look_forward;
  p.causal = o.causal, p.exact = o.exact;
  p.scale = scale_of(q, o);
  return p;
}

}  // namespace

Tensor local_attention_reference(const Tensor& q0, const Tensor& k0, const Tensor& v0, const Tensor& mask0,
                                 const LocalAttentionOptions& o) {
  const char* op = "local_attention_reference";
  check_inputs(q0, k0, v0, mask0, o, op);
  const DType dt = (q0.dtype() == DType::f64 || q0.dtype() == DType::f32) ? q0.dtype() : DType::f32;
  const Device dev = q0.device();
  const int64_t B = q0.size(0), H = q0.size(1), N = q0.size(2), d = q0.size(3), w = o.window;
  const int64_t nw = (N + w - 1) / w, Np = nw * w;
  if (N == 0) return mul(q0, 0.0);
  // Look values beyond the window count see nothing more (and exact limits
  // beyond the sequence limit nothing): clamp to keep the neighbourhood small.
  const int64_t lb = std::min<int64_t>(o.look_backward, nw), lf = std::min<int64_t>(o.look_forward, nw);
  const int64_t L = (lb + 1 + lf) * w;  // keys in one window's neighbourhood
  Tensor q = q0.to(dt), k = k0.to(dt), v = v0.to(dt);

  // Zero rows before and after along the sequence dim.
  auto pad = [&](const Tensor& x, int64_t front, int64_t back) {
    std::vector<Tensor> parts;
    Shape s = x.shape();
    if (front > 0) {
      s[2] = front;
      parts.push_back(zeros(s, {.dtype = x.dtype(), .device = dev}));
    }
    parts.push_back(x);
    if (back > 0) {
      s[2] = back;
      parts.push_back(zeros(s, {.dtype = x.dtype(), .device = dev}));
    }
    return parts.size() == 1 ? x : cat(parts, 2);
  };
  // Queries in windows: (B, H, nw, w, d).
  Tensor qw = pad(q, 0, Np - N).reshape({B, H, nw, w, d});
  // Each window's neighbourhood, gathered from keys padded by lb windows in
  // front and lf windows (plus the partial window's tail) behind: padded
  // position i*w + r is key (i - lb)*w + r.
  std::vector<int64_t> idx(nw * L);
  for (int64_t i = 0; i < nw; ++i)
    for (int64_t r = 0; r < L; ++r) idx[i * L + r] = i * w + r;
  Tensor gidx = from_vector_i64(idx, {nw * L}, {.dtype = DType::i64, .device = dev});
  Tensor kn = index_select(pad(k, lb * w, Np - N + lf * w), 2, gidx).reshape({B, H, nw, L, d});
  Tensor vn = index_select(pad(v, lb * w, Np - N + lf * w), 2, gidx).reshape({B, H, nw, L, d});

  // Visibility (.., nw, w, L): the band, then the key mask.
  std::vector<bool> band(nw * w * L);
  for (int64_t i = 0; i < nw; ++i)
    for (int64_t a = 0; a < w; ++a)
      for (int64_t r = 0; r < L; ++r) {
        const int64_t t = i * w + a, j = (i - lb) * w + r;
        bool vis = t < N && j >= 0 && j < N;
        if (o.causal) vis = vis && j <= t;
        if (o.exact) vis = vis && t - j <= w * lb && j - t <= w * lf;
        band[(i * w + a) * L + r] = vis;
      }
  Tensor visible = from_vector_bool(band, {1, 1, nw, w, L}, {.dtype = DType::b8, .device = dev});
  if (mask0.defined()) {
    Tensor mf = mask0.to(dt).reshape({B, 1, N, 1});  // 1 = keep, 0 = drop; padding positions 0
    Tensor mn = index_select(pad(mf, lb * w, Np - N + lf * w), 2, gidx).reshape({B, 1, nw, 1, L});
    visible = logical_and(visible, gt(mn, 0.5));
  }

  Tensor s = matmul(qw, kn.transpose(-1, -2)) * scale_of(q0, o);  // (B, H, nw, w, L)
  s = masked_fill(s, logical_not(visible), -std::numeric_limits<double>::infinity());
  Tensor p = softmax(s, -1);  // a fully masked row gives zeros and a zero gradient
  Tensor out = matmul(p, vn).reshape({B, H, Np, d}).narrow(2, 0, N);
  if (q0.dtype() != dt) out = out.to(q0.dtype());
  return out;
}

Tensor local_attention(const Tensor& q0, const Tensor& k0, const Tensor& v0, const Tensor& mask0,
                       const LocalAttentionOptions& o) {
  const char* op = "local_attention";
  check_inputs(q0, k0, v0, mask0, o, op);
  if (!o.fused) return local_attention_reference(q0, k0, v0, mask0, o);
  const Device dev = q0.device();
  DType dt = q0.dtype();
  if (dev.is_cpu()) {
    if (dt != DType::f64) dt = DType::f32;  // f16/bf16 computed in f32
  } else {
    COLT5_CHECK(dt != DType::f64, op, ": f64 is supported on the CPU only (use fused = false on ", dev.str(), ")");
  }
  Tensor q = kernel_layout(q0, dt), k = kernel_layout(k0, dt), v = kernel_layout(v0, dt);
  Tensor mask;
  if (mask0.defined()) mask = mask0.stride(1) == 1 && mask0.stride(0) >= 0 ? mask0 : mask0.contiguous();

  kernels::LocalAttentionParams p = params_for(q, o, dt);
  p.mask = mask.defined() ? static_cast<const uint8_t*>(mask.data_ptr()) : nullptr;
  p.mask_stride_b = mask.defined() ? mask.stride(0) : 0;
  const DType lse_dt = dt == DType::f64 ? DType::f64 : DType::f32;
  Tensor out = make_tensor(q.shape(), dt, dev);
  Tensor lse = make_tensor({p.B, p.H, p.N}, lse_dt, dev);
  p.q = q.data_ptr(), p.k = k.data_ptr(), p.v = v.data_ptr();
  p.q_stride = strides_of(q), p.k_stride = strides_of(k), p.v_stride = strides_of(v);
  p.out = out.data_ptr(), p.out_stride = strides_of(out), p.lse = lse.data_ptr();
  if (p.B * p.H * p.N > 0) {
    COLT5_ON_DEVICE(op, dev, kernels::cpu::local_attention_forward(p), {
      cuda::DeviceGuard guard(dev.index);
      kernels::cuda::local_attention_forward(p, cuda::current_stream(dev.index));
    });
  }

  if (needs_grad({&q0, &k0, &v0})) {
    Tensor qs = q.detach(), ks = k.detach(), vs = v.detach(), os = out.detach();
    record(out, op, {q, k, v}, [p, qs, ks, vs, mask, os, lse, dt, dev](const Tensor& g0) {
      Tensor g = g0.to(dt).contiguous();
      Tensor dq = make_tensor(qs.shape(), dt, dev), dk = make_tensor(qs.shape(), dt, dev),
             dv = make_tensor(qs.shape(), dt, dev);
      kernels::LocalAttentionParams pb = p;
      pb.q = qs.data_ptr(), pb.k = ks.data_ptr(), pb.v = vs.data_ptr();
      pb.out = os.data_ptr(), pb.lse = lse.data_ptr();
      pb.dout = g.data_ptr(), pb.dout_stride = strides_of(g);
      pb.dq = dq.data_ptr(), pb.dq_stride = strides_of(dq);
      pb.dk = dk.data_ptr(), pb.dk_stride = strides_of(dk);
      pb.dv = dv.data_ptr(), pb.dv_stride = strides_of(dv);
      if (pb.B * pb.H * pb.N > 0) {
        COLT5_ON_DEVICE("local_attention backward", dev, kernels::cpu::local_attention_backward(pb), {
          cuda::DeviceGuard guard(dev.index);
          const size_t bytes = kernels::cuda::local_attention_backward_workspace_bytes(pb);
          Tensor ws = make_tensor({static_cast<int64_t>(bytes) + 1}, DType::b8, dev);
          kernels::cuda::local_attention_backward(pb, ws.data_ptr(), bytes, cuda::current_stream(dev.index));
        });
      }
      return std::vector<Tensor>{dq, dk, dv};
    }, {q, k, v, out});
  }
  if (q0.dtype() != dt) return out.to(q0.dtype());
  return out;
}

}  // namespace colt5
