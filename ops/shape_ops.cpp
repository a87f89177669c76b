#include "ops/shape_ops.h"

#include <sstream>

#include "engine/autograd.h"

namespace colt5 {
namespace {

std::string shapes_str(const std::vector<Tensor>& ts) {
  std::ostringstream os;
  for (size_t i = 0; i < ts.size(); ++i) os << (i ? ", " : "") << (ts[i].defined() ? shape_str(ts[i].shape()) : "undefined");
  return os.str();
}

}  // namespace

Tensor cat(const std::vector<Tensor>& ts, int dim) {
  COLT5_CHECK(!ts.empty(), "cat: expected a non-empty list of tensors");
  for (size_t i = 0; i < ts.size(); ++i)
    COLT5_CHECK(ts[i].defined(), "cat: tensor ", i, " is undefined (shapes ", shapes_str(ts), ")");
  const Tensor& t0 = ts[0];
  COLT5_CHECK(t0.dim() >= 1, "cat: zero-dim tensors cannot be concatenated (shapes ", shapes_str(ts), ")");
  dim = wrap_dim(dim, t0.dim(), "cat");
  Shape shape = t0.shape();
  shape[dim] = 0;
  for (size_t i = 0; i < ts.size(); ++i) {
    const Tensor& t = ts[i];
    COLT5_CHECK(t.dtype() == t0.dtype(), "cat: tensor ", i, " has dtype ", dtype_name(t.dtype()), ", tensor 0 has ",
                dtype_name(t0.dtype()));
    COLT5_CHECK(t.device() == t0.device(), "cat: tensor ", i, " is on ", t.device().str(), ", tensor 0 on ",
                t0.device().str());
    bool same = t.dim() == t0.dim();
    for (int d = 0; same && d < t0.dim(); ++d) same = d == dim || t.size(d) == t0.size(d);
    COLT5_CHECK(same, "cat: tensor ", i, " of shape ", shape_str(t.shape()), " does not match tensor 0 of shape ",
                shape_str(t0.shape()), " off dim ", dim, " (shapes ", shapes_str(ts), ")");
    shape[dim] += t.size(dim);
  }
  Tensor out = make_tensor(shape, t0.dtype(), t0.device());
  std::vector<int64_t> starts(ts.size());
  int64_t off = 0;
  for (size_t i = 0; i < ts.size(); ++i) {
    starts[i] = off;
    int64_t n = ts[i].size(dim);
    if (n > 0) out.narrow(dim, off, n).copy_(ts[i].detach());
    off += n;
  }
  if (needs_grad(ts)) {
    std::vector<int64_t> sizes(ts.size());
    std::vector<bool> want(ts.size());
    for (size_t i = 0; i < ts.size(); ++i) {
      sizes[i] = ts[i].size(dim);
      want[i] = ts[i].requires_grad();
    }
    record(out, "cat", ts, [starts, sizes, want, dim](const Tensor& g) {
      std::vector<Tensor> gs(starts.size());
      for (size_t i = 0; i < gs.size(); ++i)
        if (want[i]) gs[i] = g.narrow(dim, starts[i], sizes[i]);
      return gs;
    });
  }
  return out;
}

Tensor stack(const std::vector<Tensor>& ts, int dim) {
  COLT5_CHECK(!ts.empty(), "stack: expected a non-empty list of tensors");
  for (size_t i = 0; i < ts.size(); ++i) {
    COLT5_CHECK(ts[i].defined(), "stack: tensor ", i, " is undefined (shapes ", shapes_str(ts), ")");
    COLT5_CHECK(ts[i].shape() == ts[0].shape(), "stack: tensor ", i, " of shape ", shape_str(ts[i].shape()),
                " differs from tensor 0 of shape ", shape_str(ts[0].shape()), " (all must be equal)");
  }
  dim = wrap_dim(dim, ts[0].dim() + 1, "stack");
  std::vector<Tensor> us;
  us.reserve(ts.size());
  for (const Tensor& t : ts) us.push_back(t.unsqueeze(dim));
  return cat(us, dim);
}

std::vector<Tensor> split(const Tensor& x, int64_t size, int dim) {
  COLT5_CHECK(x.defined(), "split: the tensor is undefined");
  COLT5_CHECK(x.dim() >= 1, "split: cannot split a zero-dim tensor");
  dim = wrap_dim(dim, x.dim(), "split");
  const int64_t n = x.size(dim);
  COLT5_CHECK(size > 0 || (size == 0 && n == 0), "split: chunk size must be positive, got ", size, " (shape ",
              shape_str(x.shape()), ", dim ", dim, ")");
  if (n == 0) return {x.narrow(dim, 0, 0)};
  std::vector<Tensor> out;
  for (int64_t s = 0; s < n; s += size) out.push_back(x.narrow(dim, s, std::min(size, n - s)));
  return out;
}

std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int dim) {
  COLT5_CHECK(x.defined(), "split: the tensor is undefined");
  COLT5_CHECK(x.dim() >= 1, "split: cannot split a zero-dim tensor");
  dim = wrap_dim(dim, x.dim(), "split");
  int64_t total = 0;
  for (int64_t s : sizes) {
    COLT5_CHECK(s >= 0, "split: negative size ", s, " in sizes ", shape_str(sizes));
    total += s;
  }
  COLT5_CHECK(total == x.size(dim), "split: sizes ", shape_str(sizes), " sum to ", total, ", but dim ", dim,
              " of shape ", shape_str(x.shape()), " has size ", x.size(dim));
  std::vector<Tensor> out;
  int64_t off = 0;
  for (int64_t s : sizes) {
    out.push_back(x.narrow(dim, off, s));
    off += s;
  }
  return out;
}

std::vector<Tensor> chunk(const Tensor& x, int64_t n, int dim) {
  COLT5_CHECK(x.defined(), "chunk: the tensor is undefined");
  COLT5_CHECK(n > 0, "chunk: number of chunks must be positive, got ", n);
  COLT5_CHECK(x.dim() >= 1, "chunk: cannot chunk a zero-dim tensor");
  dim = wrap_dim(dim, x.dim(), "chunk");
  const int64_t size = x.size(dim);
  if (size == 0) return split(x, std::vector<int64_t>(n, 0), dim);  // n empty chunks, like PyTorch
  return split(x, (size + n - 1) / n, dim);
}

}  // namespace colt5
