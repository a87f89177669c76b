// Tensor: a view (shape, strides, offset, dtype) of shared storage on a device,
// plus autograd state. Copying a Tensor copies a handle, never the data.
//
// Shapes and strides are in elements, PyTorch order (last dim fastest).
// Views (view/reshape/permute/transpose/narrow/slice/select/expand/
// squeeze/unsqueeze/flatten) share storage and are differentiable.
#pragma once
#include <cstdint>
#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

#include "engine/device.h"
#include "engine/dtype.h"
#include "engine/error.h"
#include "engine/storage.h"

namespace colt5 {

using Shape = std::vector<int64_t>;
constexpr int kMaxDims = 8;

struct Node;
struct TensorImpl;

// Options for factories: zeros({2, 3}, {.dtype = DType::f64, .requires_grad = true})
struct Options {
  DType dtype = DType::f32;
  Device device = Device::cpu();
  bool requires_grad = false;
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  bool defined() const { return impl_ != nullptr; }

  // ---- metadata
  const Shape& shape() const;
  const Shape& strides() const;
  int64_t offset() const;
  int dim() const;
  int64_t size(int d) const;    // negative d counts from the end
  int64_t stride(int d) const;
  int64_t numel() const;
  DType dtype() const;
  Device device() const;
  bool is_contiguous() const;
  const StoragePtr& storage() const;
  // Pointer to the first element (storage base + offset).
  void* data_ptr() const;
  template <class T> T* data() const {
    check_dtype_(dtype_of<T>::value, "data<T>");
    return static_cast<T*>(data_ptr());
  }
  std::string str() const;  // values, shape and dtype, for printing

  // ---- autograd
  bool requires_grad() const;
  Tensor& requires_grad_(bool on = true);  // only on leaves
  bool is_leaf() const;
  Tensor grad() const;  // undefined until a backward reached this leaf
  void set_grad(const Tensor& g) const;
  void zero_grad() const;  // drops .grad
  const std::shared_ptr<Node>& grad_fn() const;
  // From a scalar output (grad = 1), or with an explicit output gradient.
  void backward(const Tensor& grad = {}, bool retain_graph = false) const;
  // Same storage, no history, requires_grad false.
  Tensor detach() const;

  // ---- views (share storage)
  Tensor view(const Shape& shape) const;     // needs compatible strides; one dim may be -1
  Tensor reshape(const Shape& shape) const;  // view when possible, else a copy
  Tensor permute(const std::vector<int>& dims) const;
  Tensor transpose(int a, int b) const;
  Tensor t() const;  // 2-D transpose
  Tensor narrow(int dim, int64_t start, int64_t length) const;
  Tensor slice(int dim, int64_t start, int64_t end, int64_t step = 1) const;
  Tensor select(int dim, int64_t index) const;  // removes dim
  Tensor expand(const Shape& shape) const;      // -1 keeps a size
  Tensor unsqueeze(int dim) const;
  Tensor squeeze(int dim) const;
  Tensor squeeze() const;
  Tensor flatten(int start = 0, int end = -1) const;

  // ---- copies
  Tensor contiguous() const;  // itself when already contiguous
  Tensor clone() const;
  Tensor to(Device device) const;
  Tensor to(DType dtype) const;
  // In-place copy of src (broadcast to this shape, any dtype/device); not recorded by autograd.
  Tensor& copy_(const Tensor& src);
  Tensor& fill_(double value);
  Tensor& zero_() { return fill_(0.0); }

  // ---- reading values
  template <class T> T item() const;  // one element, converted to T
  template <class T> std::vector<T> to_vector() const;  // all elements in order, converted

  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }

 private:
  void check_dtype_(DType want, const char* what) const;
  std::shared_ptr<TensorImpl> impl_;
};

struct TensorImpl {
  StoragePtr storage;
  Shape shape, strides;
  int64_t offset = 0;
  DType dtype = DType::f32;
  bool requires_grad = false;
  std::shared_ptr<TensorImpl> grad;
  std::shared_ptr<Node> grad_fn;
};

std::ostream& operator<<(std::ostream& os, const Tensor& t);

// ---- helpers on shapes
int64_t shape_numel(const Shape& s);
Shape contiguous_strides(const Shape& s);
int wrap_dim(int d, int ndim, const char* op);  // d in [-ndim, ndim) -> [0, ndim)

// A new tensor over fresh storage (uninitialised).
Tensor make_tensor(const Shape& shape, DType dtype, Device device);
// A view of existing storage.
Tensor make_view(const StoragePtr& storage, const Shape& shape, const Shape& strides, int64_t offset, DType dtype);

// ---- factories
Tensor empty(const Shape& shape, Options opt = {});
Tensor zeros(const Shape& shape, Options opt = {});
Tensor ones(const Shape& shape, Options opt = {});
Tensor full(const Shape& shape, double value, Options opt = {});
Tensor zeros_like(const Tensor& t);
Tensor ones_like(const Tensor& t);
Tensor full_like(const Tensor& t, double value);
Tensor empty_like(const Tensor& t);
// [start, end) with step; dtype i64 unless opt says otherwise.
Tensor arange(double start, double end, double step = 1.0, Options opt = {.dtype = DType::i64});
Tensor arange(int64_t end, Options opt = {.dtype = DType::i64});
// From host values (row-major), converted to opt.dtype. Shape empty -> 1-D of values.size().
Tensor from_vector(const std::vector<double>& values, const Shape& shape = {}, Options opt = {});
Tensor from_vector_i64(const std::vector<int64_t>& values, const Shape& shape = {}, Options opt = {.dtype = DType::i64});
Tensor from_vector_bool(const std::vector<bool>& values, const Shape& shape = {}, Options opt = {.dtype = DType::b8});
Tensor scalar_tensor(double value, Options opt = {});

}  // namespace colt5
