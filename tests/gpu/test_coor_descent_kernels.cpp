// CUDA coordinate-descent kernels (kernels/cuda/coor_descent.h) against the
// CPU kernel (itself checked against the SPEC loop in tests/test_coor_descent_kernels.cpp)
// on identical f32 inputs, for every launch path.
//
// Tolerances (f32; the CPU f64 kernel on the same inputs is printed beside as
// the accuracy yardstick):
//   out  max |gpu - cpu| <= 2e-5 absolute (entries are in [0, 1]); 1e-4 when the
//        final eps is below 0.1 (exp(x / 0.03) turns float rounding of x into
//        ~3e-6·|x| relative error, and CPU f32 vs f64 differ by up to 5e-5 there)
//   ds   max |gpu - cpu| <= 1e-5 · sum_i |dout_i| out_i / e_{T+1}  (the row's
//        gradient scale: ds is a difference of terms of that size)
//   dk   |gpu - cpu| <= 1e-5 · that scale · Q / k
#include <doctest/doctest.h>

#ifdef COLT5_WITH_CUDA
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "engine/error.h"
#include "kernels/cpu/coor_descent.h"
#include "kernels/cuda/coor_descent.h"

using colt5::kernels::CoorDescentParams;
namespace kcpu = colt5::kernels::cpu;
namespace kcuda = colt5::kernels::cuda;
using kcuda::CoorDescentLaunch;
using kcuda::CoorDescentPath;

namespace {

#define TCUDA(call) REQUIRE((call) == cudaSuccess)

template <class T>
struct DevBuf {
  T* p = nullptr;
  size_t n = 0;
  explicit DevBuf(size_t n_) : n(n_) {
    if (n) TCUDA(cudaMalloc(reinterpret_cast<void**>(&p), n * sizeof(T)));
  }
  ~DevBuf() {
    if (p) cudaFree(p);
  }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  void upload(const std::vector<T>& h) { TCUDA(cudaMemcpy(p, h.data(), n * sizeof(T), cudaMemcpyHostToDevice)); }
  std::vector<T> download() const {
    std::vector<T> h(n);
    if (n) TCUDA(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }
  void poison() {
    if (n) TCUDA(cudaMemset(p, 0xff, n * sizeof(T)));  // NaN for floats
  }
};

struct Case {
  CoorDescentParams p;
  std::vector<float> s, k, g;
  std::vector<uint8_t> mask;  // empty: none
  bool k_null = false;
};

// Rows cycle through: 1/16 masked, plain (all kept), fully masked, k > kept count.
Case make_case(int64_t rows, int64_t n, int setting, uint32_t seed) {
  Case c;
  c.p.rows = rows;
  c.p.n = n;
  switch (setting) {
    case 0:  // router defaults
      c.p.n_iters = 20;
      c.p.eps = 0.03;
      c.p.eps_init = 4;
      c.p.eps_decay = 0.7;
      break;
    case 1:  // paper
      c.p.n_iters = 50;
      c.p.eps = 1;
      break;
    case 2:
      c.p.n_iters = 1;
      c.p.eps = 0.1;
      break;
    default:
      c.p.n_iters = 2;
      c.p.eps = 0.1;
      break;
  }
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd;
  std::uniform_int_distribution<int> u16(0, 15);
  const size_t N = size_t(rows * n);
  c.s.resize(N);
  c.g.resize(N);
  for (auto& v : c.s) v = nd(rng);
  for (auto& v : c.g) v = nd(rng);
  c.mask.assign(N, 1);
  c.k.resize(size_t(rows));
  for (int64_t r = 0; r < rows; ++r) {
    int64_t kept = 0;
    for (int64_t i = 0; i < n; ++i) {
      uint8_t& m = c.mask[size_t(r * n + i)];
      switch (r % 4) {
        case 0: m = u16(rng) == 0 ? 0 : 1; break;
        case 1: m = 1; break;
        case 2: m = 0; break;
        default: m = u16(rng) < 4 ? 0 : 1; break;
      }
      kept += m;
    }
    const double kb = std::max(0.5, double(n) / 8 * 9 / 8) * (1 + 0.1 * double(r % 3));
    c.k[size_t(r)] = float(r % 4 == 3 ? double(kept) + 1.5 : kb);
  }
  return c;
}

struct Out {
  std::vector<double> out, saved, ds, dk;
};

template <class T>
Out run_cpu(const Case& c) {
  const auto& p = c.p;
  const size_t N = size_t(p.rows * p.n);
  std::vector<T> s(c.s.begin(), c.s.end()), k(c.k.begin(), c.k.end()), g(c.g.begin(), c.g.end());
  std::vector<T> out(N), saved(size_t(colt5::kernels::coor_descent_saved_size(p))), ds(N), dk(size_t(p.rows));
  const uint8_t* m = c.mask.empty() ? nullptr : c.mask.data();
  const T* kp = c.k_null ? nullptr : k.data();
  kcpu::coor_descent_forward<T>(p, s.data(), m, kp, out.data(), saved.data());
  kcpu::coor_descent_backward<T>(p, s.data(), m, kp, out.data(), saved.data(), g.data(), ds.data(), dk.data());
  return Out{{out.begin(), out.end()}, {saved.begin(), saved.end()}, {ds.begin(), ds.end()}, {dk.begin(), dk.end()}};
}

Out run_gpu(const Case& c, const CoorDescentLaunch& L) {
  const auto& p = c.p;
  const size_t N = size_t(p.rows * p.n);
  DevBuf<float> s(N), k(size_t(p.rows)), g(N), out(N), saved(size_t(colt5::kernels::coor_descent_saved_size(p))),
      ds(N), dk(size_t(p.rows));
  DevBuf<uint8_t> m(c.mask.empty() ? 0 : N);
  DevBuf<unsigned char> ws(kcuda::coor_descent_workspace_bytes(p, L));
  s.upload(c.s);
  k.upload(c.k);
  g.upload(c.g);
  if (!c.mask.empty()) m.upload(c.mask);
  out.poison();
  saved.poison();
  ds.poison();
  dk.poison();
  kcuda::coor_descent_forward(p, s.p, c.mask.empty() ? nullptr : m.p, c.k_null ? nullptr : k.p, out.p, saved.p, ws.p,
                              nullptr, L);
  kcuda::coor_descent_backward(p, s.p, c.mask.empty() ? nullptr : m.p, c.k_null ? nullptr : k.p, out.p, saved.p, g.p,
                               ds.p, dk.p, ws.p, nullptr);
  TCUDA(cudaDeviceSynchronize());
  TCUDA(cudaGetLastError());
  auto cv = [](const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); };
  return Out{cv(out.download()), cv(saved.download()), cv(ds.download()), cv(dk.download())};
}

double final_eps(const CoorDescentParams& p) {
  double e = colt5::kernels::coor_descent_eps_first(p);
  for (int t = 0; t < p.n_iters; ++t) e = colt5::kernels::coor_descent_eps_next(p, e);
  return e;
}

struct Errs {
  double out = 0, ds = 0, dk = 0;  // in units of the tolerances' scales
  bool finite = true;
};

// max errors of x against y, ds and dk normalised by the row's gradient scale (from y)
Errs compare(const Case& c, const Out& x, const Out& y) {
  Errs e;
  const auto& p = c.p;
  const double ef = final_eps(p);
  const int64_t W = colt5::kernels::coor_descent_saved_per_row(p);
  for (int64_t r = 0; r < p.rows; ++r) {
    double gs = 0;
    for (int64_t i = r * p.n; i < (r + 1) * p.n; ++i) {
      const size_t j = size_t(i);
      e.finite = e.finite && std::isfinite(x.out[j]) && std::isfinite(x.ds[j]);
      gs += std::abs(double(c.g[j])) * y.out[j] / ef;
      e.out = std::max(e.out, std::abs(x.out[j] - y.out[j]));
    }
    double dsm = 0;
    for (int64_t i = r * p.n; i < (r + 1) * p.n; ++i) dsm = std::max(dsm, std::abs(x.ds[size_t(i)] - y.ds[size_t(i)]));
    const double Q = y.saved[size_t(r * W + 3 * p.n_iters + 1)];
    const double kr = c.k_null ? p.k_scalar : double(c.k[size_t(r)]);
    e.finite = e.finite && std::isfinite(x.dk[size_t(r)]);
    e.ds = std::max(e.ds, gs > 0 ? dsm / gs : dsm * 1e30);
    const double dks = gs * Q / kr;
    const double dkd = std::abs(x.dk[size_t(r)] - y.dk[size_t(r)]);
    e.dk = std::max(e.dk, dks > 0 ? dkd / dks : dkd * 1e30);
  }
  return e;
}

std::string path_name(const CoorDescentLaunch& L) {
  switch (L.path) {
    case CoorDescentPath::automatic: return "auto";
    case CoorDescentPath::cluster: return "cluster" + std::to_string(L.blocks_per_row);
    case CoorDescentPath::grid: return "grid" + std::to_string(L.blocks_per_row);
    case CoorDescentPath::grid_stream: return "stream" + std::to_string(L.blocks_per_row);
  }
  return "?";
}

// GPU vs CPU f32 with the stated tolerances; also prints both against CPU f64.
void check_gpu(const Case& c, const CoorDescentLaunch& L, const Out& cpu32, const Out& cpu64) {
  const Out gpu = run_gpu(c, L);
  const Errs e = compare(c, gpu, cpu32);
  const Errs e64 = compare(c, gpu, cpu64);
  const Errs c64 = compare(c, cpu32, cpu64);
  const double out_tol = final_eps(c.p) < 0.1 ? 1e-4 : 2e-5;
  std::printf("  %4lldx%-8lld T=%-2d eps=%-4g %-10s %-45s | vs cpu32: out %.1e ds %.1e dk %.1e | vs cpu64: out %.1e ds %.1e "
              "dk %.1e | cpu32 vs cpu64: out %.1e ds %.1e dk %.1e\n",
              (long long)c.p.rows, (long long)c.p.n, c.p.n_iters, c.p.eps, path_name(L).c_str(),
              kcuda::coor_descent_plan(c.p, L).c_str(), e.out, e.ds, e.dk, e64.out, e64.ds, e64.dk, c64.out, c64.ds,
              c64.dk);
  CAPTURE(c.p.rows);
  CAPTURE(c.p.n);
  CAPTURE(c.p.n_iters);
  CAPTURE(path_name(L));
  CHECK(e.finite);
  CHECK(e.out <= out_tol);
  CHECK(e.ds <= 1e-5);
  CHECK(e.dk <= 1e-5);
  // masked entries are exactly zero, fully masked rows give zero dk
  bool zeros = true;
  for (size_t i = 0; i < gpu.out.size(); ++i)
    if (!c.mask.empty() && !c.mask[i]) zeros = zeros && gpu.out[i] == 0.0 && gpu.ds[i] == 0.0;
  if (!c.mask.empty())
    for (int64_t r = 2; r < c.p.rows; r += 4) zeros = zeros && gpu.dk[size_t(r)] == 0.0;
  CHECK(zeros);
}

}  // namespace

TEST_CASE("coor_descent kernels gpu: matches the CPU kernel, lengths 1..8193, all settings") {
  std::printf("coor_descent gpu vs cpu (errors: out absolute, ds/dk in units of the row's gradient scale)\n");
  for (int64_t n : {1, 7, 1000, 8193})
    for (int setting = 0; setting < 4; ++setting) {
      const Case c = make_case(4, n, setting, uint32_t(n * 10 + setting));
      const Out c32 = run_cpu<float>(c), c64 = run_cpu<double>(c);
      check_gpu(c, {}, c32, c64);
    }
}

TEST_CASE("coor_descent kernels gpu: every launch path gives the same answer") {
  const Case c = make_case(5, 8193, 0, 17);
  const Out c32 = run_cpu<float>(c), c64 = run_cpu<double>(c);
  for (int C : {1, 2, 4, 8, 16}) check_gpu(c, {CoorDescentPath::cluster, C}, c32, c64);
  for (int G : {1, 3, 9}) check_gpu(c, {CoorDescentPath::grid, G}, c32, c64);
  for (int G : {1, 5}) check_gpu(c, {CoorDescentPath::grid_stream, G}, c32, c64);
}

TEST_CASE("coor_descent kernels gpu: many rows, short and medium") {
  for (auto [rows, n] : {std::pair<int64_t, int64_t>{126, 8192}, {64, 1000}, {300, 7}}) {
    const Case c = make_case(rows, n, 0, uint32_t(rows + n));
    const Out c32 = run_cpu<float>(c), c64 = run_cpu<double>(c);
    check_gpu(c, {}, c32, c64);
  }
}

TEST_CASE("coor_descent kernels gpu: rows of 2^20 on every path that holds them") {
  const int64_t n = int64_t(1) << 20;
  for (int setting : {0, 1}) {
    const Case c = make_case(4, n, setting, 21u + uint32_t(setting));
    const Out c32 = run_cpu<float>(c), c64 = run_cpu<double>(c);
    check_gpu(c, {}, c32, c64);
    if (setting == 0) {
      check_gpu(c, {CoorDescentPath::grid, 64}, c32, c64);
      check_gpu(c, {CoorDescentPath::grid_stream, 100}, c32, c64);
    }
  }
  // 2^20 + 3 with rows that do not fit one launch together
  const Case c = make_case(3, n + 3, 0, 5);
  const Out c32 = run_cpu<float>(c), c64 = run_cpu<double>(c);
  check_gpu(c, {}, c32, c64);
}

TEST_CASE("coor_descent kernels gpu: scalar k, no mask, determinism, CPU backward on the GPU forward") {
  Case c = make_case(6, 5000, 0, 99);
  c.mask.clear();
  c.k_null = true;
  c.p.k_scalar = 600.5;
  const Out c32 = run_cpu<float>(c), c64 = run_cpu<double>(c);
  check_gpu(c, {}, c32, c64);
  const Out a = run_gpu(c, {}), b = run_gpu(c, {});
  CHECK(a.out == b.out);
  CHECK(a.saved == b.saved);
  CHECK(a.ds == b.ds);
  CHECK(a.dk == b.dk);
  // The saved layout is shared: the CPU backward on the GPU's forward agrees with the GPU backward.
  std::vector<float> s(c.s), g(c.g), out(a.out.begin(), a.out.end()), saved(a.saved.begin(), a.saved.end());
  std::vector<float> ds(s.size()), dk(size_t(c.p.rows));
  kcpu::coor_descent_backward<float>(c.p, s.data(), nullptr, nullptr, out.data(), saved.data(), g.data(), ds.data(),
                                     dk.data());
  Out x = a;
  x.ds.assign(ds.begin(), ds.end());
  x.dk.assign(dk.begin(), dk.end());
  const Errs e = compare(c, x, a);
  CHECK(e.ds <= 1e-5);
  CHECK(e.dk <= 1e-5);
}

#endif  // COLT5_WITH_CUDA
