// attention() dispatched to cuDNN's fused SDPA (AttentionBackend::Cudnn)
// beside our fused kernels (AttentionBackend::Ours) and the CPU f64 op on the
// same inputs (the GPU inputs rounded to bf16 / f16, the same rounded values
// given to the CPU): output and the gradients of q, k and v, non-causal and
// causal (bottom-right, Nq < Nk), Nq != Nk, d 64 and 128, a permuted
// (B, N, H, d) layout and a per-batch prefix key mask (cuDNN's padding mask).
// Inputs cuDNN cannot express must fall back to our kernels, with the same
// answer. Without a cuDNN build (COLT5_CUDNN) the comparisons are skipped
// with a message and only the fallback is checked.
//
// Tolerances: relative L2 error against the CPU f64 op, the bounds of our
// kernels (kernels/cuda/flash_attention.h): bf16 1e-2, f16 2e-3; cuDNN vs
// ours within the sum of both.
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include "colt5.h"
#include "../helpers.h"
#include "engine/cuda/memory.h"
#ifdef COLT5_WITH_CUDNN
#include "kernels/cuda/cudnn_attention.h"
#include "kernels/cuda/flash_attention.h"
#endif

namespace {

using namespace colt5;
const Device kGpu = Device::cuda(0);

using colt5::testing::all_finite;
using colt5::testing::rel_norm_err;

double bound_of(DType dt) { return dt == DType::bf16 ? 1e-2 : 2e-3; }

struct Case {
  int64_t B = 2, H = 3, Nq = 67, Nk = 131, d = 64;
  bool causal = false;
  bool bnhd = false;              // q, k, v as permuted views of (B, N, H, d) buffers
  std::vector<int64_t> key_lens;  // non-empty: a (B, Nk) prefix key mask
  std::string name() const {
    std::string s = "B" + std::to_string(B) + " H" + std::to_string(H) + " Nq" + std::to_string(Nq) + " Nk" +
                    std::to_string(Nk) + " d" + std::to_string(d) + (causal ? " causal" : "") + (bnhd ? " bnhd" : "");
    if (!key_lens.empty()) {
      s += " lens";
      for (int64_t l : key_lens) s += " " + std::to_string(l);
    }
    return s;
  }
};

struct Problem {
  Tensor q, k, v, w, mask;  // f64 CPU, rounded to the tested dtype; q/k/v in storage shape
};

Problem make_problem(const Case& c, DType dt, uint64_t seed) {
  Generator g(seed);
  Options o{.dtype = DType::f64};
  auto rounded = [&](const Shape& s, double sd) { return (randn(s, g, o) * sd).to(dt).to(DType::f64); };
  auto storage = [&](int64_t n) { return c.bnhd ? Shape{c.B, n, c.H, c.d} : Shape{c.B, c.H, n, c.d}; };
  Problem p;
  p.q = rounded(storage(c.Nq), 1.5);
  p.k = rounded(storage(c.Nk), 1.0);
  p.v = rounded(storage(c.Nk), 1.0);
  p.w = rounded({c.B, c.H, c.Nq, c.d}, 1.0);
  if (!c.key_lens.empty()) {
    std::vector<bool> m(c.B * c.Nk);
    for (int64_t b = 0; b < c.B; ++b)
      for (int64_t j = 0; j < c.Nk; ++j) m[b * c.Nk + j] = j < c.key_lens[b];
    p.mask = from_vector_bool(m, {c.B, c.Nk});
  }
  return p;
}

struct Result {
  std::vector<Tensor> t;  // out, dq, dk, dv as f64 CPU (B, H, N, d)
  AttentionBackend ran = AttentionBackend::Ours;
  std::string why;
};

Result run(const Case& c, const Problem& p, DType dt, Device dev, AttentionBackend backend,
           std::vector<Tensor>* leaves = nullptr) {
  std::vector<Tensor> xs;
  for (const Tensor* t : {&p.q, &p.k, &p.v}) xs.push_back(t->to(dt).to(dev).clone().detach().requires_grad_());
  auto view = [&](const Tensor& x) { return c.bnhd ? x.permute({0, 2, 1, 3}) : x; };
  Tensor q = view(xs[0]), k = view(xs[1]), v = view(xs[2]);
  AttentionOptions o;
  o.causal = c.causal;
  o.backend = backend;
  Tensor mask = p.mask.defined() ? p.mask.to(dev) : Tensor();
  Result r;
  r.ran = attention_backend_for(q, k, v, mask, o, &r.why);
  Tensor out = attention(q, k, v, mask, o);
  CHECK(out.dtype() == dt);
  sum(out * p.w.to(dt).to(dev)).backward();
  r.t.push_back(out.detach().to(Device::cpu()).to(DType::f64));
  for (const Tensor& x : xs) r.t.push_back(view(x.grad()).to(Device::cpu()).to(DType::f64));
  if (leaves) *leaves = xs;
  return r;
}

const char* kNames[] = {"out", "dq", "dk", "dv"};

// Compares cuDNN, ours and the CPU f64 op on one case.
void compare(const Case& c, DType dt, uint64_t seed) {
  INFO(c.name() << " " << std::string(dtype_name(dt)));
  const Problem p = make_problem(c, dt, seed);
  const Result ref = run(c, p, DType::f64, Device::cpu(), AttentionBackend::Ours);
  const Result ours = run(c, p, dt, kGpu, AttentionBackend::Ours);
  const Result cud = run(c, p, dt, kGpu, AttentionBackend::Cudnn);
  CHECK(ours.ran == AttentionBackend::Ours);
  INFO("cuDNN not chosen because: " << cud.why);
  CHECK(cud.ran == AttentionBackend::Cudnn);
  const double bound = bound_of(dt);
  for (size_t i = 0; i < 4; ++i) {
    INFO(kNames[i]);
    CHECK(all_finite(cud.t[i]));
    const double e_cud = rel_norm_err(cud.t[i], ref.t[i]), e_ours = rel_norm_err(ours.t[i], ref.t[i]),
                 e_x = rel_norm_err(cud.t[i], ours.t[i]);
    INFO("rel L2: cuDNN vs f64 " << e_cud << ", ours vs f64 " << e_ours << ", cuDNN vs ours " << e_x << " (bound "
                                 << bound << ")");
    CHECK(e_cud <= bound);
    CHECK(e_ours <= bound);
    CHECK(e_x <= 2 * bound);
  }
  if (!c.key_lens.empty()) {  // keys past a batch's length get exactly zero gradient
    for (int64_t b = 0; b < c.B; ++b) {
      const int64_t len = c.key_lens[b];
      if (len >= c.Nk) continue;
      for (int i : {2, 3}) {
        const std::vector<double> tail = cud.t[i].select(0, b).narrow(1, len, c.Nk - len).contiguous().to_vector<double>();
        double mx = 0;
        for (double x : tail) mx = std::max(mx, std::fabs(x));
        INFO(kNames[i] << " of masked keys, batch " << b);
        CHECK(mx == 0.0);
      }
    }
  }
}

bool skip_without_cudnn() {
  if (attention_cudnn_compiled()) return false;
  MESSAGE("skipped: colt5 was built without cuDNN (COLT5_CUDNN=OFF, or cudnn.h / libcudnn / the cudnn-frontend "
          "headers not found)");
  return true;
}

}  // namespace

TEST_CASE("gpu cudnn attention: bf16 and f16 vs ours vs CPU f64 (fwd, dq, dk, dv)") {
  if (skip_without_cudnn()) return;
  uint64_t seed = 500;
  for (DType dt : {DType::bf16, DType::f16}) {
    for (int64_t d : {64, 128})
      for (bool causal : {false, true}) {
        Case c;
        c.d = d, c.causal = causal;  // Nq 67 < Nk 131
        compare(c, dt, seed++);
      }
    Case square;
    square.B = 1, square.H = 2, square.Nq = square.Nk = 256, square.causal = true;
    compare(square, dt, seed++);
    Case wide;  // Nq > Nk, not causal
    wide.Nq = 96, wide.Nk = 40, wide.d = 128;
    compare(wide, dt, seed++);
    Case bnhd;
    bnhd.bnhd = true, bnhd.causal = true, bnhd.Nq = 64, bnhd.Nk = 200;
    compare(bnhd, dt, seed++);
    Case padded;  // cuDNN padding mask: per-batch key lengths
    padded.key_lens = {131, 50};
    compare(padded, dt, seed++);
    Case full_causal;  // an all-true mask with causal: the mask drops, cuDNN runs
    full_causal.causal = true, full_causal.key_lens = {131, 131};
    compare(full_causal, dt, seed++);
  }
}

TEST_CASE("gpu cudnn attention: ineligible inputs fall back to our kernels with the same answer") {
  struct Fallback {
    const char* name;
    const char* why;  // substring of the reason
    DType dt = DType::bf16;
    int64_t Nq = 40, Nk = 72, d = 64;
    bool causal = false, null_kv = false, odd_stride = false;
    std::vector<std::vector<bool>> mask;  // (B, Nk) when one row per batch, (B, H, Nk) when B*H rows
  };
  auto prefix = [](int64_t n, int64_t len) {
    std::vector<bool> r(n);
    for (int64_t j = 0; j < n; ++j) r[j] = j < len;
    return r;
  };
  std::vector<bool> holes = prefix(72, 72);
  holes[10] = false;
  std::vector<Fallback> fs;
  fs.push_back({.name = "f32", .why = "dtype", .dt = DType::f32});
  fs.push_back({.name = "null kv", .why = "null", .null_kv = true});
  fs.push_back({.name = "d 36", .why = "head dim", .d = 36});
  fs.push_back({.name = "causal Nq > Nk", .why = "Nq > Nk", .Nq = 80, .Nk = 48, .causal = true});
  fs.push_back({.name = "k strides not multiples of 8", .why = "multiples of 8", .odd_stride = true});
  fs.push_back({.name = "mask with a hole", .why = "not a prefix", .mask = {holes, prefix(72, 72)}});
  fs.push_back({.name = "mask hides a whole batch", .why = "every key", .mask = {prefix(72, 0), prefix(72, 72)}});
  fs.push_back({.name = "per-head masks differ",
                .why = "differs between heads",
                .mask = {prefix(72, 30), prefix(72, 31), prefix(72, 72), prefix(72, 72)}});
  fs.push_back({.name = "causal with a partial mask",
                .why = "causal with a key mask",
                .causal = true,
                .mask = {prefix(72, 72), prefix(72, 50)}});
  const int64_t B = 2, H = 2;
  uint64_t seed = 900;
  for (const Fallback& f : fs) {
    INFO(f.name);
    Generator g(seed++);
    auto leaf = [&](const Shape& s) { return randn(s, g).to(f.dt).to(kGpu).detach().requires_grad_(); };
    Tensor q = leaf({B, H, f.Nq, f.d}), v = leaf({B, H, f.Nk, f.d});
    Tensor kbuf = f.odd_stride ? leaf({B, f.Nk, H, f.d + 2}) : leaf({B, H, f.Nk, f.d});
    auto kview = [&] { return f.odd_stride ? kbuf.narrow(3, 1, f.d).permute({0, 2, 1, 3}) : kbuf; };
    Tensor mask;
    if (!f.mask.empty()) {
      std::vector<bool> flat;
      for (const auto& row : f.mask) flat.insert(flat.end(), row.begin(), row.end());
      mask = from_vector_bool(flat, int64_t(f.mask.size()) == B ? Shape{B, f.Nk} : Shape{B, H, f.Nk}).to(kGpu);
    }
    AttentionOptions o;
    o.causal = f.causal;
    if (f.null_kv) o.null_k = leaf({H, f.d}), o.null_v = leaf({H, f.d});
    Tensor w = randn({B, H, f.Nq, f.d}, g).to(f.dt).to(kGpu);
    auto grads = [&](AttentionBackend b) {
      o.backend = b;
      for (const Tensor* t : {&q, &kbuf, &v}) t->zero_grad();
      Tensor out = attention(q, kview(), v, mask, o);
      sum(out * w).backward();
      return std::vector<Tensor>{out.detach().to(Device::cpu()).to(DType::f64),
                                 q.grad().to(Device::cpu()).to(DType::f64),
                                 kbuf.grad().to(Device::cpu()).to(DType::f64), v.grad().to(Device::cpu()).to(DType::f64)};
    };
    o.backend = AttentionBackend::Cudnn;
    std::string why;
    CHECK(attention_backend_for(q, kview(), v, mask, o, &why) == AttentionBackend::Ours);
    INFO("reason: " << why);
    if (attention_cudnn_compiled() || f.dt == DType::f32) CHECK(why.find(f.why) != std::string::npos);
    else CHECK(why.find("without cuDNN") != std::string::npos);
    const std::vector<Tensor> a = grads(AttentionBackend::Cudnn), b = grads(AttentionBackend::Ours);
    // Our forward is deterministic: the fallback gives the very same output.
    CHECK(rel_norm_err(a[0], b[0]) == 0.0);
    // The backward accumulates dq with atomics (order may differ): within rounding.
    for (size_t i = 1; i < 4; ++i) {
      INFO(kNames[i] << " rel L2 " << rel_norm_err(a[i], b[i]));
      CHECK(rel_norm_err(a[i], b[i]) <= (f.dt == DType::f32 ? 1e-5 : 5e-3));
    }
  }
}

TEST_CASE("gpu cudnn attention: backend selection, Auto rule, plan cache") {
  CHECK_THROWS_WITH_AS(set_attention_backend(AttentionBackend::Default), doctest::Contains("set_attention_backend"),
                       Error);
  const AttentionBackend prev = attention_backend();
  CHECK(prev == AttentionBackend::Auto);  // the initial process-wide choice
  set_attention_backend(AttentionBackend::Ours);
  CHECK(attention_backend() == AttentionBackend::Ours);
  CHECK(std::string(attention_backend_name(AttentionBackend::Cudnn)) == "cudnn");

  Generator g(3);
  auto mk = [&](const Shape& s) { return randn(s, g).to(DType::bf16).to(kGpu); };
  Tensor q = mk({2, 2, 64, 64}), k = mk({2, 2, 96, 64}), v = mk({2, 2, 96, 64});
  std::string why;
  // Default follows the process-wide setting.
  CHECK(attention_backend_for(q, k, v) == AttentionBackend::Ours);
  set_attention_backend(AttentionBackend::Cudnn);
  const AttentionBackend want = attention_cudnn_compiled() ? AttentionBackend::Cudnn : AttentionBackend::Ours;
  CHECK(attention_backend_for(q, k, v, {}, {}, &why) == want);
  set_attention_backend(prev);
  AttentionOptions auto_opt;
  auto_opt.backend = AttentionBackend::Auto;
  // Below the measured threshold Auto keeps our kernels.
  CHECK(attention_backend_for(q, k, v, {}, auto_opt, &why) == AttentionBackend::Ours);
  CHECK(why.find(attention_cudnn_compiled() ? "Auto" : "without cuDNN") != std::string::npos);
  // CPU and unfused calls are always ours.
  CHECK(attention_backend_for(q.to(Device::cpu()), k.to(Device::cpu()), v.to(Device::cpu()), {}, auto_opt) ==
        AttentionBackend::Ours);
  if (skip_without_cudnn()) return;
  // At the threshold (B*H*Nq*Nk >= kAttentionCudnnMinPairs) Auto takes cuDNN, 8 keys fewer it does not.
  const int64_t nq = 1024, nk = (kAttentionCudnnMinPairs / nq + 7) / 8 * 8;
  Tensor qb = mk({1, 1, nq, 64}), kb = mk({1, 1, nk, 64}), kb2 = mk({1, 1, nk - 8, 64});
  CHECK(attention_backend_for(qb, kb, kb, {}, auto_opt, &why) == AttentionBackend::Cudnn);
  INFO(why);
  CHECK(attention_backend_for(qb, kb2, kb2, {}, auto_opt, &why) == AttentionBackend::Ours);
  // Auto leaves masked calls to our kernels (no mask read-back); Cudnn checks the mask.
  Tensor full_mask = from_vector_bool(std::vector<bool>(nk, true), {1, nk}).to(kGpu);
  CHECK(attention_backend_for(qb, kb, kb, full_mask, auto_opt, &why) == AttentionBackend::Ours);
  CHECK(why.find("key mask") != std::string::npos);
  AttentionOptions cudnn_opt;
  cudnn_opt.backend = AttentionBackend::Cudnn;
  CHECK(attention_backend_for(qb, kb, kb, full_mask, cudnn_opt) == AttentionBackend::Cudnn);
  AttentionOptions unfused = auto_opt;
  unfused.fused = false;
  CHECK(attention_backend_for(qb, kb, kb, {}, unfused) == AttentionBackend::Ours);

#ifdef COLT5_WITH_CUDNN
  // Repeated calls reuse the cached plans: the cache does not grow.
  AttentionOptions c;
  c.backend = AttentionBackend::Cudnn;
  Tensor ql = q.detach().requires_grad_();
  attention(ql, k, v, {}, c).backward(mk({2, 2, 64, 64}));
  const size_t plans = kernels::cuda::cudnn_attention_cached_plans();
  for (int i = 0; i < 3; ++i) attention(ql, k, v, {}, c).backward(mk({2, 2, 64, 64}));
  CHECK(kernels::cuda::cudnn_attention_cached_plans() == plans);
  MESSAGE("cuDNN runtime version " << kernels::cuda::cudnn_runtime_version());
#endif
}

#ifdef COLT5_WITH_CUDNN
// cuDNN's Stats output is our lse (natural-log log-sum-exp of the scaled
// scores): the kernels alone, on the same buffers.
TEST_CASE("gpu cudnn attention: cuDNN stats equal our lse (kernels)") {
  const int64_t B = 2, H = 4, Nq = 100, Nk = 160, d = 64;
  for (bool causal : {false, true}) {
    INFO((causal ? "causal" : "non-causal"));
    Generator g(11);
    Tensor q = randn({B, H, Nq, d}, g).to(DType::bf16).to(kGpu), k = randn({B, H, Nk, d}, g).to(DType::bf16).to(kGpu),
           v = randn({B, H, Nk, d}, g).to(DType::bf16).to(kGpu);
    Tensor o1 = empty({B, H, Nq, d}, {.dtype = DType::bf16, .device = kGpu}), o2 = empty_like(o1);
    Tensor l1 = empty({B, H, Nq}, {.device = kGpu}), l2 = empty_like(l1);
    kernels::FlashAttentionParams p;
    p.dtype = DType::bf16;
    p.B = B, p.H = H, p.Nq = Nq, p.Nk = Nk, p.d = d, p.scale = 0.2, p.causal = causal;
    p.q = q.data_ptr(), p.k = k.data_ptr(), p.v = v.data_ptr();
    p.q_stride = p.out_stride = kernels::strides_bhnd(H, Nq, d);
    p.k_stride = p.v_stride = kernels::strides_bhnd(H, Nk, d);
    p.out = o1.data_ptr(), p.lse = l1.data_ptr();
    cudaStream_t st = colt5::cuda::current_stream(0);
    kernels::cuda::flash_attention_forward(p, nullptr, 0, st);
    size_t ws = 0;
    std::string why;
    REQUIRE(kernels::cuda::cudnn_attention_forward_plan(p, false, 0, &ws, &why));
    colt5::cuda::Workspace w(ws, 0);
    p.out = o2.data_ptr(), p.lse = l2.data_ptr();
    kernels::cuda::cudnn_attention_forward(p, nullptr, w.get(), ws, 0, st);
    const std::vector<double> a = l1.to(Device::cpu()).to_vector<double>(), b = l2.to(Device::cpu()).to_vector<double>();
    double mx = 0;
    for (size_t i = 0; i < a.size(); ++i) mx = std::max(mx, std::fabs(a[i] - b[i]));
    INFO("max |lse ours - stats cuDNN| = " << mx);
    CHECK(mx <= 1e-3);
    CHECK(rel_norm_err(o2.to(Device::cpu()).to(DType::f64), o1.to(Device::cpu()).to(DType::f64)) <= 1e-2);
  }
}
#endif
