#include "layers/optimizer.h"

#include <cmath>

#include "engine/autograd.h"
#include "ops/elementwise.h"
#include "ops/reduce.h"

namespace colt5 {

bool decays(const std::string& name, const Tensor& p) {
  if (p.dim() < 2) return false;
  for (const char* skip : {"norm", "routing_token", "null_"})
    if (name.find(skip) != std::string::npos) return false;
  return true;
}

AdamW::AdamW(const NamedTensors& params, AdamWOptions opt) : opt_(opt) {
  COLT5_CHECK(opt.lr >= 0, "AdamW: learning rate must be >= 0, got ", opt.lr);
  COLT5_CHECK(opt.beta1 >= 0 && opt.beta1 < 1 && opt.beta2 >= 0 && opt.beta2 < 1, "AdamW: betas must be in [0, 1), got ",
              opt.beta1, ", ", opt.beta2);
  COLT5_CHECK(opt.eps > 0, "AdamW: eps must be > 0, got ", opt.eps);
  for (const auto& [name, p] : params) {
    COLT5_CHECK(p.is_leaf() && p.requires_grad(), "AdamW: parameter '", name, "' must be a leaf requiring grad");
    slots_.push_back({name, p, zeros_like(p), zeros_like(p), decays(name, p)});
  }
}

void AdamW::step() {
  NoGradGuard ng;
  ++t_;
  const double bc1 = 1.0 - std::pow(opt_.beta1, static_cast<double>(t_));
  const double bc2 = 1.0 - std::pow(opt_.beta2, static_cast<double>(t_));
  for (Slot& s : slots_) {
    Tensor g = s.param.grad();
    if (!g.defined()) continue;
    s.m.copy_(s.m * opt_.beta1 + g * (1.0 - opt_.beta1));
    s.v.copy_(s.v * opt_.beta2 + g * g * (1.0 - opt_.beta2));
    Tensor update = (s.m / bc1) / (sqrt(s.v / bc2) + opt_.eps);
    Tensor p = s.param.detach();
    if (s.decay && opt_.weight_decay != 0) p = p * (1.0 - opt_.lr * opt_.weight_decay);
    s.param.detach().copy_(p - update * opt_.lr);
  }
}

void AdamW::zero_grad() {
  for (Slot& s : slots_) s.param.zero_grad();
}

NamedTensors AdamW::state() const {
  NamedTensors out;
  for (const Slot& s : slots_) {
    out.emplace_back("exp_avg." + s.name, s.m);
    out.emplace_back("exp_avg_sq." + s.name, s.v);
  }
  out.emplace_back("step", from_vector_i64({t_}));
  return out;
}

void AdamW::load_state(const NamedTensors& state) {
  std::string missing;
  auto find = [&](const std::string& key) -> Tensor {
    for (const auto& [k, t] : state)
      if (k == key) return t;
    missing += " " + key;
    return Tensor();
  };
  Tensor step = find("step");
  std::vector<Tensor> ms, vs;
  for (const Slot& s : slots_) {
    ms.push_back(find("exp_avg." + s.name));
    vs.push_back(find("exp_avg_sq." + s.name));
  }
  COLT5_CHECK(missing.empty(), "AdamW::load_state: missing entries:", missing);
  NoGradGuard ng;
  for (size_t i = 0; i < slots_.size(); ++i) {
    COLT5_CHECK(ms[i].shape() == slots_[i].m.shape(), "AdamW::load_state: exp_avg.", slots_[i].name, " has shape ",
                shape_str(ms[i].shape()), ", expected ", shape_str(slots_[i].m.shape()));
    COLT5_CHECK(vs[i].shape() == slots_[i].v.shape(), "AdamW::load_state: exp_avg_sq.", slots_[i].name,
                " has shape ", shape_str(vs[i].shape()), ", expected ", shape_str(slots_[i].v.shape()));
    slots_[i].m.copy_(ms[i]);
    slots_[i].v.copy_(vs[i]);
  }
  t_ = step.item<int64_t>();
}

double clip_grad_norm(const NamedTensors& params, double max_norm) {
  NoGradGuard ng;
  double total = 0;
  for (const auto& [name, p] : params) {
    Tensor g = p.grad();
    if (g.defined()) total += sum(g.to(DType::f64) * g.to(DType::f64)).item<double>();
  }
  double norm = std::sqrt(total);
  if (norm > max_norm && norm > 0) {
    double scale = max_norm / (norm + 1e-6);
    for (const auto& [name, p] : params) {
      Tensor g = p.grad();
      if (g.defined()) p.set_grad(g * scale);
    }
  }
  return norm;
}

double warmup_cosine_lr(int64_t step, int64_t warmup, int64_t total, double base_lr, double min_lr) {
  if (warmup > 0 && step < warmup) return base_lr * static_cast<double>(step + 1) / static_cast<double>(warmup);
  if (step >= total) return min_lr;
  double progress = static_cast<double>(step - warmup) / static_cast<double>(std::max<int64_t>(1, total - warmup));
  return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + std::cos(M_PI * progress));
}

}  // namespace colt5
