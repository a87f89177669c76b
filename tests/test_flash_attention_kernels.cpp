// CPU flash-attention kernels vs a naive f64 attention written plainly here
// (full score matrix, explicit softmax, explicit gradient formulas), plus f64
// finite-difference gradient checks of the kernel itself.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "kernels/cpu/flash_attention.h"

using colt5::DType;
using colt5::kernels::AttnStrides;
using colt5::kernels::FlashAttentionParams;
namespace fa = colt5::kernels::cpu;

namespace {

struct Case {
  int64_t B = 2, H = 3, Nq = 7, Nk = 9, d = 8;
  bool causal = false;
  int mask_mode = 0;  // 0 none, 1 (B, Nk) broadcast over heads, 2 (B, H, Nk)
  bool null_kv = false;
  bool strided = false;      // operands as (B, N, H, d+pad) buffers viewed as (B, H, N, d)
  bool masked_batch = false;  // batch 0's mask is all zeros (fully masked rows)
  double scale = 0;          // 0 -> 1/sqrt(d)
};

// A (B, H, N, d) operand in a buffer whose layout depends on `strided`.
struct Operand {
  std::vector<double> buf;
  AttnStrides st;
  int64_t B, H, N, d;
  Operand(int64_t B_, int64_t H_, int64_t N_, int64_t d_, bool strided) : B(B_), H(H_), N(N_), d(d_) {
    if (strided) {
      const int64_t dp = d + 3;  // padded rows: row stride != d
      st = {N * H * dp, dp, H * dp};
      buf.assign(B * N * H * dp, std::numeric_limits<double>::quiet_NaN());
    } else {
      st = colt5::kernels::strides_bhnd(H, N, d);
      buf.assign(B * H * N * d, std::numeric_limits<double>::quiet_NaN());
    }
  }
  double& at(int64_t b, int64_t h, int64_t n, int64_t c) { return buf[b * st.b + h * st.h + n * st.n + c]; }
  double at(int64_t b, int64_t h, int64_t n, int64_t c) const { return buf[b * st.b + h * st.h + n * st.n + c]; }
  void randomize(std::mt19937& rng, double sd = 1.0) {
    std::normal_distribution<double> nd(0.0, sd);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t n = 0; n < N; ++n)
          for (int64_t c = 0; c < d; ++c) at(b, h, n, c) = nd(rng);
  }
};

struct Problem {
  Case cs;
  double scale;
  Operand q, k, v, dout;
  std::vector<double> nk, nv;     // (H, d)
  std::vector<uint8_t> mask;      // (B, Nk) or (B, H, Nk)
  int64_t msb = 0, msh = 0;
  Problem(const Case& c, uint32_t seed)
      : cs(c),
        scale(c.scale != 0 ? c.scale : 1.0 / std::sqrt(double(c.d))),
        q(c.B, c.H, c.Nq, c.d, c.strided),
        k(c.B, c.H, c.Nk, c.d, c.strided),
        v(c.B, c.H, c.Nk, c.d, c.strided),
        dout(c.B, c.H, c.Nq, c.d, c.strided) {
    std::mt19937 rng(seed);
    q.randomize(rng, 1.5);  // larger logits: a peaked softmax tests the max tracking
    k.randomize(rng);
    v.randomize(rng);
    dout.randomize(rng);
    std::normal_distribution<double> nd(0.0, 1.0);
    if (c.null_kv) {
      nk.resize(c.H * c.d);
      nv.resize(c.H * c.d);
      for (auto& x : nk) x = nd(rng);
      for (auto& x : nv) x = nd(rng);
    }
    if (c.mask_mode) {
      const int64_t per_b = c.mask_mode == 1 ? c.Nk : c.H * c.Nk;
      mask.resize(c.B * per_b);
      std::bernoulli_distribution keep(0.7);
      for (auto& m : mask) m = keep(rng) ? 1 : 0;
      if (c.masked_batch)
        for (int64_t i = 0; i < per_b; ++i) mask[i] = 0;
      msb = per_b;
      msh = c.mask_mode == 1 ? 0 : c.Nk;
    }
  }
  bool visible(int64_t b, int64_t h, int64_t i, int64_t j) const {
    if (!mask.empty() && !mask[b * msb + h * msh + j]) return false;
    if (cs.causal && j > i + (cs.Nk - cs.Nq)) return false;
    return true;
  }
};

// Naive f64 attention: materialises every score row, then the gradients by
// the textbook formulas.
struct Reference {
  std::vector<double> out, lse, dq, dk, dv, dnk, dnv;  // contiguous (B, H, N, d) / (B, H, Nq) / (H, d)
};

Reference naive(const Problem& P) {
  const Case& c = P.cs;
  const int64_t B = c.B, H = c.H, Nq = c.Nq, Nk = c.Nk, d = c.d;
  Reference R;
  R.out.assign(B * H * Nq * d, 0);
  R.lse.assign(B * H * Nq, 0);
  R.dq.assign(B * H * Nq * d, 0);
  R.dk.assign(B * H * Nk * d, 0);
  R.dv.assign(B * H * Nk * d, 0);
  R.dnk.assign(H * d, 0);
  R.dnv.assign(H * d, 0);
  const bool has_null = c.null_kv;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < Nq; ++i) {
        // Key list: index -1 is the null key.
        std::vector<int64_t> keys;
        if (has_null) keys.push_back(-1);
        for (int64_t j = 0; j < Nk; ++j)
          if (P.visible(b, h, i, j)) keys.push_back(j);
        const int64_t oi = ((b * H + h) * Nq + i);
        if (keys.empty()) {
          R.lse[oi] = -std::numeric_limits<double>::infinity();
          continue;  // out, grads stay 0
        }
        auto kc = [&](int64_t j, int64_t ch) { return j < 0 ? P.nk[h * d + ch] : P.k.at(b, h, j, ch); };
        auto vc = [&](int64_t j, int64_t ch) { return j < 0 ? P.nv[h * d + ch] : P.v.at(b, h, j, ch); };
        std::vector<double> s(keys.size()), p(keys.size());
        double mx = -std::numeric_limits<double>::infinity();
        for (size_t n = 0; n < keys.size(); ++n) {
          double acc = 0;
          for (int64_t ch = 0; ch < d; ++ch) acc += P.q.at(b, h, i, ch) * kc(keys[n], ch);
          s[n] = P.scale * acc;
          mx = std::max(mx, s[n]);
        }
        double sum = 0;
        for (size_t n = 0; n < keys.size(); ++n) sum += std::exp(s[n] - mx);
        for (size_t n = 0; n < keys.size(); ++n) p[n] = std::exp(s[n] - mx) / sum;
        R.lse[oi] = mx + std::log(sum);
        for (int64_t ch = 0; ch < d; ++ch) {
          double o = 0;
          for (size_t n = 0; n < keys.size(); ++n) o += p[n] * vc(keys[n], ch);
          R.out[oi * d + ch] = o;
        }
        // Gradients of sum(out * dout).
        std::vector<double> dp(keys.size());
        double D = 0;
        for (size_t n = 0; n < keys.size(); ++n) {
          double acc = 0;
          for (int64_t ch = 0; ch < d; ++ch) acc += P.dout.at(b, h, i, ch) * vc(keys[n], ch);
          dp[n] = acc;
          D += p[n] * acc;
        }
        for (size_t n = 0; n < keys.size(); ++n) {
          const double ds = p[n] * (dp[n] - D);
          const int64_t j = keys[n];
          for (int64_t ch = 0; ch < d; ++ch) {
            R.dq[oi * d + ch] += P.scale * ds * kc(j, ch);
            const double gk = P.scale * ds * P.q.at(b, h, i, ch);
            const double gv = p[n] * P.dout.at(b, h, i, ch);
            if (j < 0) {
              R.dnk[h * d + ch] += gk;
              R.dnv[h * d + ch] += gv;
            } else {
              R.dk[((b * H + h) * Nk + j) * d + ch] += gk;
              R.dv[((b * H + h) * Nk + j) * d + ch] += gv;
            }
          }
        }
      }
  return R;
}

// Runs the CPU kernels in precision T on the problem's data; results are
// copied out as contiguous double vectors (same layout as Reference).
template <class T>
Reference run_kernel(const Problem& P) {
  const Case& c = P.cs;
  const int64_t B = c.B, H = c.H, Nq = c.Nq, Nk = c.Nk, d = c.d;
  auto cast = [](const std::vector<double>& x) { return std::vector<T>(x.begin(), x.end()); };
  const T nan = std::numeric_limits<T>::quiet_NaN();
  std::vector<T> q = cast(P.q.buf), k = cast(P.k.buf), v = cast(P.v.buf), dout = cast(P.dout.buf);
  std::vector<T> nk = cast(P.nk), nv = cast(P.nv);
  // Outputs poisoned with NaN: every logical element must be written.
  std::vector<T> out(P.q.buf.size(), nan), dq(P.q.buf.size(), nan), dk(P.k.buf.size(), nan),
      dv(P.v.buf.size(), nan), lse(B * H * Nq, nan), dnk(H * d, nan), dnv(H * d, nan);

  FlashAttentionParams p;
  p.dtype = colt5::dtype_of<T>::value;
  p.B = B, p.H = H, p.Nq = Nq, p.Nk = Nk, p.d = d;
  p.scale = P.scale;
  p.causal = c.causal;
  p.q = q.data(), p.q_stride = P.q.st;
  p.k = k.data(), p.k_stride = P.k.st;
  p.v = v.data(), p.v_stride = P.v.st;
  if (!P.mask.empty()) p.mask = P.mask.data(), p.mask_stride_b = P.msb, p.mask_stride_h = P.msh;
  if (c.null_kv) p.null_k = nk.data(), p.null_v = nv.data();
  p.out = out.data(), p.out_stride = P.q.st;
  p.lse = lse.data();
  fa::flash_attention_forward(p);
  p.dout = dout.data(), p.dout_stride = P.dout.st;
  p.dq = dq.data(), p.dq_stride = P.q.st;
  p.dk = dk.data(), p.dk_stride = P.k.st;
  p.dv = dv.data(), p.dv_stride = P.v.st;
  if (c.null_kv) p.dnull_k = dnk.data(), p.dnull_v = dnv.data();
  fa::flash_attention_backward(p);

  Reference R;
  auto gather = [&](const std::vector<T>& buf, const AttnStrides& st, int64_t N) {
    std::vector<double> r(B * H * N * d);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t n = 0; n < N; ++n)
          for (int64_t ch = 0; ch < d; ++ch)
            r[((b * H + h) * N + n) * d + ch] = buf[b * st.b + h * st.h + n * st.n + ch];
    return r;
  };
  R.out = gather(out, P.q.st, Nq);
  R.dq = gather(dq, P.q.st, Nq);
  R.dk = gather(dk, P.k.st, Nk);
  R.dv = gather(dv, P.v.st, Nk);
  R.lse.assign(lse.begin(), lse.end());
  if (c.null_kv) {
    R.dnk.assign(dnk.begin(), dnk.end());
    R.dnv.assign(dnv.begin(), dnv.end());
  } else {
    R.dnk.assign(H * d, 0);
    R.dnv.assign(H * d, 0);
  }
  return R;
}

// ||a - b|| / max(||b||, tiny); NaN anywhere fails.
double rel_err(const std::vector<double>& a, const std::vector<double>& b) {
  REQUIRE(a.size() == b.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isinf(b[i]) && a[i] == b[i]) continue;  // lse = -inf on fully masked rows
    if (!std::isfinite(a[i])) return std::numeric_limits<double>::infinity();
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
}

void compare(const Reference& got, const Reference& ref, double tol) {
  CHECK(rel_err(got.out, ref.out) <= tol);
  CHECK(rel_err(got.lse, ref.lse) <= tol);
  CHECK(rel_err(got.dq, ref.dq) <= tol);
  CHECK(rel_err(got.dk, ref.dk) <= tol);
  CHECK(rel_err(got.dv, ref.dv) <= tol);
  CHECK(rel_err(got.dnk, ref.dnk) <= tol);
  CHECK(rel_err(got.dnv, ref.dnv) <= tol);
}

std::vector<Case> cases() {
  std::vector<Case> cs;
  auto add = [&](Case c) { cs.push_back(c); };
  add({});                                                        // plain
  add({.B = 1, .H = 2, .Nq = 37, .Nk = 101, .d = 16});            // odd lengths, several key tiles
  add({.B = 2, .H = 2, .Nq = 70, .Nk = 45, .d = 5});              // Nq > Nk, odd d, several query tiles
  add({.B = 2, .H = 3, .Nq = 33, .Nk = 70, .d = 8, .mask_mode = 1});
  add({.B = 2, .H = 3, .Nq = 33, .Nk = 70, .d = 8, .mask_mode = 2});
  add({.B = 2, .H = 2, .Nq = 19, .Nk = 67, .d = 8, .mask_mode = 2, .masked_batch = true});  // fully masked rows
  add({.B = 2, .H = 2, .Nq = 19, .Nk = 67, .d = 8, .mask_mode = 1, .null_kv = true, .masked_batch = true});
  add({.B = 2, .H = 2, .Nq = 40, .Nk = 40, .d = 8, .causal = true});
  add({.B = 2, .H = 2, .Nq = 23, .Nk = 90, .d = 8, .causal = true});               // Nq < Nk, bottom-right
  add({.B = 1, .H = 2, .Nq = 90, .Nk = 23, .d = 8, .causal = true});               // Nq > Nk: early rows see nothing
  add({.B = 1, .H = 2, .Nq = 90, .Nk = 23, .d = 8, .causal = true, .null_kv = true});
  add({.B = 2, .H = 3, .Nq = 35, .Nk = 77, .d = 12, .causal = true, .mask_mode = 2, .null_kv = true,
       .strided = true});
  add({.B = 2, .H = 2, .Nq = 65, .Nk = 130, .d = 8, .null_kv = true, .strided = true, .scale = -0.4});
  add({.B = 1, .H = 1, .Nq = 5, .Nk = 0, .d = 4, .null_kv = true});  // only the null key
  add({.B = 1, .H = 1, .Nq = 5, .Nk = 0, .d = 4});                   // no key at all
  return cs;
}

}  // namespace

TEST_CASE("cpu flash attention f64 matches naive attention (forward and all gradients)") {
  uint32_t seed = 1;
  for (const Case& c : cases()) {
    INFO("B=", c.B, " H=", c.H, " Nq=", c.Nq, " Nk=", c.Nk, " d=", c.d, " causal=", c.causal,
         " mask=", c.mask_mode, " null=", c.null_kv, " strided=", c.strided, " masked_batch=", c.masked_batch);
    Problem P(c, seed++);
    compare(run_kernel<double>(P), naive(P), 1e-12);
  }
}

TEST_CASE("cpu flash attention f32 matches naive f64 attention within 2e-5") {
  uint32_t seed = 100;
  for (const Case& c : cases()) {
    INFO("Nq=", c.Nq, " Nk=", c.Nk, " d=", c.d, " causal=", c.causal, " mask=", c.mask_mode, " null=", c.null_kv);
    Problem P(c, seed++);
    compare(run_kernel<float>(P), naive(P), 2e-5);
  }
}

TEST_CASE("cpu flash attention: fully masked rows give zeros, -inf lse and zero gradients") {
  Case c{.B = 2, .H = 2, .Nq = 9, .Nk = 13, .d = 4, .mask_mode = 1, .masked_batch = true};
  Problem P(c, 7);
  Reference R = run_kernel<double>(P);
  for (int64_t h = 0; h < c.H; ++h)
    for (int64_t i = 0; i < c.Nq; ++i) {
      CHECK(R.lse[h * c.Nq + i] == -std::numeric_limits<double>::infinity());
      for (int64_t ch = 0; ch < c.d; ++ch) {
        CHECK(R.out[(h * c.Nq + i) * c.d + ch] == 0.0);
        CHECK(R.dq[(h * c.Nq + i) * c.d + ch] == 0.0);
      }
    }
  for (int64_t x = 0; x < c.H * c.Nk * c.d; ++x) {  // batch 0's keys get nothing
    CHECK(R.dk[x] == 0.0);
    CHECK(R.dv[x] == 0.0);
  }
}

// Finite differences of L = sum(out * dout) through the f64 forward kernel.
TEST_CASE("cpu flash attention f64 gradcheck (finite differences)") {
  for (bool causal : {false, true}) {
    Case c{.B = 1, .H = 2, .Nq = 5, .Nk = 7, .d = 3, .causal = causal, .mask_mode = 2, .null_kv = true,
           .strided = true};
    Problem P(c, 42);
    const Reference R = run_kernel<double>(P);
    auto loss = [&](Problem& Q) {
      Reference o = run_kernel<double>(Q);  // forward output used; backward is unused here
      double L = 0;
      for (int64_t b = 0; b < c.B; ++b)
        for (int64_t h = 0; h < c.H; ++h)
          for (int64_t i = 0; i < c.Nq; ++i)
            for (int64_t ch = 0; ch < c.d; ++ch)
              L += o.out[((b * c.H + h) * c.Nq + i) * c.d + ch] * Q.dout.at(b, h, i, ch);
      return L;
    };
    const double eps = 1e-6;
    auto fd = [&](double& x) {
      const double x0 = x;
      x = x0 + eps;
      const double lp = loss(P);
      x = x0 - eps;
      const double lm = loss(P);
      x = x0;
      return (lp - lm) / (2 * eps);
    };
    for (int64_t h = 0; h < c.H; ++h)
      for (int64_t n = 0; n < std::max(c.Nq, c.Nk); ++n)
        for (int64_t ch = 0; ch < c.d; ++ch) {
          if (n < c.Nq) CHECK(fd(P.q.at(0, h, n, ch)) == doctest::Approx(R.dq[(h * c.Nq + n) * c.d + ch]).epsilon(1e-6));
          if (n < c.Nk) {
            CHECK(fd(P.k.at(0, h, n, ch)) == doctest::Approx(R.dk[(h * c.Nk + n) * c.d + ch]).epsilon(1e-6));
            CHECK(fd(P.v.at(0, h, n, ch)) == doctest::Approx(R.dv[(h * c.Nk + n) * c.d + ch]).epsilon(1e-6));
          }
        }
    for (int64_t x = 0; x < c.H * c.d; ++x) {
      CHECK(fd(P.nk[x]) == doctest::Approx(R.dnk[x]).epsilon(1e-6));
      CHECK(fd(P.nv[x]) == doctest::Approx(R.dnv[x]).epsilon(1e-6));
    }
  }
}

TEST_CASE("cpu flash attention rejects bad arguments with a message") {
  std::vector<float> buf(64, 0.f), lse(4);
  FlashAttentionParams p;
  p.B = 1, p.H = 1, p.Nq = 2, p.Nk = 2, p.d = 0, p.scale = 1;
  p.q = p.k = p.v = buf.data();
  p.out = buf.data();
  p.lse = lse.data();
  CHECK_THROWS_WITH_AS(fa::flash_attention_forward(p), doctest::Contains("d=0"), colt5::Error);
  p.d = 4;
  p.q_stride = p.k_stride = p.v_stride = p.out_stride = colt5::kernels::strides_bhnd(1, 2, 4);
  p.dtype = DType::bf16;
  CHECK_THROWS_WITH_AS(fa::flash_attention_forward(p), doctest::Contains("bf16"), colt5::Error);
  p.dtype = DType::f32;
  p.null_k = buf.data();
  CHECK_THROWS_WITH_AS(fa::flash_attention_forward(p), doctest::Contains("null_k and null_v"), colt5::Error);
  p.null_k = nullptr;
  p.Nk = -1;
  CHECK_THROWS_WITH_AS(fa::flash_attention_forward(p), doctest::Contains("Nk=-1"), colt5::Error);
}
