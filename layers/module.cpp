#include "layers/module.h"

#include <cmath>
#include <set>
#include <sstream>

#include "engine/autograd.h"
#include "engine/safetensors.h"

namespace colt5 {

// ------------------------------------------------------------ registration

void Module::check_name(const std::string& name) const {
  COLT5_CHECK(!name.empty(), "Module: a parameter, buffer or child module needs a non-empty name");
  COLT5_CHECK(name.find('.') == std::string::npos, "Module: name \"", name,
              "\" contains '.', which separates the levels of a state-dict key");
  auto taken = [&](const auto& v) {
    for (const auto& s : v)
      if (s.name == name) return true;
    return false;
  };
  bool child = false;
  for (const auto& [n, m] : children_) child = child || n == name;
  COLT5_CHECK(!taken(params_) && !taken(buffers_) && !child, "Module: name \"", name, "\" is already registered");
}

Tensor& Module::register_parameter(const std::string& name, Tensor& slot, const Tensor& value) {
  check_name(name);
  COLT5_CHECK(value.defined(), "register_parameter(\"", name, "\"): undefined tensor");
  slot = value.detach();
  if (is_floating(slot.dtype())) slot.requires_grad_(true);
  params_.push_back({name, &slot, true});
  return slot;
}

Tensor& Module::register_buffer(const std::string& name, Tensor& slot, const Tensor& value, bool persistent) {
  check_name(name);
  COLT5_CHECK(value.defined(), "register_buffer(\"", name, "\"): undefined tensor");
  slot = value.detach();
  buffers_.push_back({name, &slot, persistent});
  return slot;
}

void Module::add_child(const std::string& name, std::shared_ptr<Module> child) {
  check_name(name);
  COLT5_CHECK(child != nullptr, "register_module(\"", name, "\"): null module");
  COLT5_CHECK(child.get() != this, "register_module(\"", name, "\"): a module cannot be its own child");
  children_.emplace_back(name, std::move(child));
}

// ------------------------------------------------------------ listing

void Module::collect(const std::string& prefix, bool params, bool buffers, bool persistent_only,
                     std::vector<std::pair<std::string, Tensor*>>& out) const {
  if (params)
    for (const Slot& s : params_) out.emplace_back(prefix + s.name, s.tensor);
  if (buffers)
    for (const Slot& s : buffers_)
      if (s.persistent || !persistent_only) out.emplace_back(prefix + s.name, s.tensor);
  for (const auto& [n, m] : children_) m->collect(prefix + n + ".", params, buffers, persistent_only, out);
}

static NamedTensors as_named(const std::vector<std::pair<std::string, Tensor*>>& slots) {
  NamedTensors out;
  out.reserve(slots.size());
  for (const auto& [n, t] : slots) out.emplace_back(n, *t);
  return out;
}

NamedTensors Module::named_parameters() const {
  std::vector<std::pair<std::string, Tensor*>> s;
  collect("", true, false, false, s);
  return as_named(s);
}

NamedTensors Module::named_buffers() const {
  std::vector<std::pair<std::string, Tensor*>> s;
  collect("", false, true, false, s);
  return as_named(s);
}

std::vector<std::pair<std::string, std::shared_ptr<Module>>> Module::named_children() const { return children_; }

std::map<std::string, Tensor> Module::state_dict() const {
  std::vector<std::pair<std::string, Tensor*>> s;
  collect("", true, true, true, s);
  std::map<std::string, Tensor> out;
  for (const auto& [n, t] : s) out.emplace(n, t->detach());
  return out;
}

Tensor Module::get(const std::string& name) const {
  std::vector<std::pair<std::string, Tensor*>> s;
  collect("", true, true, false, s);
  for (const auto& [n, t] : s)
    if (n == name) return *t;
  std::ostringstream names;
  for (size_t i = 0; i < s.size(); ++i) names << (i ? ", " : "") << s[i].first;
  COLT5_FAIL("Module::get: no parameter or buffer \"", name, "\" (have: ", names.str(), ")");
}

// ------------------------------------------------------------ loading

static std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + v[i];
  return out;
}

LoadResult Module::load_state_dict(const std::map<std::string, Tensor>& sd, bool strict) {
  std::vector<std::pair<std::string, Tensor*>> slots;
  collect("", true, true, true, slots);
  LoadResult res;
  std::vector<std::string> mismatched;
  std::set<std::string> known;
  for (const auto& [name, slot] : slots) {
    known.insert(name);
    auto it = sd.find(name);
    if (it == sd.end()) {
      res.missing.push_back(name);
      continue;
    }
    const Tensor& src = it->second;
    if (!src.defined()) {
      mismatched.push_back(name + ": undefined tensor");
    } else if (src.shape() != slot->shape()) {
      mismatched.push_back(name + ": shape " + shape_str(src.shape()) + " in the checkpoint, " +
                           shape_str(slot->shape()) + " in the model");
    } else if (is_floating(slot->dtype()) ? !is_floating(src.dtype()) : src.dtype() != slot->dtype()) {
      mismatched.push_back(name + ": dtype " + dtype_name(src.dtype()) + " in the checkpoint cannot load into " +
                           dtype_name(slot->dtype()));
    }
  }
  for (const auto& [name, t] : sd)
    if (!known.count(name)) res.unexpected.push_back(name);

  bool fail = !mismatched.empty() || (strict && (!res.missing.empty() || !res.unexpected.empty()));
  if (fail) {
    std::ostringstream os;
    os << "load_state_dict: the state dict does not match the module:";
    if (strict && !res.missing.empty())
      os << "\n  missing keys (" << res.missing.size() << "): " << join(res.missing);
    if (strict && !res.unexpected.empty())
      os << "\n  unexpected keys (" << res.unexpected.size() << "): " << join(res.unexpected);
    if (!mismatched.empty()) {
      os << "\n  mismatched (" << mismatched.size() << "):";
      for (const std::string& m : mismatched) os << "\n    " << m;
    }
    throw Error(os.str());
  }

  NoGradGuard ng;
  for (const auto& [name, slot] : slots) {
    auto it = sd.find(name);
    if (it == sd.end()) continue;
    const Tensor& src = it->second;
    bool same = src.storage() == slot->storage() && src.offset() == slot->offset() &&
                src.strides() == slot->strides() && src.dtype() == slot->dtype();
    if (!same) slot->copy_(src);  // converts the dtype, moves across devices
  }
  return res;
}

void Module::save_weights(const std::string& path, const std::map<std::string, std::string>& metadata) const {
  save_safetensors(path, state_dict(), metadata);
}

LoadResult Module::load_weights(const std::string& path, bool strict) {
  auto sd = load_safetensors(path);
  try {
    return load_state_dict(sd, strict);
  } catch (const Error& e) {
    throw Error(path + ": " + e.what());
  }
}

// ------------------------------------------------------------ mode and placement

void Module::train(bool on) {
  training_ = on;
  for (auto& [n, m] : children_) m->train(on);
}

// Replaces each tensor by f(tensor) when that differs, keeping parameters leaves requiring grad.
template <class F>
static void remap(const std::vector<std::pair<std::string, Tensor*>>& slots, F&& f) {
  for (const auto& [name, slot] : slots) {
    Tensor n = f(slot->detach());
    if (n.storage() == slot->storage() && n.dtype() == slot->dtype()) continue;  // already there
    bool rg = slot->requires_grad();
    n = n.detach();
    if (rg) n.requires_grad_(true);
    *slot = n;
  }
}

Module& Module::to(Device device) {
  std::vector<std::pair<std::string, Tensor*>> s;
  collect("", true, true, false, s);
  remap(s, [&](const Tensor& t) { return t.to(device); });
  return *this;
}

Module& Module::to(DType dtype) {
  COLT5_CHECK(is_floating(dtype), "Module::to: parameters convert to floating dtypes only, got ", dtype_name(dtype));
  std::vector<std::pair<std::string, Tensor*>> s;
  collect("", true, true, false, s);
  remap(s, [&](const Tensor& t) { return is_floating(t.dtype()) ? t.to(dtype) : t; });
  return *this;
}

Device Module::device() const {
  std::vector<std::pair<std::string, Tensor*>> s;
  collect("", true, true, false, s);
  return s.empty() ? Device::cpu() : s.front().second->device();
}

int64_t Module::num_parameters() const {
  int64_t n = 0;
  for (const auto& [name, t] : named_parameters()) n += t.numel();
  return n;
}

void Module::zero_grad() {
  for (const auto& [name, t] : named_parameters()) t.zero_grad();
}

// ------------------------------------------------------------ initialisation

void init_uniform(Tensor& t, double lo, double hi, Generator& gen) {
  NoGradGuard ng;
  t.copy_(uniform(t.shape(), lo, hi, gen, {.dtype = DType::f64}));
}

void init_normal(Tensor& t, Generator& gen, double mean, double std) {
  NoGradGuard ng;
  Tensor r = randn(t.shape(), gen, {.dtype = DType::f64});
  if (mean != 0.0 || std != 1.0) {
    double* p = r.data<double>();
    for (int64_t i = 0; i < r.numel(); ++i) p[i] = mean + std * p[i];
  }
  t.copy_(r);
}

void init_constant(Tensor& t, double value) { t.fill_(value); }

void init_linear_uniform(Tensor& weight, Tensor& bias, Generator& gen) {
  COLT5_CHECK(weight.dim() == 2, "init_linear_uniform: weight must be (out, in), got ", shape_str(weight.shape()));
  COLT5_CHECK(weight.size(1) > 0, "init_linear_uniform: in_features is 0");
  double bound = 1.0 / std::sqrt(static_cast<double>(weight.size(1)));
  init_uniform(weight, -bound, bound, gen);
  if (bias.defined()) init_uniform(bias, -bound, bound, gen);
}

void init_linear_uniform(Tensor& weight, Generator& gen) {
  Tensor none;
  init_linear_uniform(weight, none, gen);
}

}  // namespace colt5
