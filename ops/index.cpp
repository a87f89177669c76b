#include "ops/index.h"

#include "engine/autograd.h"
#include "engine/backend.h"
#include "engine/strided.h"
#include "kernels/cpu/index.h"
#ifdef COLT5_WITH_CUDA
#include "kernels/cuda/index.h"
#endif

namespace colt5 {
namespace {

using kernels::cpu::IndexGeometry;
using kernels::cpu::make_index_geometry;

void check_input(const char* op, const Tensor& x, const char* what) {
  COLT5_CHECK(x.defined(), op, ": ", what, " is an undefined tensor");
  COLT5_CHECK(x.dim() >= 1, op, ": ", what, " needs at least 1 dim, got shape ", shape_str(x.shape()));
}

void check_index_tensor(const char* op, const Tensor& idx) {
  COLT5_CHECK(idx.defined(), op, ": index is an undefined tensor");
  COLT5_CHECK(idx.dtype() == DType::i64, op, ": index must be an i64 tensor, got ", dtype_name(idx.dtype()),
              " (shape ", shape_str(idx.shape()), ")");
}

// Throws unless every value of idx is in [0, size).
void check_range(const char* op, const Tensor& idx, int64_t size, int dim, const Tensor& x) {
  if (idx.numel() == 0) return;
  auto g = make_geometry<1>(idx.shape(), {idx.strides()});
  int64_t bad = 0;
  bool ok = true;
  const int64_t* p = static_cast<const int64_t*>(idx.data_ptr());
  COLT5_ON_DEVICE(op, idx.device(), ok = kernels::cpu::indices_in_range(p, g, size, &bad),
                  ok = kernels::cuda::indices_in_range(p, g, size, &bad, idx.device().index));
  COLT5_CHECK(ok, op, ": index ", bad, " is out of range for dim ", dim, " of size ", size, " (input shape ",
              shape_str(x.shape()), ", index shape ", shape_str(idx.shape()), ")");
}

// out (idx shape) = x gathered along dim at idx. Indices checked by the caller.
Tensor gather_raw(const Tensor& x, int dim, const Tensor& idx, const char* op) {
  Tensor out = make_tensor(idx.shape(), x.dtype(), x.device());
  if (out.numel() == 0) return out;
  IndexGeometry g = make_index_geometry(idx.shape(), dim, out.strides(), idx.strides(), x.strides());
  const int64_t* p = static_cast<const int64_t*>(idx.data_ptr());
  COLT5_ON_DEVICE(op, x.device(), kernels::cpu::gather(x.dtype(), out.data_ptr(), p, x.data_ptr(), g),
                  kernels::cuda::gather(x.dtype(), out.data_ptr(), p, x.data_ptr(), g, x.device().index));
  return out;
}

// Writes (or adds) src at idx along dim into out (a fresh tensor). Indices checked by the caller.
void scatter_into(Tensor& out, int dim, const Tensor& idx, const Tensor& src, bool accumulate, const char* op) {
  if (idx.numel() == 0) return;
  IndexGeometry g = make_index_geometry(idx.shape(), dim, out.strides(), idx.strides(), src.strides());
  const int64_t* p = static_cast<const int64_t*>(idx.data_ptr());
  COLT5_ON_DEVICE(op, out.device(),
                  kernels::cpu::scatter(out.dtype(), out.data_ptr(), p, src.data_ptr(), g, accumulate, op),
                  kernels::cuda::scatter(out.dtype(), out.data_ptr(), p, src.data_ptr(), g, accumulate, op,
                                         out.device().index));
  bump_version(out);
}

// A copy of x with src written (or added) at idx.
Tensor scatter_raw(const Tensor& x, int dim, const Tensor& idx, const Tensor& src, bool accumulate, const char* op) {
  Tensor out = make_tensor(x.shape(), x.dtype(), x.device());
  out.copy_(x.detach());
  scatter_into(out, dim, idx, src, accumulate, op);
  return out;
}

// zeros(shape) with src added at idx: the backward of the gathers.
Tensor scatter_add_zeros(const Shape& shape, int dim, const Tensor& idx, const Tensor& src, const char* op) {
  Tensor out = zeros(shape, {.dtype = src.dtype(), .device = src.device()});
  scatter_into(out, dim, idx, src, true, op);
  return out;
}

// t zero-padded at the end of each dim up to `shape` (t.shape() <= shape elementwise).
Tensor pad_to(const Tensor& t, const Shape& shape) {
  if (t.shape() == shape) return t;
  Tensor z = zeros(shape, {.dtype = t.dtype(), .device = t.device()});
  Tensor v = z;
  for (int d = 0; d < t.dim(); ++d) v = v.narrow(d, 0, t.size(d));
  v.copy_(t);
  return z;
}

// idx (i64, 0-D or 1-D) as an index tensor of `shape` (x's shape, dim resized) with stride 0
// off the dim: index_select as a gather.
Tensor expand_index(const Tensor& idx, int dim, const Shape& shape) {
  Tensor flat = idx.detach().reshape({-1});
  Shape vs(shape.size(), 1);
  vs[dim] = flat.numel();
  return flat.view(vs).expand(shape);
}

Tensor index_select_impl(const Tensor& x, int dim, const Tensor& idx, const char* op) {
  check_input(op, x, "input");
  check_index_tensor(op, idx);
  COLT5_CHECK(idx.dim() <= 1, op, ": index must be 0-D or 1-D, got shape ", shape_str(idx.shape()),
              " (input shape ", shape_str(x.shape()), ")");
  check_same_device(op, {&x, &idx});
  dim = wrap_dim(dim, x.dim(), op);
  check_range(op, idx, x.size(dim), dim, x);
  Shape shape = x.shape();
  shape[dim] = idx.numel();
  Tensor ie = expand_index(idx, dim, shape);
  Tensor out = gather_raw(x.detach(), dim, ie, op);
  if (needs_grad({&x})) {
    Shape xs = x.shape();
    record(out, op, {x}, [ie, dim, xs, op](const Tensor& g) {
      return std::vector<Tensor>{scatter_add_zeros(xs, dim, ie, g, op)};
    });
  }
  return out;
}

// Shapes for gather/scatter: idx.size(d) <= limit.size(d) for every d (or d != dim).
void check_index_shape(const char* op, const Tensor& idx, const Tensor& limit, int dim, const char* what) {
  COLT5_CHECK(idx.dim() == limit.dim(), op, ": index shape ", shape_str(idx.shape()), " and ", what, " shape ",
              shape_str(limit.shape()), " need the same number of dims");
  for (int d = 0; d < idx.dim(); ++d)
    COLT5_CHECK(d == dim || idx.size(d) <= limit.size(d), op, ": index shape ", shape_str(idx.shape()),
                " exceeds ", what, " shape ", shape_str(limit.shape()), " at dim ", d);
}

Tensor scatter_impl(const Tensor& x, int dim, const Tensor& idx, const Tensor& src, bool accumulate, const char* op) {
  check_input(op, x, "input");
  check_index_tensor(op, idx);
  COLT5_CHECK(src.defined(), op, ": src is an undefined tensor");
  COLT5_CHECK(src.dtype() == x.dtype(), op, ": src dtype ", dtype_name(src.dtype()), " differs from input dtype ",
              dtype_name(x.dtype()), " (shapes ", shape_str(src.shape()), " and ", shape_str(x.shape()), ")");
  check_same_device(op, {&x, &idx, &src});
  dim = wrap_dim(dim, x.dim(), op);
  check_index_shape(op, idx, x, dim, "input");
  check_index_shape(op, idx, src, -1, "src");
  check_range(op, idx, x.size(dim), dim, x);
  Tensor ix = idx.detach();
  Tensor out = scatter_raw(x.detach(), dim, ix, src.detach(), accumulate, op);
  if (needs_grad({&x, &src})) {
    bool gx = x.requires_grad(), gs = src.requires_grad();
    Shape ss = src.shape();
    record(out, op, {x, src}, [ix, dim, ss, gx, gs, accumulate, op](const Tensor& g) {
      Tensor dx;
      if (gx) {
        if (accumulate) {
          dx = g;
        } else {  // overwritten positions do not depend on x
          dx = scatter_raw(g, dim, ix, zeros({}, {.dtype = g.dtype(), .device = g.device()}).expand(ix.shape()), false, op);
        }
      }
      Tensor ds = gs ? pad_to(gather_raw(g, dim, ix, op), ss) : Tensor();
      return std::vector<Tensor>{dx, ds};
    });
  }
  return out;
}

}  // namespace

Tensor index_select(const Tensor& x, int dim, const Tensor& idx) {
  return index_select_impl(x, dim, idx, "index_select");
}

Tensor gather(const Tensor& x, int dim, const Tensor& idx) {
  const char* op = "gather";
  check_input(op, x, "input");
  check_index_tensor(op, idx);
  check_same_device(op, {&x, &idx});
  dim = wrap_dim(dim, x.dim(), op);
  check_index_shape(op, idx, x, dim, "input");
  check_range(op, idx, x.size(dim), dim, x);
  Tensor ix = idx.detach();
  Tensor out = gather_raw(x.detach(), dim, ix, op);
  if (needs_grad({&x})) {
    Shape xs = x.shape();
    record(out, op, {x}, [ix, dim, xs, op](const Tensor& g) {
      return std::vector<Tensor>{scatter_add_zeros(xs, dim, ix, g, op)};
    });
  }
  return out;
}

Tensor scatter(const Tensor& x, int dim, const Tensor& idx, const Tensor& src) {
  return scatter_impl(x, dim, idx, src, false, "scatter");
}

Tensor scatter_add(const Tensor& x, int dim, const Tensor& idx, const Tensor& src) {
  return scatter_impl(x, dim, idx, src, true, "scatter_add");
}

Tensor embedding(const Tensor& weight, const Tensor& idx) {
  const char* op = "embedding";
  COLT5_CHECK(weight.defined(), op, ": weight is an undefined tensor");
  COLT5_CHECK(weight.dim() == 2, op, ": weight must be 2-D (num_embeddings, dim), got shape ",
              shape_str(weight.shape()));
  check_index_tensor(op, idx);
  Shape shape = idx.shape();
  shape.push_back(weight.size(1));
  return index_select_impl(weight, 0, idx.reshape({-1}), op).view(shape);
}

}  // namespace colt5
