// Shared harness of the CPU / GPU layer parity tests (test_layers_parity*.cpp):
// twin modules from one seed, relative-norm comparison, and a forward +
// backward parity check over every parameter gradient.
#pragma once
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "colt5.h"
#include "../helpers.h"

namespace colt5::layer_parity {

const Device kGpu = Device::cuda(0);
constexpr double kFwdTight = 1e-4, kBwdTight = 1e-3, kFwdTf32 = 5e-3, kBwdTf32 = 2e-2;
const RouterConfig kSoft{.n_iters = 20, .eps = 0.3, .eps_decay = 0.9, .eps_init = 1.0};

inline Tensor rnd(const Shape& s, uint64_t seed, double scale = 1.0) {
  Generator g(seed);
  return randn(s, g, {.dtype = DType::f32}) * scale;
}
inline Tensor rmask(int64_t B, int64_t N, double keep, uint64_t seed) {
  Generator g(seed);
  Tensor m = lt(rand({B, N}, g), keep);
  m.select(1, 0).fill_(1.0);
  return m;
}

using colt5::testing::rel_norm_err;

inline void expect_near(const Tensor& gpu, const Tensor& cpu, double tol, const std::string& what) {
  INFO(what);
  REQUIRE(gpu.defined());
  REQUIRE(cpu.defined());
  CHECK(gpu.device() == kGpu);
  REQUIRE(gpu.shape() == cpu.shape());
  const Tensor g = gpu.detach().to(Device::cpu());
  bool finite = true;
  for (double v : g.to_vector<double>()) finite = finite && std::isfinite(v);
  CHECK(finite);
  const double e = rel_norm_err(g, cpu.detach());
  INFO("relative error " << e << " (tolerance " << tol << ")");
  CHECK(e <= tol);
}

inline void expect_equal_idx(const Tensor& gpu, const Tensor& cpu, const std::string& what) {
  INFO(what);
  CHECK(gpu.defined() == cpu.defined());
  if (!cpu.defined()) return;
  CHECK(gpu.to(Device::cpu()).to_vector<int64_t>() == cpu.to_vector<int64_t>());
}

// Twin modules from one seed: the first stays on the CPU, the second goes to the GPU.
template <class M, class Make>
std::pair<std::shared_ptr<M>, std::shared_ptr<M>> twins(uint64_t seed, Make make) {
  Generator g1(seed), g2(seed);
  std::shared_ptr<M> c = make(g1), g = make(g2);
  g->to(kGpu);
  return {c, g};
}

// forward on both (fn gets the module side's x and mask), compare, backward one
// random gradient, compare every parameter gradient and x's.
template <class M>
void parity(const std::string& name, M& mc, M& mg, const Tensor& x0, const Tensor& mask,
            const std::function<Tensor(M&, const Tensor&, const Tensor&)>& fn, double fwd_tol, double bwd_tol) {
  Tensor xc = x0.detach().clone().requires_grad_(), xg = x0.detach().to(kGpu).requires_grad_();
  Tensor mc_mask = mask, mg_mask = mask.defined() ? mask.to(kGpu) : Tensor();
  Tensor yc = fn(mc, xc, mc_mask), yg = fn(mg, xg, mg_mask);
  expect_near(yg, yc, fwd_tol, name + ": forward");
  Tensor dy = rnd(yc.shape(), 777);
  yc.backward(dy);
  yg.backward(dy.to(kGpu));
  REQUIRE(xc.grad().defined());
  expect_near(xg.grad(), xc.grad(), bwd_tol, name + ": gradient of x");
  NamedTensors pc = mc.named_parameters(), pg = mg.named_parameters();
  REQUIRE(pc.size() == pg.size());
  for (size_t i = 0; i < pc.size(); ++i) {
    REQUIRE(pc[i].first == pg[i].first);
    const std::string what = name + ": gradient of " + pc[i].first;
    INFO(what);
    CHECK(pc[i].second.grad().defined() == pg[i].second.grad().defined());
    if (pc[i].second.grad().defined() && pg[i].second.grad().defined())
      expect_near(pg[i].second.grad(), pc[i].second.grad(), bwd_tol, what);
  }
}


}  // namespace colt5::layer_parity
