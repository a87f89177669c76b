// Module: the base of every layer. It names its parameters, buffers and child
// modules exactly as PyTorch's state-dict keys do ("heavy_attn.to_q.weight",
// "transformer.layers.0.1.gamma"), so a package's safetensors weights load by
// name.
//
// A layer keeps its tensors as plain members and registers them in its
// constructor; the Module remembers a pointer to each member, so a Module is
// neither copied nor moved (hold layers by std::shared_ptr):
//
//   struct Linear : Module {
//     Tensor weight, bias;  // (out, in), (out)
//     Linear(int64_t in, int64_t out, bool has_bias, Generator& gen) {
//       register_parameter("weight", weight, empty({out, in}));
//       if (has_bias) register_parameter("bias", bias, empty({out}));
//       init_linear_uniform(weight, bias, gen);
//     }
//   };
//   struct Block : Module {
//     std::shared_ptr<Linear> to_q;
//     Block(Generator& gen) { to_q = register_module("to_q", std::make_shared<Linear>(8, 8, false, gen)); }
//   };
//
// Parameters are leaf tensors with requires_grad; to(Device) / to(DType)
// replace each member by a new leaf on the device (gradients are dropped).
// Listing order is PyTorch's: a module's own parameters in registration order,
// then each child's, depth first.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/generator.h"
#include "engine/tensor.h"

namespace colt5 {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

// What a non-strict load_state_dict left out (strict loads throw instead).
struct LoadResult {
  std::vector<std::string> missing;     // module keys the map did not have
  std::vector<std::string> unexpected;  // map keys the module does not have
};

class Module {
 public:
  Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;
  virtual ~Module() = default;

  // ---- registration (in constructors). Names are non-empty, without '.', unique
  // among a module's parameters, buffers and children.
  // slot = value (detached), a leaf requiring grad when value is floating; returns slot.
  Tensor& register_parameter(const std::string& name, Tensor& slot, const Tensor& value);
  // slot = value; persistent buffers are part of the state dict.
  Tensor& register_buffer(const std::string& name, Tensor& slot, const Tensor& value, bool persistent = true);
  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> child) {
    add_child(name, child);
    return child;
  }

  // ---- listing (names are full dotted paths from this module)
  NamedTensors named_parameters() const;
  NamedTensors parameters() const { return named_parameters(); }
  NamedTensors named_buffers() const;  // persistent and non-persistent
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> named_children() const;
  // Parameters and persistent buffers, detached (sharing storage).
  std::map<std::string, Tensor> state_dict() const;
  // The parameter or buffer with this full name (throws listing close names otherwise).
  Tensor get(const std::string& name) const;

  // Copies every tensor of `sd` into the parameter or buffer of the same name
  // (converting the dtype, moving to its device). All problems are reported at
  // once in one exception: missing and unexpected keys (strict only), shape
  // mismatches and impossible dtype conversions (always). Nothing is modified
  // when it throws.
  LoadResult load_state_dict(const std::map<std::string, Tensor>& sd, bool strict = true);

  // state_dict() to / load_state_dict() from a safetensors file; errors name the file.
  void save_weights(const std::string& path, const std::map<std::string, std::string>& metadata = {}) const;
  LoadResult load_weights(const std::string& path, bool strict = true);

  // ---- mode
  virtual void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }

  // ---- placement
  // Moves every parameter and buffer (children included); parameters stay
  // leaves requiring grad. to(DType) converts floating tensors only.
  Module& to(Device device);
  Module& to(DType dtype);
  // The device of the first parameter or buffer (CPU when there are none).
  Device device() const;

  // ---- misc
  int64_t num_parameters() const;  // total elements of all parameters
  void zero_grad();                // drops every parameter's .grad

 protected:
  void add_child(const std::string& name, std::shared_ptr<Module> child);

 private:
  struct Slot {
    std::string name;
    Tensor* tensor;
    bool persistent = true;
  };
  void check_name(const std::string& name) const;
  // Full names with their slots, in PyTorch order.
  void collect(const std::string& prefix, bool params, bool buffers, bool persistent_only,
               std::vector<std::pair<std::string, Tensor*>>& out) const;
  std::vector<Slot> params_, buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  bool training_ = true;
};

// PyTorch's nn.ModuleList: children named "0", "1", ...
class ModuleList : public Module {
 public:
  ModuleList() = default;
  template <class M>
  std::shared_ptr<M> push_back(std::shared_ptr<M> child) {
    add_child(std::to_string(items_.size()), child);
    items_.push_back(child);
    return child;
  }
  size_t size() const { return items_.size(); }
  const std::shared_ptr<Module>& operator[](size_t i) const { return items_.at(i); }
  template <class M>
  std::shared_ptr<M> at(size_t i) const {
    auto p = std::dynamic_pointer_cast<M>(items_.at(i));
    COLT5_CHECK(p, "ModuleList::at: item ", i, " is not of the requested type");
    return p;
  }
  auto begin() const { return items_.begin(); }
  auto end() const { return items_.end(); }

 private:
  std::vector<std::shared_ptr<Module>> items_;
};

// ---- initialisation (SPEC §3), in place on any device, not recorded by autograd.
// PyTorch's nn.Linear default: weight and bias uniform in ±1/sqrt(in), in = weight.size(1);
// bias may be undefined. Draws the weight first, then the bias.
void init_linear_uniform(Tensor& weight, Tensor& bias, Generator& gen);
void init_linear_uniform(Tensor& weight, Generator& gen);
void init_uniform(Tensor& t, double lo, double hi, Generator& gen);
void init_normal(Tensor& t, Generator& gen, double mean = 0.0, double std = 1.0);
void init_constant(Tensor& t, double value);
inline void init_ones(Tensor& t) { init_constant(t, 1.0); }
inline void init_zeros(Tensor& t) { init_constant(t, 0.0); }

}  // namespace colt5
