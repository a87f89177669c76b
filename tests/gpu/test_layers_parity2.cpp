// CPU / GPU parity of ConditionalRoutedAutoregressiveAttention,
// ConditionalRoutedCrossAttention, ConditionalRoutedImageAttention and
// ConditionalRoutedViT: twin modules from one seed (one moved to the GPU), the
// same f32 inputs, forward compared, then one random output gradient
// backpropagated on both and every parameter's gradient (by state-dict name)
// and the input's compared. Runs only with a GPU.
//
// Error metric: ||gpu - cpu|| / ||cpu|| per tensor, no NaN / inf. Tolerances
// (f32 both sides): every layer here runs an attention kernel on TF32 tensor
// cores (local attention has no switch; heavy / self attention default to
// TF32): forward 5e-3, gradients 2e-2. Soft router settings (eps 0.3) keep the
// selection away from rounding-level ties so both devices pick the same tokens.
//
// Also: the autoregressive layer's forward + backward peak GPU memory at the
// package's README settings (2 x 8192 x 512, window 128, 32 query / 1024
// key-value heavy tokens, 2 kv routes) must stay under 1 GB (package: 8.5 GB).
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "colt5.h"

namespace {

using namespace colt5;
const Device kGpu = Device::cuda(0);
constexpr double kFwdTight = 1e-4, kBwdTight = 1e-3, kFwdTf32 = 5e-3, kBwdTf32 = 2e-2;
const RouterConfig kSoft{.n_iters = 20, .eps = 0.3, .eps_decay = 0.9, .eps_init = 1.0};

Tensor rnd(const Shape& s, uint64_t seed, double scale = 1.0) {
  Generator g(seed);
  return randn(s, g, {.dtype = DType::f32}) * scale;
}
Tensor rmask(int64_t B, int64_t N, double keep, uint64_t seed) {
  Generator g(seed);
  Tensor m = lt(rand({B, N}, g), keep);
  m.select(1, 0).fill_(1.0);
  return m;
}

double rel_norm_err(const Tensor& got, const Tensor& want) {
  const std::vector<double> a = got.to_vector<double>(), b = want.to_vector<double>();
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

void expect_near(const Tensor& gpu, const Tensor& cpu, double tol, const std::string& what) {
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

void expect_equal_idx(const Tensor& gpu, const Tensor& cpu, const std::string& what) {
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

}  // namespace

TEST_CASE("gpu layers parity2: ConditionalRoutedAutoregressiveAttention") {
  for (int64_t N : {64, 75}) {
    auto [mc, mg] = twins<ConditionalRoutedAutoregressiveAttention>(10, [&](Generator& g) {
      return std::make_shared<ConditionalRoutedAutoregressiveAttention>(
          ConditionalRoutedAutoregressiveAttentionConfig{.dim = 32, .num_heavy_tokens_q = 4, .num_heavy_tokens_kv = 12,
                                                         .num_routed_kv = 2, .light_dim_head = 16, .light_heads = 2,
                                                         .light_window_size = 16, .heavy_dim_head = 16,
                                                         .heavy_heads = 4, .router_kwargs = kSoft,
                                                         .multiply_queries_by_score = true, .rotary_emb = true},
          g);
    });
    parity<ConditionalRoutedAutoregressiveAttention>(
        "autoregressive N=" + std::to_string(N), *mc, *mg, rnd({2, N, 32}, 11), Tensor(),
        [](ConditionalRoutedAutoregressiveAttention& m, const Tensor& x, const Tensor&) { return m.forward(x); },
        kFwdTf32, kBwdTf32);
  }
}

TEST_CASE("gpu layers parity2: ConditionalRoutedCrossAttention (routed, blocks, unrouted)") {
  for (bool blocks : {false, true}) {
    auto [mc, mg] = twins<ConditionalRoutedCrossAttention>(20, [&](Generator& g) {
      ConditionalRoutedCrossAttentionConfig c{.dim = 32, .num_tokens_q = 8, .num_tokens_kv = 16, .dim_head = 16,
                                              .heads = 4, .router_kwargs = kSoft, .kv_routing_tokens = 2};
      if (blocks) c.route_block_size = 32;
      return std::make_shared<ConditionalRoutedCrossAttention>(c, g);
    });
    Tensor ctx = rnd({2, 100, 32}, 21), cmask = rmask(2, 100, 0.8, 22);
    for (int64_t ntq : {8, 40}) {
      parity<ConditionalRoutedCrossAttention>(
          std::string("cross blocks=") + (blocks ? "1" : "0") + " ntq=" + std::to_string(ntq), *mc, *mg,
          rnd({2, 40, 32}, 23), Tensor(),
          [&](ConditionalRoutedCrossAttention& m, const Tensor& x, const Tensor&) {
            const Device d = x.device();
            return m.forward(x, ctx.to(d), {}, cmask.to(d), {.num_tokens_q = ntq});
          },
          kFwdTf32, kBwdTf32);
      mc->zero_grad();
      mg->zero_grad();
    }
  }
}

TEST_CASE("gpu layers parity2: ConditionalRoutedImageAttention (per patch, global, channel_first)") {
  for (bool global : {false, true}) {
    auto [mc, mg] = twins<ConditionalRoutedImageAttention>(30, [&](Generator& g) {
      return std::make_shared<ConditionalRoutedImageAttention>(
          ConditionalRoutedImageAttentionConfig{.dim = 32, .num_heavy_tokens_q = 6, .num_heavy_tokens_kv = 10,
                                                .num_routed_kv = 2, .light_dim_head = 16, .light_heads = 2,
                                                .light_window_size = 4, .heavy_dim_head = 16, .heavy_heads = 4,
                                                .router_kwargs = kSoft, .channel_first = true,
                                                .global_routing = global},
          g);
    });
    parity<ConditionalRoutedImageAttention>(
        std::string("image global=") + (global ? "1" : "0"), *mc, *mg, rnd({2, 32, 8, 12}, 31), Tensor(),
        [](ConditionalRoutedImageAttention& m, const Tensor& x, const Tensor&) { return m.forward(x); }, kFwdTf32,
        kBwdTf32);
  }
}

TEST_CASE("gpu layers parity2: ConditionalRoutedViT") {
  auto [mc, mg] = twins<ConditionalRoutedViT>(40, [&](Generator& g) {
    return std::make_shared<ConditionalRoutedViT>(
        ConditionalRoutedViTConfig{.image_size = 16, .patch_size = 2, .num_classes = 10, .dim = 32, .depth = 2,
                                   .attn_num_heavy_tokens_q = 8, .attn_num_heavy_tokens_kv = 12,
                                   .attn_light_dim_head = 16, .attn_light_heads = 2, .attn_light_window_size = 4,
                                   .attn_heavy_dim_head = 16, .attn_heavy_heads = 2, .ff_num_heavy_tokens = 24,
                                   .router_kwargs = kSoft, .router_kwargs_has_eps = true},
        g);
  });
  parity<ConditionalRoutedViT>(
      "vit", *mc, *mg, rnd({2, 3, 16, 16}, 41), Tensor(),
      [](ConditionalRoutedViT& m, const Tensor& x, const Tensor&) { return m.forward(x); }, kFwdTf32, kBwdTf32);
}

TEST_CASE("gpu layers parity2: autoregressive attention memory at the README settings (< 1 GB)") {
  Generator gen(50);
  ConditionalRoutedAutoregressiveAttention a({.dim = 512, .num_heavy_tokens_q = 32, .num_heavy_tokens_kv = 1024,
                                              .num_routed_kv = 2, .light_dim_head = 64, .light_heads = 8,
                                              .light_window_size = 128, .heavy_window_size = 128,
                                              .heavy_dim_head = 64, .heavy_heads = 8},
                                             gen);
  a.to(kGpu);
  Tensor x = rnd({2, 8192, 512}, 51).to(kGpu).requires_grad_();
  const int64_t before = memory_stats(kGpu).current_bytes;
  reset_peak_memory(kGpu);
  {
    Tensor y = a.forward(x);
    sum(y).backward();
  }
  const int64_t peak = memory_stats(kGpu).peak_bytes - before;
  MESSAGE("autoregressive 2x8192x512 (README settings) forward+backward peak: " << peak / 1.0e6
                                                                                  << " MB above the inputs/params");
  CHECK(peak < (int64_t(1) << 30));
  CHECK(x.grad().defined());
}
