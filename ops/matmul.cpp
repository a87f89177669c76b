#include "ops/matmul.h"

#include <algorithm>

#include "engine/autograd.h"
#include "engine/backend.h"
#include "engine/blas.h"
#include "engine/dispatch.h"
#include "engine/parallel.h"
#include "engine/strided.h"
#include "ops/elementwise.h"
#include "ops/reduce.h"
#ifdef COLT5_WITH_CUDA
#include "kernels/cuda/gemm.h"
#endif

namespace colt5 {
namespace {

// How gemm reads a (rows, cols) matrix with strides (sr, sc) in place: row-major
// (trans = false) or column-major (trans = true, i.e. the stored matrix is the
// transpose), with leading dim ld. False when neither works (then: copy).
struct MatLayout {
  bool trans = false;
  int64_t ld = 1;
};

bool gemm_layout(int64_t rows, int64_t cols, int64_t sr, int64_t sc, MatLayout& l) {
  if ((sc == 1 || cols == 1) && (rows == 1 || sr >= std::max<int64_t>(cols, 1))) {
    l.trans = false;
    l.ld = rows == 1 ? std::max<int64_t>(cols, 1) : sr;
    return true;
  }
  if ((sr == 1 || rows == 1) && (cols == 1 || sc >= std::max<int64_t>(rows, 1))) {
    l.trans = true;
    l.ld = cols == 1 ? std::max<int64_t>(rows, 1) : sc;
    return true;
  }
  return false;
}

bool gemm_layout(const Tensor& m, MatLayout& l) {
  int n = m.dim();
  return gemm_layout(m.size(n - 2), m.size(n - 1), m.stride(n - 2), m.stride(n - 1), l);
}

// Strides of t's batch dims (all but the last two), right-aligned to `batch`, 0 where broadcast.
Shape batch_strides(const Tensor& t, const Shape& batch) {
  Shape st(batch.size(), 0);
  size_t nb = t.shape().size() - 2, off = batch.size() - nb;
  for (size_t i = 0; i < nb; ++i)
    if (t.shape()[i] != 1) st[off + i] = t.strides()[i];
  return st;
}

// Whether the dims [0, n - 1) of t merge into one (then t views as (rows, last) without a copy).
bool rows_merge(const Tensor& t) {
  int64_t prev_stride = -1, prev_size = 1;
  bool first = true;
  for (int i = t.dim() - 2; i >= 0; --i) {
    if (t.size(i) == 1) continue;
    if (!first && t.stride(i) != prev_stride * prev_size) return false;
    first = false;
    prev_stride = t.stride(i);
    prev_size = t.size(i);
  }
  return true;
}

struct GemmPlan {
  int64_t M = 0, N = 0, K = 0;
  MatLayout la, lb;
  int64_t ldc = 1;
  Geometry<3> g;  // over the batch: operand 0 = C, 1 = A, 2 = B
};

template <class T>
void run_cpu(const GemmPlan& p, const T* A, const T* B, T* C, T beta) {
  const Geometry<3>& g = p.g;
  auto one = [&](int64_t t) {
    int64_t off[3] = {0, 0, 0};
    for (int d = g.ndim - 1; d >= 0; --d) {
      int64_t i = t % g.shape[d];
      t /= g.shape[d];
      for (int k = 0; k < 3; ++k) off[k] += i * g.strides[k][d];
    }
    gemm<T>(p.la.trans, p.lb.trans, p.M, p.N, p.K, T(1), A + off[1], p.la.ld, B + off[2], p.lb.ld, beta, C + off[0],
            p.ldc);
  };
  const double work = static_cast<double>(p.M) * p.N * p.K;
  constexpr double kSmall = 64.0 * 64.0 * 64.0;  // below this BLAS runs one thread per product
  if (g.numel == 1) {
    one(0);
  } else if (work <= kSmall) {  // many small products: one thread per group of them
    int64_t grain = std::max<int64_t>(1, static_cast<int64_t>(kSmall / std::max(work, 1.0)));
    parallel_for(0, g.numel, grain, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) one(t);
    });
  } else {  // large products: BLAS (or the fallback) threads each one
    for (int64_t t = 0; t < g.numel; ++t) one(t);
  }
}

#ifdef COLT5_WITH_CUDA
template <class T>
void run_cuda(const GemmPlan& p, const T* A, const T* B, T* C, T beta, int device) {
  const Geometry<3>& g = p.g;
  // Strided-batched over the innermost batch dim, a loop over the others.
  int64_t inner = g.ndim > 0 ? g.shape[g.ndim - 1] : 1;
  int64_t sc = g.ndim > 0 ? g.strides[0][g.ndim - 1] : 0, sa = g.ndim > 0 ? g.strides[1][g.ndim - 1] : 0,
          sb = g.ndim > 0 ? g.strides[2][g.ndim - 1] : 0;
  int64_t outer = inner > 0 ? g.numel / inner : 0;
  for (int64_t t = 0; t < outer; ++t) {
    int64_t off[3] = {0, 0, 0}, r = t;
    for (int d = g.ndim - 2; d >= 0; --d) {
      int64_t i = r % g.shape[d];
      r /= g.shape[d];
      for (int k = 0; k < 3; ++k) off[k] += i * g.strides[k][d];
    }
    if (inner == 1) {
      kernels::cuda::gemm(p.la.trans, p.lb.trans, p.M, p.N, p.K, T(1), A + off[1], p.la.ld, B + off[2], p.lb.ld,
                          beta, C + off[0], p.ldc, device);
    } else {
      kernels::cuda::gemm_strided_batched(p.la.trans, p.lb.trans, p.M, p.N, p.K, T(1), A + off[1], p.la.ld, sa,
                                          B + off[2], p.lb.ld, sb, beta, C + off[0], p.ldc, sc, inner, device);
    }
  }
}
#endif

// out (batch..., M, N), contiguous, = a (..., M, K) . b (..., K, N) + beta * out.
// a and b have >= 2 dims, the same dtype and device; batch = broadcast of their batch dims.
void matmul_into(Tensor& out, Tensor a, Tensor b, double beta) {
  GemmPlan p;
  p.M = a.size(-2);
  p.K = a.size(-1);
  p.N = b.size(-1);
  if (out.numel() == 0) return;
  if (p.K == 0) {
    if (beta == 0) out.zero_();
    else if (beta != 1) out.copy_(out.detach() * beta);
    return;
  }
  if (!gemm_layout(a, p.la)) {
    a = a.contiguous();
    gemm_layout(a, p.la);
  }
  if (!gemm_layout(b, p.lb)) {
    b = b.contiguous();
    gemm_layout(b, p.lb);
  }
  p.ldc = std::max<int64_t>(p.N, 1);
  Shape batch(out.shape().begin(), out.shape().end() - 2);
  Shape cst(out.strides().begin(), out.strides().end() - 2);
  p.g = make_geometry<3>(batch, {cst, batch_strides(a, batch), batch_strides(b, batch)});
  dispatch_float(out.dtype(), "matmul", [&](auto tag) {
    using T = decltype(tag);
    const T* A = static_cast<const T*>(a.data_ptr());
    const T* B = static_cast<const T*>(b.data_ptr());
    T* C = static_cast<T*>(out.data_ptr());
    COLT5_ON_DEVICE("matmul", out.device(), run_cpu<T>(p, A, B, C, static_cast<T>(beta)),
                    run_cuda<T>(p, A, B, C, static_cast<T>(beta), out.device().index));
  });
  bump_version(out);
}

void check_operand(const char* op, const Tensor& t, const char* which) {
  COLT5_CHECK(t.defined(), op, ": ", which, " is an undefined tensor");
  COLT5_CHECK(t.dtype() == DType::f32 || t.dtype() == DType::f64, op, ": expected f32 or f64 tensors, got ",
              dtype_name(t.dtype()), " for the ", which, " (shape ", shape_str(t.shape()), ")");
}

void check_pair(const char* op, const Tensor& a, const Tensor& b, const char* na, const char* nb) {
  check_operand(op, a, na);
  check_operand(op, b, nb);
  COLT5_CHECK(a.dtype() == b.dtype(), op, ": dtypes differ: ", dtype_name(a.dtype()), " ", shape_str(a.shape()),
              " and ", dtype_name(b.dtype()), " ", shape_str(b.shape()));
  check_same_device(op, {&a, &b});
}

// The differentiable core: a, b >= 2-D, checked.
Tensor matmul_nd(const Tensor& a, const Tensor& b, const Shape& batch) {
  Shape shape = batch;
  shape.push_back(a.size(-2));
  shape.push_back(b.size(-1));
  Tensor out = make_tensor(shape, a.dtype(), a.device());
  matmul_into(out, a.detach(), b.detach(), 0.0);
  if (needs_grad({&a, &b})) {
    bool ga = a.requires_grad(), gb = b.requires_grad();
    Tensor as = a.detach(), bs = b.detach();
    record(out, "matmul", {a, b}, [as, bs, ga, gb](const Tensor& g) {
      return std::vector<Tensor>{ga ? matmul(g, bs.transpose(-1, -2)) : Tensor(),
                                 gb ? matmul(as.transpose(-1, -2), g) : Tensor()};
    }, {a, b});
  }
  return out;
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b) {
  check_pair("matmul", a, b, "first operand", "second operand");
  COLT5_CHECK(a.dim() >= 1 && b.dim() >= 1, "matmul: both operands need at least 1 dim, got shapes ",
              shape_str(a.shape()), " and ", shape_str(b.shape()));
  Tensor a2 = a.dim() == 1 ? a.unsqueeze(0) : a;   // (K) -> (1, K)
  Tensor b2 = b.dim() == 1 ? b.unsqueeze(-1) : b;  // (K) -> (K, 1)
  const int64_t K = a2.size(-1);
  COLT5_CHECK(K == b2.size(-2), "matmul: shapes ", shape_str(a.shape()), " and ", shape_str(b.shape()),
              " cannot be multiplied (", K, " != ", b2.size(-2), ")");
  Shape ba(a2.shape().begin(), a2.shape().end() - 2), bb(b2.shape().begin(), b2.shape().end() - 2);
  Shape batch;
  {
    size_t n = std::max(ba.size(), bb.size());
    batch.resize(n);
    for (size_t i = 0; i < n; ++i) {
      int64_t x = i < n - ba.size() ? 1 : ba[i - (n - ba.size())];
      int64_t y = i < n - bb.size() ? 1 : bb[i - (n - bb.size())];
      COLT5_CHECK(x == y || x == 1 || y == 1, "matmul: batch dims of shapes ", shape_str(a.shape()), " and ",
                  shape_str(b.shape()), " cannot be broadcast together");
      batch[i] = x == 1 ? y : x;
    }
  }
  Tensor out;
  if (b2.dim() == 2 && a2.dim() > 2 && a2.numel() > 0 && rows_merge(a2)) {
    // (batch..., M, K) . (K, N) as one (batch * M, K) . (K, N) product: one gemm, and a
    // (K, N) gradient for b without a batched intermediate.
    Shape shape(a2.shape().begin(), a2.shape().end() - 1);
    shape.push_back(b2.size(-1));
    out = matmul_nd(a2.reshape({a2.numel() / K, K}), b2, {}).view(shape);
  } else {
    out = matmul_nd(a2, b2, batch);
  }
  if (a.dim() == 1) out = out.squeeze(-2);
  if (b.dim() == 1) out = out.squeeze(-1);
  return out;
}

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias) {
  check_pair("linear", x, w, "input", "weight");
  COLT5_CHECK(w.dim() == 2, "linear: weight must be 2-D (out_features, in_features), got shape ",
              shape_str(w.shape()), " (input shape ", shape_str(x.shape()), ")");
  COLT5_CHECK(x.dim() >= 1, "linear: input needs at least 1 dim, got shape ", shape_str(x.shape()));
  const int64_t in = w.size(1), out_f = w.size(0);
  COLT5_CHECK(x.size(-1) == in, "linear: input shape ", shape_str(x.shape()), " and weight shape ",
              shape_str(w.shape()), " do not match (last input dim ", x.size(-1), " != in_features ", in, ")");
  if (bias.defined()) {
    check_pair("linear", x, bias, "input", "bias");
    COLT5_CHECK(bias.dim() == 1 && bias.size(0) == out_f, "linear: bias shape ", shape_str(bias.shape()),
                " does not match weight shape ", shape_str(w.shape()), " (expected [", out_f, "])");
  }
  Shape out_shape(x.shape().begin(), x.shape().end() - 1);
  out_shape.push_back(out_f);
  int64_t rows = 1;
  for (int i = 0; i + 1 < x.dim(); ++i) rows *= x.size(i);
  // x as (rows, in): a view when its leading dims merge, else a contiguous copy.
  Tensor xd = x.detach();
  Tensor x2 = x.dim() == 2 ? xd : (rows_merge(xd) ? xd : xd.contiguous()).view({rows, in});
  Tensor out2 = make_tensor({rows, out_f}, x.dtype(), x.device());
  if (bias.defined()) out2.copy_(bias.detach());
  matmul_into(out2, x2, w.detach().t(), bias.defined() ? 1.0 : 0.0);
  Tensor out = out2.view(out_shape);
  if (needs_grad({&x, &w, &bias})) {
    bool gx = x.requires_grad(), gw = w.requires_grad(), gb = bias.defined() && bias.requires_grad();
    Tensor ws = w.detach();
    Shape xshape = x.shape();
    record(out, "linear", {x, w, bias}, [x2, ws, xshape, rows, out_f, gx, gw, gb](const Tensor& g) {
      Tensor g2 = g.reshape({rows, out_f});
      return std::vector<Tensor>{gx ? matmul(g2, ws).reshape(xshape) : Tensor(),
                                 gw ? matmul(g2.t(), x2) : Tensor(), gb ? sum(g2, 0) : Tensor()};
    }, {x, w});
  }
  return out;
}

}  // namespace colt5
