#include "engine/tensor.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iomanip>
#include <numeric>
#include <ostream>
#include <sstream>

#include "engine/allocator.h"
#include "engine/autograd.h"
#include "engine/dispatch.h"
#include "engine/strided.h"
#include "kernels/cpu/copy.h"
#ifdef COLT5_WITH_CUDA
#include "kernels/cuda/copy.h"
#endif

namespace colt5 {

// ------------------------------------------------------------ shape helpers

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

Shape contiguous_strides(const Shape& s) {
  Shape st(s.size());
  int64_t acc = 1;
  for (int i = static_cast<int>(s.size()) - 1; i >= 0; --i) {
    st[i] = acc;
    acc *= std::max<int64_t>(s[i], 1);
  }
  return st;
}

int wrap_dim(int d, int ndim, const char* op) {
  int n = std::max(ndim, 1);
  COLT5_CHECK(d >= -n && d < n, op, ": dim ", d, " out of range for a tensor of ", ndim, " dims");
  return d < 0 ? d + n : d;
}

static void check_shape(const Shape& s, const char* op) {
  COLT5_CHECK(s.size() <= static_cast<size_t>(kMaxDims), op, ": at most ", kMaxDims, " dims supported, got ",
              s.size(), " (shape ", shape_str(s), ")");
  for (int64_t d : s) COLT5_CHECK(d >= 0, op, ": negative size in shape ", shape_str(s));
}

Tensor make_tensor(const Shape& shape, DType dtype, Device device) {
  check_shape(shape, "make_tensor");
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>(shape_numel(shape) * dtype_size(dtype), device);
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  return Tensor(impl);
}

Tensor make_view(const StoragePtr& storage, const Shape& shape, const Shape& strides, int64_t offset, DType dtype) {
  check_shape(shape, "make_view");
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = storage;
  impl->shape = shape;
  impl->strides = strides;
  impl->offset = offset;
  impl->dtype = dtype;
  return Tensor(impl);
}

// ------------------------------------------------------------ metadata

#define IMPL_CHECK(what) COLT5_CHECK(impl_ != nullptr, what, ": the tensor is undefined")

const Shape& Tensor::shape() const { IMPL_CHECK("shape"); return impl_->shape; }
const Shape& Tensor::strides() const { IMPL_CHECK("strides"); return impl_->strides; }
int64_t Tensor::offset() const { return impl_->offset; }
int Tensor::dim() const { IMPL_CHECK("dim"); return static_cast<int>(impl_->shape.size()); }
int64_t Tensor::size(int d) const { return impl_->shape[wrap_dim(d, dim(), "size")]; }
int64_t Tensor::stride(int d) const { return impl_->strides[wrap_dim(d, dim(), "stride")]; }
int64_t Tensor::numel() const { IMPL_CHECK("numel"); return shape_numel(impl_->shape); }
DType Tensor::dtype() const { IMPL_CHECK("dtype"); return impl_->dtype; }
Device Tensor::device() const { IMPL_CHECK("device"); return impl_->storage->device; }
const StoragePtr& Tensor::storage() const { IMPL_CHECK("storage"); return impl_->storage; }
void* Tensor::data_ptr() const {
  IMPL_CHECK("data_ptr");
  return static_cast<char*>(impl_->storage->data) + impl_->offset * static_cast<int64_t>(dtype_size(impl_->dtype));
}

bool Tensor::is_contiguous() const {
  if (numel() == 0) return true;  // no element to be out of place (as in PyTorch)
  int64_t expect = 1;
  for (int i = dim() - 1; i >= 0; --i) {
    if (impl_->shape[i] == 1) continue;
    if (impl_->strides[i] != expect) return false;
    expect *= impl_->shape[i];
  }
  return true;
}

void Tensor::check_dtype_(DType want, const char* what) const {
  COLT5_CHECK(dtype() == want, what, ": tensor has dtype ", dtype_name(dtype()), ", asked for ", dtype_name(want));
}

// ------------------------------------------------------------ autograd state

bool Tensor::requires_grad() const { return impl_ && impl_->requires_grad; }
Tensor& Tensor::requires_grad_(bool on) {
  IMPL_CHECK("requires_grad_");
  COLT5_CHECK(is_leaf(), "requires_grad_: only leaf tensors can change requires_grad (use detach())");
  COLT5_CHECK(!on || is_floating(dtype()), "requires_grad_: only floating tensors can require grad, got ",
              dtype_name(dtype()));
  impl_->requires_grad = on;
  return *this;
}
bool Tensor::is_leaf() const { return impl_ && !impl_->grad_fn; }
Tensor Tensor::grad() const { IMPL_CHECK("grad"); return impl_->grad ? Tensor(impl_->grad) : Tensor(); }
void Tensor::set_grad(const Tensor& g) const { impl_->grad = g.impl_ptr(); }
void Tensor::zero_grad() const { impl_->grad.reset(); }
const std::shared_ptr<Node>& Tensor::grad_fn() const { return impl_->grad_fn; }

void Tensor::backward(const Tensor& grad, bool retain_graph) const {
  IMPL_CHECK("backward");
  COLT5_CHECK(requires_grad(), "backward: the tensor does not require grad (no input of it requires grad)");
  Tensor g = grad;
  if (!g.defined()) {
    COLT5_CHECK(numel() == 1, "backward: an implicit gradient needs a scalar output, got shape ", shape_str(shape()),
                "; pass the output gradient explicitly");
    g = ones(shape(), {.dtype = dtype(), .device = device()});
  }
  COLT5_CHECK(g.shape() == shape(), "backward: gradient shape ", shape_str(g.shape()), " does not match output shape ",
              shape_str(shape()));
  run_backward(*this, g, retain_graph);
}

Tensor Tensor::detach() const {
  return make_view(impl_->storage, impl_->shape, impl_->strides, impl_->offset, impl_->dtype);
}

// ------------------------------------------------------------ views

static Tensor alias(const Tensor& t, const Shape& shape, const Shape& strides, int64_t offset) {
  return make_view(t.storage(), shape, strides, offset, t.dtype());
}

// Strides for viewing (shape, strides) as new_shape without a copy, or empty
// when impossible (PyTorch's computeStride).
static bool view_strides(const Shape& old_shape, const Shape& old_strides, const Shape& new_shape, Shape& out) {
  out.assign(new_shape.size(), 0);
  if (old_shape.empty()) {
    out = contiguous_strides(new_shape);
    return true;
  }
  int64_t numel = shape_numel(old_shape);
  if (numel == 0) {
    out = contiguous_strides(new_shape);
    return true;
  }
  int64_t view_d = static_cast<int64_t>(new_shape.size()) - 1;
  int64_t chunk_base_stride = old_strides.back();
  int64_t tensor_numel = 1, view_numel = 1;
  for (int64_t td = static_cast<int64_t>(old_shape.size()) - 1; td >= 0; --td) {
    tensor_numel *= old_shape[td];
    if (td == 0 || (old_shape[td - 1] != 1 && old_strides[td - 1] != tensor_numel * chunk_base_stride)) {
      while (view_d >= 0 && (view_numel < tensor_numel || new_shape[view_d] == 1)) {
        out[view_d] = view_numel * chunk_base_stride;
        view_numel *= new_shape[view_d];
        --view_d;
      }
      if (view_numel != tensor_numel) return false;
      if (td > 0) {
        chunk_base_stride = old_strides[td - 1];
        tensor_numel = 1;
        view_numel = 1;
      }
    }
  }
  return view_d == -1;
}

static Shape infer_shape(Shape s, int64_t numel, const char* op, const Shape& from) {
  int infer = -1;
  int64_t known = 1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      COLT5_CHECK(infer < 0, op, ": only one dim may be -1, got ", shape_str(s));
      infer = static_cast<int>(i);
    } else {
      COLT5_CHECK(s[i] >= 0, op, ": invalid size in ", shape_str(s));
      known *= s[i];
    }
  }
  if (infer >= 0) {
    COLT5_CHECK(known != 0 && numel % known == 0, op, ": cannot view shape ", shape_str(from), " as ", shape_str(s));
    s[infer] = numel / known;
  }
  COLT5_CHECK(shape_numel(s) == numel, op, ": shape ", shape_str(s), " has ", shape_numel(s),
              " elements, the tensor of shape ", shape_str(from), " has ", numel);
  return s;
}

static void record_reshape(Tensor& out, const Tensor& in, const char* name) {
  if (!needs_grad({&in})) return;
  Shape in_shape = in.shape();
  record(out, name, {in}, [in_shape](const Tensor& g) { return std::vector<Tensor>{g.reshape(in_shape)}; });
}

Tensor Tensor::view(const Shape& s) const {
  Shape ns = infer_shape(s, numel(), "view", shape());
  Shape st;
  COLT5_CHECK(view_strides(shape(), strides(), ns, st), "view: shape ", shape_str(shape()), " with strides ",
              shape_str(strides()), " cannot be viewed as ", shape_str(ns), " without a copy (use reshape)");
  Tensor out = alias(*this, ns, st, offset());
  record_reshape(out, *this, "view");
  return out;
}

Tensor Tensor::reshape(const Shape& s) const {
  Shape ns = infer_shape(s, numel(), "reshape", shape());
  Shape st;
  if (view_strides(shape(), strides(), ns, st)) {
    Tensor out = alias(*this, ns, st, offset());
    record_reshape(out, *this, "reshape");
    return out;
  }
  return contiguous().view(ns);
}

Tensor Tensor::permute(const std::vector<int>& dims) const {
  int n = dim();
  COLT5_CHECK(static_cast<int>(dims.size()) == n, "permute: expected ", n, " dims, got ", dims.size());
  std::vector<int> p(n);
  std::vector<bool> seen(n, false);
  Shape ns(n), st(n);
  for (int i = 0; i < n; ++i) {
    int d = wrap_dim(dims[i], n, "permute");
    COLT5_CHECK(!seen[d], "permute: dim ", d, " repeated");
    seen[d] = true;
    p[i] = d;
    ns[i] = shape()[d];
    st[i] = strides()[d];
  }
  Tensor out = alias(*this, ns, st, offset());
  if (needs_grad({this})) {
    std::vector<int> inv(n);
    for (int i = 0; i < n; ++i) inv[p[i]] = i;
    record(out, "permute", {*this}, [inv](const Tensor& g) { return std::vector<Tensor>{g.permute(inv)}; });
  }
  return out;
}

Tensor Tensor::transpose(int a, int b) const {
  int n = dim();
  a = wrap_dim(a, n, "transpose");
  b = wrap_dim(b, n, "transpose");
  std::vector<int> p(n);
  std::iota(p.begin(), p.end(), 0);
  std::swap(p[a], p[b]);
  return permute(p);
}

Tensor Tensor::t() const {
  COLT5_CHECK(dim() == 2, "t: expected a 2-D tensor, got shape ", shape_str(shape()));
  return transpose(0, 1);
}

Tensor Tensor::slice(int d, int64_t start, int64_t end, int64_t step) const {
  d = wrap_dim(d, dim(), "slice");
  COLT5_CHECK(step > 0, "slice: step must be positive, got ", step);
  int64_t n = shape()[d];
  if (start < 0) start += n;
  if (end < 0) end += n;
  start = std::clamp<int64_t>(start, 0, n);
  end = std::clamp<int64_t>(end, start, n);
  Shape ns = shape(), st = strides();
  ns[d] = (end - start + step - 1) / step;
  st[d] *= step;
  Tensor out = alias(*this, ns, st, offset() + start * strides()[d]);
  if (needs_grad({this})) {
    Shape in_shape = shape();
    record(out, "slice", {*this}, [in_shape, d, start, end, step](const Tensor& g) {
      Tensor z = zeros(in_shape, {.dtype = g.dtype(), .device = g.device()});
      z.slice(d, start, end, step).copy_(g);
      return std::vector<Tensor>{z};
    });
  }
  return out;
}

Tensor Tensor::narrow(int d, int64_t start, int64_t length) const {
  d = wrap_dim(d, dim(), "narrow");
  int64_t n = shape()[d];
  COLT5_CHECK(start >= 0 && length >= 0 && start + length <= n, "narrow: range [", start, ", ", start + length,
              ") out of bounds for dim ", d, " of size ", n, " (shape ", shape_str(shape()), ")");
  return slice(d, start, start + length);
}

Tensor Tensor::select(int d, int64_t index) const {
  d = wrap_dim(d, dim(), "select");
  int64_t n = shape()[d];
  COLT5_CHECK(index >= -n && index < n, "select: index ", index, " out of range for dim ", d, " of size ", n);
  if (index < 0) index += n;
  return narrow(d, index, 1).squeeze(d);
}

Tensor Tensor::expand(const Shape& s) const {
  int n = dim(), m = static_cast<int>(s.size());
  COLT5_CHECK(m >= n, "expand: target ", shape_str(s), " has fewer dims than the tensor ", shape_str(shape()));
  Shape ns(m), st(m);
  for (int i = m - 1; i >= 0; --i) {
    int j = i - (m - n);
    int64_t want = s[i];
    if (j >= 0) {
      int64_t have = shape()[j];
      if (want == -1) want = have;
      COLT5_CHECK(have == want || have == 1, "expand: cannot expand shape ", shape_str(shape()), " to ", shape_str(s));
      ns[i] = want;
      st[i] = (have == want) ? strides()[j] : 0;
    } else {
      COLT5_CHECK(want >= 0, "expand: -1 not allowed for new leading dims in ", shape_str(s));
      ns[i] = want;
      st[i] = 0;
    }
  }
  Tensor out = alias(*this, ns, st, offset());
  if (needs_grad({this}))  // the tape sums the gradient back to this shape
    record(out, "expand", {*this}, [](const Tensor& g) { return std::vector<Tensor>{g}; });
  return out;
}

Tensor Tensor::unsqueeze(int d) const {
  d = wrap_dim(d, dim() + 1, "unsqueeze");
  Shape ns = shape();
  ns.insert(ns.begin() + d, 1);
  return view(ns);
}

Tensor Tensor::squeeze(int d) const {
  d = wrap_dim(d, dim(), "squeeze");
  if (shape()[d] != 1) return *this;
  Shape ns = shape();
  ns.erase(ns.begin() + d);
  return view(ns);
}

Tensor Tensor::squeeze() const {
  Shape ns;
  for (int64_t s : shape())
    if (s != 1) ns.push_back(s);
  return view(ns);
}

Tensor Tensor::flatten(int start, int end) const {
  if (dim() == 0) return reshape({1});
  start = wrap_dim(start, dim(), "flatten");
  end = wrap_dim(end, dim(), "flatten");
  COLT5_CHECK(start <= end, "flatten: start dim ", start, " after end dim ", end);
  Shape ns;
  for (int i = 0; i < start; ++i) ns.push_back(shape()[i]);
  int64_t m = 1;
  for (int i = start; i <= end; ++i) m *= shape()[i];
  ns.push_back(m);
  for (int i = end + 1; i < dim(); ++i) ns.push_back(shape()[i]);
  return reshape(ns);
}

// ------------------------------------------------------------ copies

static void copy_kernel(const Tensor& dst, const Tensor& src) {
  // src already on dst's device and broadcastable to dst's shape.
  Shape sst = broadcast_strides(src, dst.shape(), "copy_");
  auto g = make_geometry<2>(dst.shape(), {dst.strides(), sst});
  if (dst.device().is_cpu()) {
    kernels::cpu::copy(dst.data_ptr(), dst.dtype(), src.data_ptr(), src.dtype(), g);
  } else {
#ifdef COLT5_WITH_CUDA
    kernels::cuda::copy(dst.data_ptr(), dst.dtype(), src.data_ptr(), src.dtype(), g, dst.device().index);
#else
    COLT5_FAIL("copy_: this build has no CUDA backend");
#endif
  }
}

Tensor& Tensor::copy_(const Tensor& src) {
  IMPL_CHECK("copy_");
  COLT5_CHECK(src.defined(), "copy_: source tensor is undefined");
  if (src.device() == device()) {
    copy_kernel(*this, src);
  } else {
    // Move the bytes of a contiguous copy across, then convert/scatter on this device.
    Tensor s = src.contiguous();
    Tensor tmp = make_tensor(s.shape(), s.dtype(), device());
    copy_bytes(tmp.data_ptr(), device(), s.data_ptr(), s.device(), s.numel() * dtype_size(s.dtype()));
    copy_kernel(*this, tmp);
  }
  bump_version(*this);
  return *this;
}

Tensor& Tensor::fill_(double value) {
  IMPL_CHECK("fill_");
  auto g = make_geometry<1>(shape(), {strides()});
  if (device().is_cpu()) {
    kernels::cpu::fill(data_ptr(), dtype(), value, g);
  } else {
#ifdef COLT5_WITH_CUDA
    kernels::cuda::fill(data_ptr(), dtype(), value, g, device().index);
#else
    COLT5_FAIL("fill_: this build has no CUDA backend");
#endif
  }
  bump_version(*this);
  return *this;
}

static Tensor copy_as(const Tensor& t, DType dtype, Device device) {
  Tensor out = make_tensor(t.shape(), dtype, device);
  {
    NoGradGuard ng;
    out.copy_(t);
  }
  return out;
}

Tensor Tensor::clone() const {
  Tensor out = copy_as(*this, dtype(), device());
  if (needs_grad({this})) record(out, "clone", {*this}, [](const Tensor& g) { return std::vector<Tensor>{g}; });
  return out;
}

Tensor Tensor::contiguous() const { return is_contiguous() ? *this : clone(); }

Tensor Tensor::to(Device d) const {
  if (d == device()) return *this;
  Tensor out = copy_as(*this, dtype(), d);
  if (needs_grad({this})) {
    Device src = device();
    record(out, "to_device", {*this}, [src](const Tensor& g) { return std::vector<Tensor>{g.to(src)}; });
  }
  return out;
}

Tensor Tensor::to(DType t) const {
  if (t == dtype()) return *this;
  Tensor out = copy_as(*this, t, device());
  if (needs_grad({this}) && is_floating(t)) {
    DType src = dtype();
    record(out, "to_dtype", {*this}, [src](const Tensor& g) { return std::vector<Tensor>{g.to(src)}; });
  }
  return out;
}

// ------------------------------------------------------------ reading values

template <class T>
std::vector<T> Tensor::to_vector() const {
  IMPL_CHECK("to_vector");
  Tensor c = to(Device::cpu()).contiguous();
  std::vector<T> out(c.numel());
  if constexpr (std::is_same_v<T, int64_t>) {
    if (c.dtype() == DType::i64) {
      std::memcpy(out.data(), c.data_ptr(), out.size() * 8);
      return out;
    }
  }
  dispatch_all(c.dtype(), "to_vector", [&](auto tag) {
    using S = decltype(tag);
    const S* p = static_cast<const S*>(c.data_ptr());
    for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<T>(to_double(p[i]));
  });
  return out;
}

template <class T>
T Tensor::item() const {
  COLT5_CHECK(numel() == 1, "item: expected a tensor with one element, got shape ", shape_str(shape()));
  return to_vector<T>()[0];
}

template std::vector<float> Tensor::to_vector<float>() const;
template std::vector<double> Tensor::to_vector<double>() const;
template std::vector<int64_t> Tensor::to_vector<int64_t>() const;
template std::vector<int> Tensor::to_vector<int>() const;
template std::vector<uint8_t> Tensor::to_vector<uint8_t>() const;
template float Tensor::item<float>() const;
template double Tensor::item<double>() const;
template int64_t Tensor::item<int64_t>() const;
template bool Tensor::item<bool>() const;

// ------------------------------------------------------------ printing

static void print_rec(std::ostream& os, const std::vector<double>& v, const Shape& s, const Shape& st, int d,
                      int64_t base, bool integral, int indent) {
  const int64_t edge = 3;
  if (s.empty()) {
    os << v[0];
    return;
  }
  int64_t n = s[d];
  os << "[";
  for (int64_t i = 0; i < n; ++i) {
    if (n > 2 * edge + 1 && i == edge) {
      os << (d + 1 == static_cast<int>(s.size()) ? "..., " : "...,\n" + std::string(indent + 1, ' '));
      i = n - edge - 1;
      continue;
    }
    if (d + 1 == static_cast<int>(s.size())) {
      double x = v[base + i * st[d]];
      if (integral) os << static_cast<int64_t>(x);
      else os << x;
    } else {
      print_rec(os, v, s, st, d + 1, base + i * st[d], integral, indent + 1);
    }
    if (i + 1 < n) os << (d + 1 == static_cast<int>(s.size()) ? ", " : ",\n" + std::string(indent + 1, ' '));
  }
  os << "]";
}

std::string Tensor::str() const {
  if (!defined()) return "tensor(undefined)";
  std::ostringstream os;
  os << "tensor(";
  std::vector<double> v = to_vector<double>();
  os << std::setprecision(6);
  print_rec(os, v, shape(), contiguous_strides(shape()), 0, 0, !is_floating(dtype()), 7);
  os << ", shape=" << shape_str(shape()) << ", dtype=" << dtype_name(dtype());
  if (!device().is_cpu()) os << ", device=" << device().str();
  if (requires_grad()) os << ", requires_grad";
  os << ")";
  return os.str();
}

std::ostream& operator<<(std::ostream& os, const Tensor& t) { return os << t.str(); }

// ------------------------------------------------------------ factories

Tensor empty(const Shape& shape, Options opt) {
  Tensor t = make_tensor(shape, opt.dtype, opt.device);
  if (opt.requires_grad) t.requires_grad_();
  return t;
}
Tensor full(const Shape& shape, double value, Options opt) {
  Tensor t = make_tensor(shape, opt.dtype, opt.device);
  t.fill_(value);
  if (opt.requires_grad) t.requires_grad_();
  return t;
}
Tensor zeros(const Shape& shape, Options opt) { return full(shape, 0.0, opt); }
Tensor ones(const Shape& shape, Options opt) { return full(shape, 1.0, opt); }
Tensor zeros_like(const Tensor& t) { return zeros(t.shape(), {.dtype = t.dtype(), .device = t.device()}); }
Tensor ones_like(const Tensor& t) { return ones(t.shape(), {.dtype = t.dtype(), .device = t.device()}); }
Tensor full_like(const Tensor& t, double v) { return full(t.shape(), v, {.dtype = t.dtype(), .device = t.device()}); }
Tensor empty_like(const Tensor& t) { return make_tensor(t.shape(), t.dtype(), t.device()); }

static Tensor from_doubles(const std::vector<double>& v, const Shape& shape, Options opt) {
  Tensor host = make_tensor(shape, opt.dtype, Device::cpu());
  dispatch_all(opt.dtype, "from_vector", [&](auto tag) {
    using T = decltype(tag);
    T* p = static_cast<T*>(host.data_ptr());
    for (size_t i = 0; i < v.size(); ++i) p[i] = from_double<T>(v[i]);
  });
  Tensor t = host.to(opt.device);
  if (opt.requires_grad) t.requires_grad_();
  return t;
}

static Shape shape_for(size_t n, const Shape& shape, const char* op) {
  Shape s = shape.empty() ? Shape{static_cast<int64_t>(n)} : shape;
  COLT5_CHECK(shape_numel(s) == static_cast<int64_t>(n), op, ": ", n, " values do not fill shape ", shape_str(s));
  return s;
}

Tensor from_vector(const std::vector<double>& values, const Shape& shape, Options opt) {
  return from_doubles(values, shape_for(values.size(), shape, "from_vector"), opt);
}

Tensor from_vector_i64(const std::vector<int64_t>& values, const Shape& shape, Options opt) {
  Shape s = shape_for(values.size(), shape, "from_vector_i64");
  if (opt.dtype == DType::i64) {
    Tensor host = make_tensor(s, DType::i64, Device::cpu());
    if (!values.empty()) std::memcpy(host.data_ptr(), values.data(), values.size() * 8);
    return host.to(opt.device);
  }
  return from_doubles(std::vector<double>(values.begin(), values.end()), s, opt);
}

Tensor from_vector_bool(const std::vector<bool>& values, const Shape& shape, Options opt) {
  std::vector<double> v(values.size());
  for (size_t i = 0; i < values.size(); ++i) v[i] = values[i] ? 1.0 : 0.0;
  return from_doubles(v, shape_for(values.size(), shape, "from_vector_bool"), opt);
}

Tensor scalar_tensor(double value, Options opt) { return from_doubles({value}, {}, opt); }

Tensor arange(double start, double end, double step, Options opt) {
  COLT5_CHECK(step != 0, "arange: step must be non-zero");
  int64_t n = static_cast<int64_t>(std::ceil((end - start) / step));
  n = std::max<int64_t>(n, 0);
  std::vector<double> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = start + static_cast<double>(i) * step;
  return from_doubles(v, {n}, opt);
}

Tensor arange(int64_t end, Options opt) { return arange(0.0, static_cast<double>(end), 1.0, opt); }

// ------------------------------------------------------------ broadcasting

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    int64_t x = i < n - a.size() ? 1 : a[i - (n - a.size())];
    int64_t y = i < n - b.size() ? 1 : b[i - (n - b.size())];
    COLT5_CHECK(x == y || x == 1 || y == 1, op, ": shapes ", shape_str(a), " and ", shape_str(b),
                " cannot be broadcast together");
    out[i] = x == 1 ? y : x;
  }
  return out;
}

Shape broadcast_strides(const Tensor& t, const Shape& shape, const char* op) {
  const Shape& s = t.shape();
  COLT5_CHECK(s.size() <= shape.size(), op, ": shape ", shape_str(s), " cannot be broadcast to ", shape_str(shape));
  Shape st(shape.size(), 0);
  size_t off = shape.size() - s.size();
  for (size_t i = 0; i < s.size(); ++i) {
    COLT5_CHECK(s[i] == shape[off + i] || s[i] == 1, op, ": shape ", shape_str(s), " cannot be broadcast to ",
                shape_str(shape));
    st[off + i] = (s[i] == 1 && shape[off + i] != 1) ? 0 : t.strides()[i];
  }
  return st;
}

}  // namespace colt5
