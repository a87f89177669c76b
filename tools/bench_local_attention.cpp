// Benchmark of fused local attention; see the header for what is measured.
// Attended pairs are the (query, key) pairs inside the band (key mask
// ignored): sum over queries of |[local_band_lo(t), local_band_hi(t))|, times
// B*H; FLOPs forward 4 d per pair (two matmuls), forward+backward 3.5x that.
// The kernels compute whole 8-key MMA tiles, so they do somewhat more.
#include "tools/bench_local_attention.h"

#include <cstdio>
#include <cstdlib>
#include <string>

#ifdef COLT5_WITH_CUDA
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "colt5.h"
#include "engine/cuda/check.h"
#include "engine/cuda/memory.h"
#include "kernels/cuda/flash_attention.h"
#include "kernels/cuda/local_attention.h"
#include "ops/local_attention.h"

namespace {

using namespace colt5;
namespace lc = colt5::kernels::cuda;

// Median of per-iteration event timings of fn(i) on `stream`.
template <class F>
double time_ms(cudaStream_t stream, int warmup, int iters, F&& fn) {
  for (int i = 0; i < warmup; ++i) fn(i);
  std::vector<cudaEvent_t> ev(2 * iters);
  for (auto& e : ev) CUDA_CHECK(cudaEventCreate(&e));
  for (int i = 0; i < iters; ++i) {
    CUDA_CHECK(cudaEventRecord(ev[2 * i], stream));
    fn(i);
    CUDA_CHECK(cudaEventRecord(ev[2 * i + 1], stream));
  }
  CUDA_CHECK(cudaStreamSynchronize(stream));
  std::vector<float> ms(iters);
  for (int i = 0; i < iters; ++i) CUDA_CHECK(cudaEventElapsedTime(&ms[i], ev[2 * i], ev[2 * i + 1]));
  for (auto& e : ev) CUDA_CHECK(cudaEventDestroy(e));
  std::sort(ms.begin(), ms.end());
  return ms[iters / 2];
}

double rel_err(const Tensor& a, const Tensor& b) {
  std::vector<double> x = a.to(Device::cpu()).to_vector<double>(), y = b.to(Device::cpu()).to_vector<double>();
  double num = 0, den = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    if (!std::isfinite(x[i])) return INFINITY;
    num += (x[i] - y[i]) * (x[i] - y[i]);
    den += y[i] * y[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

kernels::AttnStrides strides_of(const Tensor& x) { return {x.stride(0), x.stride(1), x.stride(2)}; }

using Row = LocalAttentionBenchResult;

Row run_shape(const LocalAttentionBenchSpec& s, int iters, bool reference, bool variants, cudaStream_t stream) {
  const Device gpu = Device::cuda(0);
  const LocalAttentionOptions opt{.window = s.window,
                                  .look_backward = s.look_backward,
                                  .look_forward = s.look_forward,
                                  .causal = s.causal,
                                  .exact = s.exact};
  Generator g(7);
  const Shape shape{s.B, s.H, s.N, s.d};
  Tensor q = randn(shape, g).to(s.dtype).to(gpu), k = randn(shape, g).to(s.dtype).to(gpu),
         v = randn(shape, g).to(s.dtype).to(gpu), G = randn(shape, g).to(s.dtype).to(gpu);
  Row row;
  row.name = std::string(s.name) + " " + dtype_name(s.dtype);
  row.target = s.target_ms;
  row.d = s.d;
  row.queries = double(s.B * s.H * s.N);

  // ---- kernels alone (pointer API)
  Tensor out = empty(shape, {.dtype = s.dtype, .device = gpu}), lse = empty({s.B, s.H, s.N}, {.device = gpu});
  Tensor dq = empty_like(q), dk = empty_like(q), dv = empty_like(q);
  kernels::LocalAttentionParams p;
  p.dtype = s.dtype;
  p.B = s.B, p.H = s.H, p.N = s.N, p.d = s.d;
  p.window = opt.window, p.look_backward = opt.look_backward, p.look_forward = opt.look_forward;
  p.causal = opt.causal, p.exact = opt.exact, p.scale = 1.0 / std::sqrt(double(s.d));
  p.q = q.data_ptr(), p.k = k.data_ptr(), p.v = v.data_ptr(), p.out = out.data_ptr(), p.lse = lse.data_ptr();
  p.q_stride = p.k_stride = p.v_stride = p.out_stride = strides_of(q);
  p.dout = G.data_ptr(), p.dout_stride = strides_of(G);
  p.dq = dq.data_ptr(), p.dk = dk.data_ptr(), p.dv = dv.data_ptr();
  p.dq_stride = p.dk_stride = p.dv_stride = strides_of(q);
  row.pairs = double(kernels::local_attention_band_pairs(p)) * double(s.B * s.H);
  const size_t wsb = lc::local_attention_backward_workspace_bytes(p);
  Tensor ws = empty({int64_t(wsb) + 1}, {.dtype = DType::b8, .device = gpu});
  row.fwd = time_ms(stream, 3, iters, [&](int) { lc::local_attention_forward(p, stream); });
  row.bwd = time_ms(stream, 3, iters, [&](int) { lc::local_attention_backward(p, ws.data_ptr(), wsb, stream); });
  row.fb = time_ms(stream, 3, iters, [&](int) {
    lc::local_attention_forward(p, stream);
    lc::local_attention_backward(p, ws.data_ptr(), wsb, stream);
  });
  const double fl = 4.0 * s.d * row.pairs;
  std::printf("  %-44s kernels fwd %7.3f ms (%5.1f TFLOP/s)  bwd %7.3f ms  fwd+bwd %7.3f ms (%5.1f TFLOP/s)\n",
              row.name.c_str(), row.fwd, fl / (row.fwd * 1e-3) / 1e12, row.bwd, row.fb,
              3.5 * fl / (row.fb * 1e-3) / 1e12);
  std::fflush(stdout);

  if (variants && s.dtype == DType::f32 && s.d == 64) {
    for (int vfb = 0; vfb < std::max(lc::kLocalAttentionForwardVariants, lc::kLocalAttentionBackwardVariants);
         ++vfb) {
      const int vf = std::min(vfb, lc::kLocalAttentionForwardVariants - 1);
      const int vb = std::min(vfb, lc::kLocalAttentionBackwardVariants - 1);
      lc::set_local_attention_variants(vf, vb);
      const double tf = time_ms(stream, 3, iters, [&](int) { lc::local_attention_forward(p, stream); });
      const double tb =
          time_ms(stream, 3, iters, [&](int) { lc::local_attention_backward(p, ws.data_ptr(), wsb, stream); });
      std::printf("  %-44s   variant %d: fwd %7.3f ms  bwd %7.3f ms\n", row.name.c_str(), vfb, tf, tb);
      std::fflush(stdout);
    }
    lc::set_local_attention_variants(-1, -1);
  }

  // ---- the op (tensors, autograd), fused and reference
  auto op_times = [&](bool fused, double& tf, double& tfb, std::vector<Tensor>* res) {
    LocalAttentionOptions o = opt;
    o.fused = fused;
    Tensor qg = q.detach().requires_grad_(), kg = k.detach().requires_grad_(), vg = v.detach().requires_grad_();
    const int it = fused ? iters : std::max(3, iters / 2);
    tf = time_ms(stream, 2, it, [&](int) {
      NoGradGuard ng;
      local_attention(qg, kg, vg, {}, o);
    });
    tfb = time_ms(stream, 2, it, [&](int) {
      qg.zero_grad(), kg.zero_grad(), vg.zero_grad();
      local_attention(qg, kg, vg, {}, o).backward(G);
    });
    if (res) {
      qg.zero_grad(), kg.zero_grad(), vg.zero_grad();
      Tensor o1 = local_attention(qg, kg, vg, {}, o);
      o1.backward(G);
      *res = {o1.detach(), qg.grad(), kg.grad(), vg.grad()};
    }
  };
  std::vector<Tensor> rf, rr;
  op_times(true, row.op_fwd, row.op_fb, &rf);
  std::printf("  %-44s op      fwd %7.3f ms  fwd+bwd %7.3f ms\n", row.name.c_str(), row.op_fwd, row.op_fb);
  std::fflush(stdout);
  if (reference) {
    op_times(false, row.ref_fwd, row.ref_fb, &rr);
    for (int i = 0; i < 4; ++i) row.err[i] = rel_err(rf[i], rr[i]);
    std::printf("  %-44s reference fwd %7.3f ms  fwd+bwd %7.3f ms  (fused vs reference rel err out %.1e dq %.1e "
                "dk %.1e dv %.1e)\n",
                row.name.c_str(), row.ref_fwd, row.ref_fb, row.err[0], row.err[1], row.err[2], row.err[3]);
    std::fflush(stdout);
  }
  return row;
}

// The dense flash kernel on 2x8x8192x8192x64 f32 (TF32): fwd+bwd ms.
double dense_fb_ms(int iters, cudaStream_t stream, double& pairs) {
  const Device gpu = Device::cuda(0);
  const int64_t B = 2, H = 8, N = 8192, d = 64;
  Generator g(11);
  Tensor q = randn({B, H, N, d}, g).to(gpu), k = randn({B, H, N, d}, g).to(gpu), v = randn({B, H, N, d}, g).to(gpu),
         G = randn({B, H, N, d}, g).to(gpu);
  Tensor o = empty_like(q), lse = empty({B, H, N}, {.device = gpu}), dq = empty_like(q), dk = empty_like(q),
         dv = empty_like(q);
  kernels::FlashAttentionParams p;
  p.dtype = DType::f32;
  p.B = B, p.H = H, p.Nq = N, p.Nk = N, p.d = d, p.scale = 1.0 / std::sqrt(double(d));
  p.q = q.data_ptr(), p.k = k.data_ptr(), p.v = v.data_ptr(), p.out = o.data_ptr(), p.lse = lse.data_ptr();
  p.dout = G.data_ptr(), p.dq = dq.data_ptr(), p.dk = dk.data_ptr(), p.dv = dv.data_ptr();
  p.q_stride = p.k_stride = p.v_stride = p.out_stride = p.dout_stride = p.dq_stride = p.dk_stride = p.dv_stride =
      kernels::strides_bhnd(H, N, d);
  const size_t wsb = lc::flash_attention_backward_workspace_bytes(p);
  Tensor ws = empty({int64_t(wsb) + 1}, {.dtype = DType::b8, .device = gpu});
  pairs = double(B * H) * double(N) * double(N);
  return time_ms(stream, 2, iters, [&](int) {
    lc::flash_attention_forward(p, nullptr, 0, stream);
    lc::flash_attention_backward(p, ws.data_ptr(), wsb, stream);
  });
}

}  // namespace

LocalAttentionBenchResult bench_local_attention_shape(const LocalAttentionBenchSpec& spec, int iters, bool reference,
                                                      bool variants) {
  return run_shape(spec, iters, reference, variants, cuda::current_stream(0));
}

int bench_local_attention(int argc, char** argv) {
  int iters = 20;
  bool reference = true, dense = true, variants = false;
  std::string only;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--iters" && i + 1 < argc) iters = std::max(3, std::atoi(argv[++i]));
    else if (a == "--only" && i + 1 < argc) only = argv[++i];
    else if (a == "--no-reference") reference = false;
    else if (a == "--no-dense") dense = false;
    else if (a == "--variants") variants = true;
    else {
      std::fprintf(stderr,
                   "usage: bench local_attention [--iters N] [--only TEXT] [--no-reference] [--no-dense] [--variants]\n");
      return 2;
    }
  }
  if (!cuda_available()) {
    std::printf("bench local_attention: no CUDA device\n");
    return 0;
  }
  const cudaDeviceProp& prop = cuda::device_properties(0);
  std::printf("local attention benchmark on %s (%d SMs)\n", prop.name, prop.multiProcessorCount);
  cudaStream_t stream = cuda::current_stream(0);
  const LocalAttentionBenchSpec shapes[] = {
      {"non-causal exact w=64 look 1/1 2x8x32768x64", 2, 8, 32768, 64, 64, 1, 1, false, true, DType::f32, 3.0},
      {"causal w=128 look 1/0 2x8x8192x64", 2, 8, 8192, 64, 128, 1, 0, true, false, DType::f32, 0},
      {"non-causal exact w=64 look 1/1 2x8x32768x64", 2, 8, 32768, 64, 64, 1, 1, false, true, DType::bf16, 0},
      {"causal w=128 look 1/0 2x8x8192x64", 2, 8, 8192, 64, 128, 1, 0, true, false, DType::bf16, 0},
  };
  std::vector<Row> rows;
  for (const LocalAttentionBenchSpec& s : shapes) {
    const std::string tag = std::string(s.name) + " " + dtype_name(s.dtype);
    if (!only.empty() && tag.find(only) == std::string::npos) continue;
    rows.push_back(run_shape(s, iters, reference, variants, stream));
  }
  // The same kernels with every key in the band (window = N = 1024, no
  // look-around: one window), at the heavy shape's size: their per-pair cost
  // without band edges.
  double band_dense_ps = 0;
  if (dense) {
    const LocalAttentionBenchSpec s{"all keys in the band: w=N=1024 look 0/0 2x8x1024x64", 2, 8, 1024, 64, 1024, 0, 0,
                                    false, false, DType::f32, 0};
    const Row r = run_shape(s, iters, false, false, stream);
    band_dense_ps = r.fb * 1e9 / r.pairs;
    std::printf("  local kernels with all keys in the band, 2x8x1024x64 f32/tf32: fwd+bwd %.3f ms = %.2f ps per pair\n",
                r.fb, band_dense_ps);
  }
  double dense_ms = 0, dense_pairs = 0;
  if (dense) {
    dense_ms = dense_fb_ms(std::max(3, iters / 2), stream, dense_pairs);
    std::printf("  dense flash kernel 2x8x8192x8192x64 f32/tf32: fwd+bwd %.3f ms = %.2f ps per pair\n", dense_ms,
                dense_ms * 1e9 / dense_pairs);
  }

  std::printf("\n%-50s %7s %8s %8s %8s %8s %8s %8s %8s %9s %9s %8s %8s\n", "shape dtype", "keys/q", "fwd ms", "bwd ms",
              "f+b ms", "TFLOP/s", "ps/pair", "x dense", "x band", "op f+b", "ref f+b", "target", "status");
  for (const Row& r : rows) {
    const double fl = 3.5 * 4.0 * double(r.d) * r.pairs;
    const double ps = r.fb * 1e9 / r.pairs;
    char xd[16] = "-", xb[16] = "-", tgt[16] = "-", ref[16] = "-";
    if (dense_ms > 0) std::snprintf(xd, sizeof xd, "%.2f", ps / (dense_ms * 1e9 / dense_pairs));
    if (band_dense_ps > 0) std::snprintf(xb, sizeof xb, "%.2f", ps / band_dense_ps);
    if (r.target > 0) std::snprintf(tgt, sizeof tgt, "%.2f", r.target);
    if (r.ref_fb > 0) std::snprintf(ref, sizeof ref, "%.3f", r.ref_fb);
    const bool dense_ok = dense_ms <= 0 || ps <= 1.5 * dense_ms * 1e9 / dense_pairs;
    std::string status = r.target > 0 ? (r.fb <= r.target ? "met" : "MISSED") : "";
    if (r.target > 0 && dense_ms > 0) status += dense_ok ? "/1.5x dense met" : "/1.5x dense MISSED";
    if (r.target > 0 && band_dense_ps > 0) status += ps <= 1.5 * band_dense_ps ? "/1.5x band met" : "/1.5x band MISSED";
    std::printf("%-50s %7.1f %8.3f %8.3f %8.3f %8.1f %8.2f %8s %8s %9.3f %9s %8s %8s\n", r.name.c_str(),
                r.pairs / r.queries, r.fwd, r.bwd, r.fb, fl / (r.fb * 1e-3) / 1e12, ps, xd, xb, r.op_fb, ref, tgt,
                status.c_str());
  }
  return 0;
}

#else  // !COLT5_WITH_CUDA

int bench_local_attention(int, char**) {
  std::printf("bench local_attention: colt5 was built without CUDA; nothing to measure\n");
  return 0;
}

#endif
