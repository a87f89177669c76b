// Softmax and log-softmax along one dim: pointer-level CPU kernels (no
// tensors, no autograd). The readable reference for kernels/cuda/softmax.h.
//
// Layout: the input is contiguous and viewed as (outer, n, inner); the op runs
// along n, so element (o, k, i) sits at x[(o * n + k) * inner + i]. inner == 1
// is the common case (the last dim, contiguous rows); inner > 1 is a softmax
// over a middle dim without transposing (all loops then run along inner).
//
// Semantics, for one line x_0..x_{n-1}:
//   m = max_k x_k,  s = sum_k exp(x_k - m)
//   softmax_k     = exp(x_k - m) / s
//   log_softmax_k = x_k - m - log(s)
//   A line that is entirely -inf (fully masked) gives softmax 0 everywhere and
//   log_softmax -inf everywhere, never NaN; its gradient is 0. Entries that
//   are -inf in a line with some finite entry give softmax 0 / log_softmax
//   -inf as usual. A NaN anywhere in a line makes the whole line NaN (also a
//   line that is otherwise all -inf); +inf inputs give NaN (as in PyTorch).
//
// Backward (dx written, never accumulated into; y is the forward output):
//   softmax:     dx = y * (dy - sum_k dy_k y_k)
//   log_softmax: dx = dy - exp(y) * sum_k dy_k        (0 on a fully masked line)
//
// Passes (rows; a middle dim does the same along the columns):
//   softmax:     a max pass, a pass writing exp(x - m), a sum pass and a
//                scaling pass: one exp per element, every loop vectorised.
//   log_softmax: one online pass over memory for max and sum, blockwise (the
//                max of a block of 4096, then the block's sum of exp(x - m)
//                while the block is in cache; the running sum is rescaled
//                when the max grows), and one writing pass.
// exp in the f32 loops is vexp() below (vectorised, within 2 ulp of
// std::exp); f64 uses std::exp. Sums of f32 are accumulated in f64. Lines
// are spread over the thread pool; every line is computed by one thread in a
// fixed order, so results do not depend on the thread count.
#pragma once
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

namespace colt5::kernels::cpu {

// out, x: (outer, n, inner) contiguous.
void softmax_forward(float* out, const float* x, int64_t outer, int64_t n, int64_t inner);
void softmax_forward(double* out, const double* x, int64_t outer, int64_t n, int64_t inner);
void log_softmax_forward(float* out, const float* x, int64_t outer, int64_t n, int64_t inner);
void log_softmax_forward(double* out, const double* x, int64_t outer, int64_t n, int64_t inner);

// dx, dout, out: (outer, n, inner) contiguous; out is the forward's output.
void softmax_backward(float* dx, const float* dout, const float* out, int64_t outer, int64_t n, int64_t inner);
void softmax_backward(double* dx, const double* dout, const double* out, int64_t outer, int64_t n, int64_t inner);
void log_softmax_backward(float* dx, const float* dout, const float* out, int64_t outer, int64_t n, int64_t inner);
void log_softmax_backward(double* dx, const double* dout, const double* out, int64_t outer, int64_t n,
                          int64_t inner);

// ---- row helpers shared by the softmax, norm and loss kernels (inline)

// Accumulator type: f32 sums are accumulated in f64.
template <class T> using Acc = std::conditional_t<std::is_same_v<T, float>, double, T>;

// Work (elements) below which a kernel stays on the calling thread.
constexpr int64_t kLineGrain = 16384;
// Independent partial results per reduction, so the compiler can vectorise
// without reassociating (the order is fixed: results are deterministic).
constexpr int kLanes = 8;

// exp for the kernels' inner loops, written so that the compiler vectorises
// the loops that call it. f32: Cephes-style range reduction (x = n ln2 + r,
// round to nearest) and a degree-6 polynomial, branch-free; relative error
// within 2 ulp of std::exp; results below FLT_MIN flush to 0 (so exp(-inf) =
// 0), arguments above 127.5 ln2 (~88.38) give +inf, NaN propagates.
// f64: std::exp (the precise path used by gradchecks).
inline float vexp(float x) {
  const float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float t = x * 1.44269504088896341f + magic;
  const float n = t - magic;
  const int32_t ni = std::bit_cast<int32_t>(t) - std::bit_cast<int32_t>(magic);
  float r = x - n * 0.693359375f;  // ln2 in two parts
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  const float y = p * std::bit_cast<float>(static_cast<uint32_t>(ni + 127) << 23);
  const float lo = x < -87.33654475f ? 0.0f : y;
  return x > 88.37626266f ? std::numeric_limits<float>::infinity() : lo;
}
inline double vexp(double x) { return std::exp(x); }

// Max of a row; NaN if any entry is NaN; -inf for an empty row.
template <class T>
inline T row_max(const T* x, int64_t n) {
  const T ninf = -std::numeric_limits<T>::infinity();
  T lane[kLanes];
  for (int j = 0; j < kLanes; ++j) lane[j] = ninf;
  int64_t k = 0;
  for (; k + kLanes <= n; k += kLanes) {
    // Kept as a loop (not unrolled) so the loop vectoriser, which handles the select, takes it.
#pragma GCC unroll 1
    for (int j = 0; j < kLanes; ++j) {
      const T v = x[k + j];
      lane[j] = (v > lane[j] || v != v) ? v : lane[j];  // once NaN, a lane stays NaN
    }
  }
  T m = ninf;
  for (int j = 0; j < kLanes; ++j) m = (lane[j] > m || lane[j] != lane[j]) ? lane[j] : m;
  for (; k < n; ++k) m = (x[k] > m || x[k] != x[k]) ? x[k] : m;
  return m;
}

// sum_k a_k * b_k, accumulated in A.
template <class T, class A>
inline A row_dot(const T* a, const T* b, int64_t n) {
  A lane[kLanes] = {};
  int64_t k = 0;
  for (; k + kLanes <= n; k += kLanes)
    for (int j = 0; j < kLanes; ++j) lane[j] += static_cast<A>(a[k + j]) * static_cast<A>(b[k + j]);
  A s = 0;
  for (int j = 0; j < kLanes; ++j) s += lane[j];
  for (; k < n; ++k) s += static_cast<A>(a[k]) * static_cast<A>(b[k]);
  return s;
}

// sum_k a_k, accumulated in A.
template <class T, class A>
inline A row_sum(const T* a, int64_t n) {
  A lane[kLanes] = {};
  int64_t k = 0;
  for (; k + kLanes <= n; k += kLanes)
    for (int j = 0; j < kLanes; ++j) lane[j] += static_cast<A>(a[k + j]);
  A s = 0;
  for (int j = 0; j < kLanes; ++j) s += lane[j];
  for (; k < n; ++k) s += static_cast<A>(a[k]);
  return s;
}

// sum_k exp(x_k - m), accumulated in A (m finite): exp into a block buffer
// (a plain loop, vectorised), then a lane sum of the block.
template <class T, class A>
inline A row_sumexp(const T* x, int64_t n, T m) {
  constexpr int64_t kBuf = 256;
  T buf[kBuf];
  A s = 0;
  for (int64_t k0 = 0; k0 < n; k0 += kBuf) {
    const int64_t len = n - k0 < kBuf ? n - k0 : kBuf;
    for (int64_t k = 0; k < len; ++k) buf[k] = vexp(x[k0 + k] - m);
    s += row_sum<T, A>(buf, len);
  }
  return s;
}

// Online max and sum of exp(x - max) over one contiguous row, in blocks (one
// read of the row): softmax and cross-entropy. An all -inf (or empty) row
// gives m = -inf, s = 0; a row with a NaN gives m = NaN, s = NaN.
template <class T, class A>
inline void row_max_sumexp(const T* x, int64_t n, T& m_out, A& s_out) {
  constexpr int64_t kBlock = 4096;  // a block (16 KB in f32) stays in cache between its max and its sum
  const T ninf = -std::numeric_limits<T>::infinity();
  T m = ninf;
  A s = 0;
  for (int64_t k0 = 0; k0 < n; k0 += kBlock) {
    const int64_t len = n - k0 < kBlock ? n - k0 : kBlock;
    const T bm = row_max(x + k0, len);
    if (bm != bm) {
      m_out = bm;
      s_out = static_cast<A>(bm);
      return;
    }
    if (bm > m) {  // the max grows: rescale the running sum (s = 0 while m = -inf)
      if (m != ninf) s *= static_cast<A>(std::exp(static_cast<A>(m) - static_cast<A>(bm)));
      m = bm;
    }
    if (m == ninf) continue;  // everything so far is -inf
    s += row_sumexp<T, A>(x + k0, len, m);
  }
  m_out = m;
  s_out = s;
}

}  // namespace colt5::kernels::cpu
