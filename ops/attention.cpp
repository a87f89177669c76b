#include "ops/attention.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <numeric>
#include <sstream>

#include "engine/autograd.h"
#include "engine/backend.h"
#include "kernels/cpu/flash_attention.h"
#include "ops/elementwise.h"
#include "ops/matmul.h"
#include "ops/reduce.h"
#include "ops/shape_ops.h"
#include "ops/softmax.h"
#ifdef COLT5_WITH_CUDA
#include "engine/cuda/memory.h"
#include "kernels/cuda/flash_attention.h"
#endif

namespace colt5 {
namespace {

using kernels::AttnStrides;
using kernels::FlashAttentionParams;

std::string describe(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask, const AttentionOptions& o) {
  std::ostringstream os;
  auto one = [&](const char* name, const Tensor& t) {
    os << " " << name << " " << (t.defined() ? shape_str(t.shape()) + " " + dtype_name(t.dtype()) : "undefined");
  };
  os << " (";
  one("q", q);
  one("k", k);
  one("v", v);
  if (mask.defined()) one("key_mask", mask);
  if (o.null_k.defined() || o.null_v.defined()) {
    one("null_k", o.null_k);
    one("null_v", o.null_v);
  }
  os << " )";
  return os.str();
}

struct Dims {
  int64_t B, H, Nq, Nk, d;
};

// Validates shapes, dtypes and devices; throws naming `op` and every shape.
Dims check_attention(const char* op, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask,
                     const AttentionOptions& o) {
  auto fail_if = [&](bool bad, const std::string& what) {
    COLT5_CHECK(!bad, op, ": ", what, describe(q, k, v, mask, o));
  };
  fail_if(!q.defined() || !k.defined() || !v.defined(), "q, k and v must be defined");
  fail_if(q.dim() != 4 || k.dim() != 4 || v.dim() != 4, "q, k, v must be 4-D: q (B, H, Nq, d), k and v (B, H, Nk, d)");
  Dims s{q.size(0), q.size(1), q.size(2), k.size(2), q.size(3)};
  fail_if(k.size(0) != s.B || k.size(1) != s.H || k.size(3) != s.d,
          "k must be (B, H, Nk, d) with q's B, H and d");
  fail_if(v.shape() != k.shape(), "v must have k's shape");
  fail_if(!is_floating(q.dtype()), "q must be floating");
  fail_if(k.dtype() != q.dtype() || v.dtype() != q.dtype(), "q, k and v must share one dtype");
  check_same_device(op, {&q, &k, &v, &mask, &o.null_k, &o.null_v});
  if (mask.defined()) {
    fail_if(mask.dtype() != DType::b8, "key_mask must be bool");
    fail_if(mask.dim() != 2 && mask.dim() != 3, "key_mask must be (B, Nk) or (B, H, Nk)");
    fail_if(mask.size(-1) != s.Nk, "key_mask's last dim must be Nk");
    fail_if(mask.size(0) != s.B && mask.size(0) != 1, "key_mask's first dim must be B (or 1)");
    fail_if(mask.dim() == 3 && mask.size(1) != s.H && mask.size(1) != 1, "key_mask (B, H, Nk) needs H heads (or 1)");
  }
  fail_if(o.null_k.defined() != o.null_v.defined(), "null_k and null_v must be given together");
  if (o.null_k.defined()) {
    const Shape hd{s.H, s.d};
    fail_if(o.null_k.shape() != hd || o.null_v.shape() != hd, "null_k and null_v must be (H, d)");
    fail_if(o.null_k.dtype() != q.dtype() || o.null_v.dtype() != q.dtype(), "null_k and null_v must have q's dtype");
  }
  fail_if(!std::isfinite(o.scale), "scale must be finite");
  return s;
}

double scale_of(const AttentionOptions& o, int64_t d) { return o.scale != 0 ? o.scale : 1.0 / std::sqrt(double(d)); }

// The flash kernels read a (B, H, N, d) operand in place when its last dim is
// contiguous and its rows do not overlap.
bool readable(const Tensor& t) {
  const int64_t d = t.size(3);
  if (d > 1 && t.stride(3) != 1) return false;
  if (t.size(2) > 1 && t.stride(2) < d) return false;
  for (int i = 0; i < 4; ++i)
    if (t.stride(i) < 0) return false;
  return true;
}
Tensor as_readable(const Tensor& t) { return readable(t) ? t : t.contiguous(); }

AttnStrides strides_of(const Tensor& t) { return {t.stride(0), t.stride(1), t.stride(2)}; }

// A fresh (uninitialised) tensor of t's shape whose memory order follows t's
// strides (the last dim innermost): gradients and outputs keep their inputs'
// layouts, so the views around the op stay free.
Tensor empty_like_layout(const Tensor& t, DType dt) {
  const int n = t.dim();
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end() - 1, [&](int a, int b) { return t.stride(a) > t.stride(b); });
  Shape shape(n);
  for (int i = 0; i < n; ++i) shape[i] = t.size(order[i]);
  std::vector<int> inv(n);
  for (int i = 0; i < n; ++i) inv[order[i]] = i;
  return make_tensor(shape, dt, t.device()).permute(inv);
}

Tensor attention_fused(const Tensor& q0, const Tensor& k0, const Tensor& v0, const Tensor& mask0,
                       const AttentionOptions& o) {
  const char* op = "attention";
  const Dims s = check_attention(op, q0, k0, v0, mask0, o);
  const DType dt = q0.dtype();
  const Device dev = q0.device();
  if (dev.is_cpu() && (dt == DType::bf16 || dt == DType::f16)) {
    // No half CPU kernel: compute in f32 (differentiable conversions).
    AttentionOptions o32 = o;
    if (o.null_k.defined()) {
      o32.null_k = o.null_k.to(DType::f32);
      o32.null_v = o.null_v.to(DType::f32);
    }
    return attention_fused(q0.to(DType::f32), k0.to(DType::f32), v0.to(DType::f32), mask0, o32).to(dt);
  }
  COLT5_CHECK(!(dev.is_cuda() && dt == DType::f64), op,
              ": no fused f64 kernel on CUDA (f32, bf16, f16); use AttentionOptions.fused = false",
              describe(q0, k0, v0, mask0, o));
  COLT5_CHECK(dt == DType::f32 || dt == DType::f64 || dev.is_cuda(), op, ": unsupported dtype ", dtype_name(dt),
              describe(q0, k0, v0, mask0, o));
  if (s.d == 0) return zeros(q0.shape(), {.dtype = dt, .device = dev});

  Tensor q = as_readable(q0), k = as_readable(k0), v = as_readable(v0);
  const bool has_null = o.null_k.defined();
  Tensor nk = has_null ? o.null_k.contiguous() : Tensor();
  Tensor nv = has_null ? o.null_v.contiguous() : Tensor();
  Tensor mask;
  int64_t msb = 0, msh = 0;
  if (mask0.defined()) {
    mask = (mask0.size(-1) > 1 && mask0.stride(-1) != 1) ? mask0.contiguous() : mask0;
    msb = mask.size(0) == 1 ? 0 : mask.stride(0);
    msh = (mask.dim() == 3 && mask.size(1) != 1) ? mask.stride(1) : 0;
  }

  FlashAttentionParams p;
  p.dtype = dt;
  p.B = s.B, p.H = s.H, p.Nq = s.Nq, p.Nk = s.Nk, p.d = s.d;
  p.scale = scale_of(o, s.d);
  p.causal = o.causal;
  p.allow_tf32 = o.allow_tf32;
  p.q = q.data_ptr(), p.q_stride = strides_of(q);
  p.k = k.data_ptr(), p.k_stride = strides_of(k);
  p.v = v.data_ptr(), p.v_stride = strides_of(v);
  if (mask.defined()) {
    p.mask = static_cast<const uint8_t*>(mask.data_ptr());
    p.mask_stride_b = msb, p.mask_stride_h = msh;
  }
  if (has_null) p.null_k = nk.data_ptr(), p.null_v = nv.data_ptr();

  Tensor out = empty_like_layout(q, dt);
  Tensor lse = make_tensor({s.B, s.H, s.Nq}, dt == DType::f64 ? DType::f64 : DType::f32, dev);
  p.out = out.data_ptr(), p.out_stride = strides_of(out);
  p.lse = lse.data_ptr();
  COLT5_ON_DEVICE(op, dev, kernels::cpu::flash_attention_forward(p), {
    cuda::DeviceGuard guard(dev.index);
    kernels::cuda::flash_attention_forward(p, nullptr, 0, cuda::current_stream(dev.index));
  });

  if (needs_grad({&q, &k, &v, &nk, &nv})) {
    Tensor qd = q.detach(), kd = k.detach(), vd = v.detach(), od = out.detach();
    Tensor nkd = has_null ? nk.detach() : Tensor(), nvd = has_null ? nv.detach() : Tensor();
    record(out, op, {q, k, v, nk, nv},
           [p, qd, kd, vd, nkd, nvd, od, lse, mask, dt, dev, has_null](const Tensor& g0) {
             Tensor g = g0.dtype() == dt ? g0 : g0.to(dt);
             if (!readable(g)) g = g.contiguous();
             Tensor dq = empty_like_layout(qd, dt), dk = empty_like_layout(kd, dt), dv = empty_like_layout(vd, dt);
             Tensor dnk, dnv;
             FlashAttentionParams bp = p;
             bp.dout = g.data_ptr(), bp.dout_stride = strides_of(g);
             bp.dq = dq.data_ptr(), bp.dq_stride = strides_of(dq);
             bp.dk = dk.data_ptr(), bp.dk_stride = strides_of(dk);
             bp.dv = dv.data_ptr(), bp.dv_stride = strides_of(dv);
             if (has_null) {
               dnk = make_tensor(nkd.shape(), dt, dev);
               dnv = make_tensor(nvd.shape(), dt, dev);
               bp.dnull_k = dnk.data_ptr(), bp.dnull_v = dnv.data_ptr();
             }
             COLT5_ON_DEVICE("attention backward", dev, kernels::cpu::flash_attention_backward(bp), {
               cuda::DeviceGuard guard(dev.index);
               const size_t bytes = kernels::cuda::flash_attention_backward_workspace_bytes(bp);
               cuda::Workspace ws(bytes, dev.index);
               kernels::cuda::flash_attention_backward(bp, ws.get(), bytes, cuda::current_stream(dev.index));
             });
             return std::vector<Tensor>{dq, dk, dv, dnk, dnv};
           },
           {q, k, v, nk, nv, out});
  }
  return out;
}

}  // namespace

Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_mask,
                 const AttentionOptions& opt) {
  if (!opt.fused) return attention_reference(q, k, v, key_mask, opt);
  return attention_fused(q, k, v, key_mask, opt);
}

Tensor attention_reference(const Tensor& q0, const Tensor& k0, const Tensor& v0, const Tensor& mask,
                           const AttentionOptions& o) {
  const char* op = "attention_reference";
  const Dims s = check_attention(op, q0, k0, v0, mask, o);
  const DType dt = q0.dtype();
  if (dt == DType::bf16 || dt == DType::f16) {  // primitive ops compute half types in f32
    AttentionOptions o32 = o;
    if (o.null_k.defined()) {
      o32.null_k = o.null_k.to(DType::f32);
      o32.null_v = o.null_v.to(DType::f32);
    }
    return attention_reference(q0.to(DType::f32), k0.to(DType::f32), v0.to(DType::f32), mask, o32).to(dt);
  }
  const Device dev = q0.device();
  const double big = dt == DType::f64 ? DBL_MAX : FLT_MAX;
  Tensor scores = matmul(q0, k0.transpose(-1, -2)) * scale_of(o, s.d);  // (B, H, Nq, Nk)
  Tensor vis;  // bool, broadcastable to (B, H, Nq, Nk)
  if (mask.defined()) vis = mask.dim() == 2 ? mask.unsqueeze(1).unsqueeze(1) : mask.unsqueeze(2);
  if (o.causal) {
    Tensor kj = arange(0, double(s.Nk), 1, {.dtype = DType::f64, .device = dev}).view({1, s.Nk});
    Tensor qi = arange(0, double(s.Nq), 1, {.dtype = DType::f64, .device = dev}).view({s.Nq, 1});
    Tensor cm = le(kj, qi + double(s.Nk - s.Nq));  // (Nq, Nk)
    vis = vis.defined() ? logical_and(vis, cm) : cm;
  }
  Tensor values = v0;
  if (o.null_k.defined()) {
    Tensor sn = matmul(q0, o.null_k.unsqueeze(-1)) * scale_of(o, s.d);  // (B, H, Nq, 1)
    scores = cat({sn, scores}, -1);
    values = cat({o.null_v.unsqueeze(1).unsqueeze(0).expand({s.B, s.H, 1, s.d}), v0}, 2);
    if (vis.defined()) {
      Tensor full_vis = vis.expand({s.B, s.H, s.Nq, s.Nk});
      Tensor null_vis = full({s.B, s.H, s.Nq, 1}, 1.0, {.dtype = DType::b8, .device = dev});
      vis = cat({null_vis, full_vis}, -1);
    }
  }
  if (vis.defined()) scores = where(vis, scores, -big);
  Tensor out = matmul(softmax(scores, -1), values);
  if (vis.defined() && !o.null_k.defined()) {
    // A row with no visible key has a uniform softmax over -MAX scores: output 0 instead.
    Tensor any = gt(sum(vis.to(dt).expand({s.B, s.H, s.Nq, s.Nk}), -1, true), 0.0);
    out = where(any, out, 0.0);
  }
  return out;
}

}  // namespace colt5
