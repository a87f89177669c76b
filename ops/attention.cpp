#include "ops/attention.h"

#include <algorithm>
#include <atomic>
#include <cfloat>
#include <cstdint>
#include <cstring>
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
#ifdef COLT5_WITH_CUDNN
#include "kernels/cuda/cudnn_attention.h"
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

// Operands as the kernels read them and the forward parameters (out and lse
// not yet set).
struct Prepared {
  Tensor q, k, v, nk, nv, mask;
  FlashAttentionParams p;
};
Prepared prepare(const Tensor& q0, const Tensor& k0, const Tensor& v0, const Tensor& mask0, const AttentionOptions& o,
                 const Dims& s) {
  Prepared r;
  r.q = as_readable(q0), r.k = as_readable(k0), r.v = as_readable(v0);
  if (o.null_k.defined()) r.nk = o.null_k.contiguous(), r.nv = o.null_v.contiguous();
  int64_t msb = 0, msh = 0;
  if (mask0.defined()) {
    r.mask = (mask0.size(-1) > 1 && mask0.stride(-1) != 1) ? mask0.contiguous() : mask0;
    msb = r.mask.size(0) == 1 ? 0 : r.mask.stride(0);
    msh = (r.mask.dim() == 3 && r.mask.size(1) != 1) ? r.mask.stride(1) : 0;
  }
  FlashAttentionParams& p = r.p;
  p.dtype = q0.dtype();
  p.B = s.B, p.H = s.H, p.Nq = s.Nq, p.Nk = s.Nk, p.d = s.d;
  p.scale = scale_of(o, s.d);
  p.causal = o.causal;
  p.allow_tf32 = o.allow_tf32;
  p.q = r.q.data_ptr(), p.q_stride = strides_of(r.q);
  p.k = r.k.data_ptr(), p.k_stride = strides_of(r.k);
  p.v = r.v.data_ptr(), p.v_stride = strides_of(r.v);
  if (r.mask.defined()) {
    p.mask = static_cast<const uint8_t*>(r.mask.data_ptr());
    p.mask_stride_b = msb, p.mask_stride_h = msh;
  }
  if (r.nk.defined()) p.null_k = r.nk.data_ptr(), p.null_v = r.nv.data_ptr();
  return r;
}

// The strides empty_like_layout(t) will have (for planning before allocating).
AttnStrides layout_strides(const Tensor& t) {
  const int n = t.dim();
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end() - 1, [&](int a, int b) { return t.stride(a) > t.stride(b); });
  std::vector<int64_t> st(n);
  int64_t acc = 1;
  for (int i = n - 1; i >= 0; --i) {
    st[order[i]] = acc;
    acc *= t.size(order[i]);
  }
  return {st[0], st[1], st[2]};
}

#ifdef COLT5_WITH_CUDNN
bool same_strides(const AttnStrides& a, const AttnStrides& b) { return a.b == b.b && a.h == b.h && a.n == b.n; }
#endif

std::atomic<AttentionBackend> g_backend{AttentionBackend::Auto};

AttentionBackend resolve(AttentionBackend b) { return b == AttentionBackend::Default ? g_backend.load() : b; }

// ---- the cuDNN route: one selector for the op and attention_backend_for.
struct CudnnRoute {
  bool use = false;
  std::string why;      // when !use: the reason
  bool padded = false;  // per-batch key lengths in `lens`
  Tensor lens;          // device: int32 q_len (B) at 0, kv_len (B) at kv_offset int32s (i64 storage)
  int64_t kv_offset = 0;
  size_t fwd_ws = 0;
#ifdef COLT5_WITH_CUDNN
  kernels::cuda::CudnnSeqLens seq() const {
    const int32_t* base = static_cast<const int32_t*>(lens.data_ptr());
    return {base, base + kv_offset};
  }
#endif
};

#ifdef COLT5_WITH_CUDNN
// Per-batch key lengths when `mask` keeps a prefix 0..len_b-1 of the keys,
// the same for every head, len_b >= 1; empty (and *why) otherwise.
std::vector<int32_t> prefix_lengths(const Tensor& mask, const Dims& s, std::string* why) {
  const Tensor m = mask.to(Device::cpu()).contiguous();
  const std::vector<double> v = m.to_vector<double>();
  const int64_t mb = m.size(0), mh = m.dim() == 3 ? m.size(1) : 1, nk = s.Nk;
  std::vector<int32_t> lens(s.B);
  for (int64_t b = 0; b < s.B; ++b) {
    int64_t len = -1;
    for (int64_t h = 0; h < mh; ++h) {
      const double* row = v.data() + ((mb == 1 ? 0 : b) * mh + h) * nk;
      int64_t l = 0;
      while (l < nk && row[l] != 0) ++l;
      for (int64_t j = l; j < nk; ++j)
        if (row[j] != 0) {
          *why = "the key mask is not a prefix of kept keys (batch " + std::to_string(b) + ")";
          return {};
        }
      if (len >= 0 && l != len) {
        *why = "the key mask differs between heads (batch " + std::to_string(b) + ")";
        return {};
      }
      len = l;
    }
    if (len == 0) {
      *why = "the key mask hides every key of batch " + std::to_string(b);
      return {};
    }
    lens[b] = int32_t(len);
  }
  return lens;
}
#endif

// p: the forward parameters of our kernels (pointers may be null while
// planning); grad: whether the backward will run. Decides Ours vs cuDNN.
CudnnRoute route_cudnn(const FlashAttentionParams& p, const Tensor& mask, const Dims& s, const AttentionOptions& o,
                       const Tensor& q, const Tensor& k, const Tensor& v, Device dev, bool grad) {
  CudnnRoute r;
  auto ours = [&r](std::string why) {
    r.why = std::move(why);
    return r;
  };
  const AttentionBackend b = resolve(o.backend);
  if (b == AttentionBackend::Ours) return ours("backend Ours");
#ifndef COLT5_WITH_CUDNN
  (void)p, (void)mask, (void)s, (void)q, (void)k, (void)v, (void)dev, (void)grad;
  r.why = "built without cuDNN (COLT5_CUDNN)";
  return r;
#else
  if (!dev.is_cuda()) return ours("not a CUDA tensor");
  if (p.dtype != DType::bf16 && p.dtype != DType::f16) return ours(std::string("dtype ") + dtype_name(p.dtype));
  if (b == AttentionBackend::Auto &&
      double(s.B) * double(s.H) * double(s.Nq) * double(s.Nk) < double(kAttentionCudnnMinPairs))
    return ours("Auto: B*H*Nq*Nk below kAttentionCudnnMinPairs");
  if (b == AttentionBackend::Auto && mask.defined())
    return ours("Auto: a key mask (checking it syncs with the device; backend Cudnn checks it)");
  FlashAttentionParams pc = p;
  pc.mask = nullptr, pc.mask_stride_b = pc.mask_stride_h = 0;
  if (std::string bad = kernels::cuda::cudnn_attention_check(pc, false); !bad.empty()) return ours(bad);
  std::vector<int32_t> lens;
  if (mask.defined()) {
    lens = prefix_lengths(mask, s, &r.why);
    if (lens.empty()) return ours(r.why);
    const bool all = std::all_of(lens.begin(), lens.end(), [&](int32_t l) { return l == s.Nk; });
    if (!all && o.causal) return ours("causal with a key mask that hides keys");
    r.padded = !all;
  }
  cuda::DeviceGuard guard(dev.index);
  if (!kernels::cuda::cudnn_attention_forward_plan(pc, r.padded, dev.index, &r.fwd_ws, &r.why)) return ours(r.why);
  if (grad) {
    FlashAttentionParams pb = pc;
    pb.dout_stride = pc.out_stride;  // the backward hands cuDNN dout in out's layout
    pb.dq_stride = layout_strides(q), pb.dk_stride = layout_strides(k), pb.dv_stride = layout_strides(v);
    size_t ws = 0;
    if (!kernels::cuda::cudnn_attention_backward_plan(pb, r.padded, dev.index, &ws, &r.why)) return ours(r.why);
  }
  if (r.padded) {  // int32 q_len then kv_len, each starting 16-byte aligned, in i64 storage
    const int64_t seg = (s.B + 3) / 4 * 4;
    std::vector<int32_t> host(2 * seg, 0);
    for (int64_t i = 0; i < s.B; ++i) host[i] = int32_t(s.Nq), host[seg + i] = lens[i];
    std::vector<int64_t> packed(seg);
    std::memcpy(packed.data(), host.data(), host.size() * sizeof(int32_t));
    r.lens = from_vector_i64(packed, {seg}, {.dtype = DType::i64, .device = dev});
    r.kv_offset = seg;
  }
  r.use = true;
  return r;
#endif
}

// The fused op on cuDNN (route.use): forward now, backward recorded.
Tensor attention_cudnn(const FlashAttentionParams& p0, CudnnRoute route, const Tensor& q, const Tensor& k,
                       const Tensor& v, Tensor& out, const Tensor& lse, bool grad) {
#ifndef COLT5_WITH_CUDNN
  (void)p0, (void)route, (void)q, (void)k, (void)v, (void)lse, (void)grad;
  COLT5_FAIL("attention: built without cuDNN");
  return out;
#else
  const Device dev = q.device();
  const DType dt = p0.dtype;
  FlashAttentionParams p = p0;
  p.mask = nullptr, p.mask_stride_b = p.mask_stride_h = 0;
  {
    cuda::DeviceGuard guard(dev.index);
    cuda::Workspace ws(route.fwd_ws, dev.index);
    const kernels::cuda::CudnnSeqLens seq = route.padded ? route.seq() : kernels::cuda::CudnnSeqLens{};
    kernels::cuda::cudnn_attention_forward(p, route.padded ? &seq : nullptr, ws.get(), route.fwd_ws, dev.index,
                                           cuda::current_stream(dev.index));
  }
  if (grad) {
    Tensor qd = q.detach(), kd = k.detach(), vd = v.detach(), od = out.detach();
    record(out, "attention", {q, k, v},
           [p, qd, kd, vd, od, lse, dt, dev, route](const Tensor& g0) {
             Tensor g = g0.dtype() == dt ? g0 : g0.to(dt);
             // cuDNN's backward plan was built for dout in out's layout, 16-byte aligned.
             if (!same_strides(strides_of(g), strides_of(od)) ||
                 (reinterpret_cast<uintptr_t>(g.data_ptr()) & 15) != 0) {
               Tensor g2 = empty_like_layout(od, dt);
               g2.copy_(g);
               g = g2;
             }
             Tensor dq = empty_like_layout(qd, dt), dk = empty_like_layout(kd, dt), dv = empty_like_layout(vd, dt);
             cuda::DeviceGuard guard(dev.index);
             if (route.padded) {  // keys past a batch's length: cuDNN need not write their rows
               cuda::memset_zero(dk.data_ptr(), size_t(dk.numel()) * dtype_size(dt), dev.index);
               cuda::memset_zero(dv.data_ptr(), size_t(dv.numel()) * dtype_size(dt), dev.index);
             }
             FlashAttentionParams bp = p;
             bp.dout = g.data_ptr(), bp.dout_stride = strides_of(g);
             bp.dq = dq.data_ptr(), bp.dq_stride = strides_of(dq);
             bp.dk = dk.data_ptr(), bp.dk_stride = strides_of(dk);
             bp.dv = dv.data_ptr(), bp.dv_stride = strides_of(dv);
             size_t wsb = 0;
             std::string why;
             COLT5_CHECK(kernels::cuda::cudnn_attention_backward_plan(bp, route.padded, dev.index, &wsb, &why),
                         "attention backward (cuDNN): no plan: ", why);
             cuda::Workspace ws(wsb, dev.index);
             const kernels::cuda::CudnnSeqLens seq = route.padded ? route.seq() : kernels::cuda::CudnnSeqLens{};
             kernels::cuda::cudnn_attention_backward(bp, route.padded ? &seq : nullptr, ws.get(), wsb, dev.index,
                                                     cuda::current_stream(dev.index));
             return std::vector<Tensor>{dq, dk, dv};
           },
           {q, k, v, out});
  }
  return out;
#endif
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

  Prepared pr = prepare(q0, k0, v0, mask0, o, s);
  const Tensor &q = pr.q, &k = pr.k, &v = pr.v, &nk = pr.nk, &nv = pr.nv, &mask = pr.mask;
  const bool has_null = nk.defined();
  FlashAttentionParams p = pr.p;

  Tensor out = empty_like_layout(q, dt);
  Tensor lse = make_tensor({s.B, s.H, s.Nq}, dt == DType::f64 ? DType::f64 : DType::f32, dev);
  p.out = out.data_ptr(), p.out_stride = strides_of(out);
  p.lse = lse.data_ptr();
  const bool grad = needs_grad({&q, &k, &v, &nk, &nv});
  if (dev.is_cuda() && (dt == DType::bf16 || dt == DType::f16)) {
    CudnnRoute route = route_cudnn(p, mask, s, o, q, k, v, dev, grad);
    if (route.use) return attention_cudnn(p, std::move(route), q, k, v, out, lse, grad);
  }
  COLT5_ON_DEVICE(op, dev, kernels::cpu::flash_attention_forward(p), {
    cuda::DeviceGuard guard(dev.index);
    kernels::cuda::flash_attention_forward(p, nullptr, 0, cuda::current_stream(dev.index));
  });

  if (grad) {
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

void set_attention_backend(AttentionBackend backend) {
  COLT5_CHECK(backend != AttentionBackend::Default,
              "set_attention_backend: pass Auto, Ours or Cudnn (Default means this setting)");
  g_backend.store(backend);
}

AttentionBackend attention_backend() { return g_backend.load(); }

const char* attention_backend_name(AttentionBackend backend) {
  switch (backend) {
    case AttentionBackend::Default: return "default";
    case AttentionBackend::Auto: return "auto";
    case AttentionBackend::Ours: return "ours";
    case AttentionBackend::Cudnn: return "cudnn";
  }
  return "?";
}

bool attention_cudnn_compiled() {
#ifdef COLT5_WITH_CUDNN
  return true;
#else
  return false;
#endif
}

AttentionBackend attention_backend_for(const Tensor& q0, const Tensor& k0, const Tensor& v0, const Tensor& mask0,
                                       const AttentionOptions& o, std::string* why) {
  const Dims s = check_attention("attention", q0, k0, v0, mask0, o);
  auto ours = [&](const std::string& w) {
    if (why) *why = w;
    return AttentionBackend::Ours;
  };
  if (!o.fused) return ours("fused = false (the reference)");
  const Device dev = q0.device();
  const DType dt = q0.dtype();
  if (!dev.is_cuda()) return ours("not a CUDA tensor");
  if (dt != DType::bf16 && dt != DType::f16) return ours(std::string("dtype ") + dtype_name(dt));
  if (s.d == 0) return ours("d = 0");
  Prepared pr = prepare(q0, k0, v0, mask0, o, s);
  pr.p.out_stride = layout_strides(pr.q);  // what the op allocates; out and lse pointers stay null (aligned)
  const bool grad = needs_grad({&pr.q, &pr.k, &pr.v, &pr.nk, &pr.nv});
  CudnnRoute r = route_cudnn(pr.p, pr.mask, s, o, pr.q, pr.k, pr.v, dev, grad);
  if (!r.use) return ours(r.why);
  if (why) why->clear();
  return AttentionBackend::Cudnn;
}

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
