// gemm (fallback kernel and engine entry point), matmul and linear.
#include <array>
#include <cmath>
#include <limits>

#include "helpers.h"
#include "kernels/cpu/gemm.h"

using namespace colt5;
using namespace colt5::testing;

namespace {

// Independent oracle: a plain triple loop in long double.
template <class T>
void naive_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const std::vector<T>& A, int64_t lda,
                const std::vector<T>& B, int64_t ldb, T beta, std::vector<T>& C, int64_t ldc) {
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      long double s = 0;
      for (int64_t k = 0; k < K; ++k)
        s += static_cast<long double>(ta ? A[k * lda + i] : A[i * lda + k]) * (tb ? B[j * ldb + k] : B[k * ldb + j]);
      C[i * ldc + j] = static_cast<T>(alpha * s + (beta == T(0) ? 0 : beta * C[i * ldc + j]));
    }
}

// Every transpose combination and odd sizes, padded leading dims, alpha/beta != 1/0;
// plus shapes spanning several K slices (KC = 256) and row blocks of the fallback.
template <class T>
void check_gemm_against_naive(void (*fn)(bool, bool, int64_t, int64_t, int64_t, T, const T*, int64_t, const T*,
                                         int64_t, T, T*, int64_t),
                              double tol) {
  Generator gen(7);
  const int64_t sizes[] = {1, 7, 33, 130};
  std::vector<std::array<int64_t, 3>> shapes;
  for (int64_t M : sizes)
    for (int64_t N : sizes)
      for (int64_t K : sizes) shapes.push_back({M, N, K});
  shapes.push_back({300, 70, 600});
  shapes.push_back({13, 1, 1000});
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb)
      for (auto [M, N, K] : shapes) {
        const int64_t lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 1, ldc = N + 2;
        std::vector<T> A((ta ? K : M) * lda), B((tb ? N : K) * ldb), C(M * ldc);
        for (auto& v : A) v = static_cast<T>(gen.uniform() * 2 - 1);
        for (auto& v : B) v = static_cast<T>(gen.uniform() * 2 - 1);
        for (auto& v : C) v = static_cast<T>(gen.uniform() * 2 - 1);
        std::vector<T> R = C;
        fn(ta, tb, M, N, K, T(0.75), A.data(), lda, B.data(), ldb, T(-0.5), C.data(), ldc);
        naive_gemm<T>(ta, tb, M, N, K, T(0.75), A, lda, B, ldb, T(-0.5), R, ldc);
        double worst = 0;
        for (int64_t i = 0; i < M; ++i)
          for (int64_t j = 0; j < N; ++j)
            worst = std::max(worst, std::abs(static_cast<double>(C[i * ldc + j] - R[i * ldc + j])));
        // Padding between rows must be untouched.
        bool pad_ok = true;
        for (int64_t i = 0; i < M; ++i)
          for (int64_t j = N; j < ldc; ++j) pad_ok = pad_ok && C[i * ldc + j] == R[i * ldc + j];
        INFO("ta=" << ta << " tb=" << tb << " M=" << M << " N=" << N << " K=" << K << " worst=" << worst);
        CHECK(worst <= tol * std::sqrt(static_cast<double>(K)));
        CHECK(pad_ok);
      }
}

// beta = 0 must not read C (NaN garbage stays out); K = 0 gives beta * C.
template <class T>
void check_gemm_edges(void (*fn)(bool, bool, int64_t, int64_t, int64_t, T, const T*, int64_t, const T*, int64_t, T,
                                 T*, int64_t)) {
  std::vector<T> A = {1, 2, 3, 4}, B = {5, 6, 7, 8};
  std::vector<T> C(4, std::numeric_limits<T>::quiet_NaN());
  fn(false, false, 2, 2, 2, T(1), A.data(), 2, B.data(), 2, T(0), C.data(), 2);
  CHECK(C == std::vector<T>{19, 22, 43, 50});
  fn(true, false, 2, 2, 2, T(1), A.data(), 2, B.data(), 2, T(0), C.data(), 2);  // A^T B
  CHECK(C == std::vector<T>{26, 30, 38, 44});
  fn(false, true, 2, 2, 2, T(1), A.data(), 2, B.data(), 2, T(0), C.data(), 2);  // A B^T
  CHECK(C == std::vector<T>{17, 23, 39, 53});
  fn(true, true, 2, 2, 2, T(2), A.data(), 2, B.data(), 2, T(1), C.data(), 2);  // 2 A^T B^T + C
  CHECK(C == std::vector<T>{17 + 2 * 23, 23 + 2 * 31, 39 + 2 * 34, 53 + 2 * 46});
  fn(false, false, 2, 2, 0, T(1), A.data(), 1, B.data(), 2, T(3), C.data(), 2);  // K = 0: C *= 3
  CHECK(C[0] == T(3 * (17 + 2 * 23)));
  std::vector<T> D(4, std::numeric_limits<T>::quiet_NaN());
  fn(false, false, 2, 2, 0, T(1), A.data(), 1, B.data(), 2, T(0), D.data(), 2);
  CHECK(D == std::vector<T>{0, 0, 0, 0});
  CHECK_THROWS_WITH_AS(fn(false, false, 2, 2, 2, T(1), A.data(), 1, B.data(), 2, T(0), C.data(), 2),
                       doctest::Contains("lda=1"), Error);
}

// matmul oracle from broadcasting elementwise ops and a sum: (..., M, K, 1) * (..., 1, K, N) summed over K.
Tensor ref_matmul(const Tensor& a, const Tensor& b) {
  NoGradGuard ng;
  return sum(a.detach().unsqueeze(-1) * b.detach().unsqueeze(-3), -2);
}

Tensor f64(const Shape& s, uint64_t seed) {
  Generator g(seed);
  return uniform(s, -1, 1, g, {.dtype = DType::f64});
}

// Bytes allocated on the CPU while fn runs (peak above the start) and calls to the host allocator;
// the bytes stay meaningful if a caching allocator is added later.
struct Allocated {
  int64_t bytes = 0, allocs = 0;
};
template <class F>
Allocated allocated_by(F&& fn) {
  reset_peak_memory(Device::cpu());
  MemoryStats s0 = memory_stats(Device::cpu());
  fn();
  MemoryStats s1 = memory_stats(Device::cpu());
  return {s1.peak_bytes - s0.current_bytes, s1.driver_allocs - s0.driver_allocs};
}

}  // namespace

TEST_CASE("gemm: fallback kernel against a naive triple loop, all transposes, odd sizes") {
  check_gemm_against_naive<float>(&kernels::cpu::gemm<float>, 2e-6);
  check_gemm_against_naive<double>(&kernels::cpu::gemm<double>, 1e-14);
  check_gemm_edges<float>(&kernels::cpu::gemm<float>);
  check_gemm_edges<double>(&kernels::cpu::gemm<double>);
}

TEST_CASE("gemm: engine entry point (OpenBLAS or fallback) against a naive triple loop") {
  INFO("backend: " << blas_name());
  check_gemm_against_naive<float>(&gemm<float>, 2e-6);
  check_gemm_against_naive<double>(&gemm<double>, 1e-14);
  check_gemm_edges<float>(&gemm<float>);
  check_gemm_edges<double>(&gemm<double>);
}

TEST_CASE("gemm: fallback results do not depend on the thread count") {
  const int64_t M = 300, N = 260, K = 700;  // several KC slices, row blocks and panels
  Generator gen(3);
  std::vector<float> A(M * K), B(K * N);
  for (auto& v : A) v = static_cast<float>(gen.normal());
  for (auto& v : B) v = static_cast<float>(gen.normal());
  int before = get_num_threads();
  std::vector<float> C1(M * N), C4(M * N);
  set_num_threads(1);
  kernels::cpu::gemm<float>(false, true, M, N, K, 1.0f, A.data(), K, B.data(), K, 0.0f, C1.data(), N);
  set_num_threads(4);
  kernels::cpu::gemm<float>(false, true, M, N, K, 1.0f, A.data(), K, B.data(), K, 0.0f, C4.data(), N);
  set_num_threads(before);
  CHECK(C1 == C4);
}

TEST_CASE("matmul: values by hand, 1-D and batched shapes") {
  Tensor a = from_vector({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor b = from_vector({7, 8, 9, 10, 11, 12}, {3, 2});
  check_values(matmul(a, b), {58, 64, 139, 154});
  check_values(matmul(b.t(), a.t()), {58, 139, 64, 154});  // (AB)^T = B^T A^T, both transposed views
  Tensor v = from_vector({1, -1, 2});
  Tensor dot = matmul(v, v);
  CHECK(dot.shape() == Shape{});
  CHECK(dot.item<double>() == 6.0);
  Tensor mv = matmul(a, v);  // (2, 3) . (3) -> (2)
  CHECK(mv.shape() == Shape{2});
  check_values(mv, {5, 11});
  Tensor vm = matmul(from_vector({1, -1}), a);  // (2) . (2, 3) -> (3)
  CHECK(vm.shape() == Shape{3});
  check_values(vm, {-3, -3, -3});
  CHECK(matmul(a, b).dtype() == DType::f32);
  // Batched: (2, 1, 2, 3) . (3, 3, 2) -> (2, 3, 2, 2); each product checked against the 2-D one.
  Tensor ab = a.unsqueeze(0).expand({2, 2, 3}).unsqueeze(1);
  Tensor bb = stack({b, b * 2.0, b * -1.0}, 0);
  Tensor c = matmul(ab, bb);
  CHECK(c.shape() == Shape{2, 3, 2, 2});
  check_values(c.select(0, 1).select(0, 1), {116, 128, 278, 308});
  check_values(c.select(0, 0).select(0, 2), {-58, -64, -139, -154});
  // A 1-D operand against a batch: (3) . (4, 3, 2) -> (4, 2); (4, 2, 3) . (3) -> (4, 2).
  CHECK(matmul(v, f64({4, 3, 2}, 1).to(DType::f32)).shape() == Shape{4, 2});
  CHECK(matmul(f64({4, 2, 3}, 1).to(DType::f32), v).shape() == Shape{4, 2});
  // Empty dims: K = 0 gives zeros, M = 0 an empty result.
  check_values(matmul(zeros({2, 0}), zeros({0, 3})), {0, 0, 0, 0, 0, 0});
  CHECK(matmul(zeros({0, 4}), zeros({4, 3})).shape() == Shape{0, 3});
}

TEST_CASE("matmul: against the broadcast-multiply oracle over layouts and batch broadcasting") {
  struct Case {
    Tensor a, b;
    const char* what;
  };
  Tensor x = f64({5, 7}, 1), y = f64({7, 6}, 2);
  std::vector<Case> cases = {
      {x, y, "plain"},
      {f64({7, 5}, 3).t(), y, "a transposed"},
      {x, f64({6, 7}, 4).t(), "b transposed"},
      {f64({7, 5}, 3).t(), f64({6, 7}, 4).t(), "both transposed"},
      {f64({5, 14}, 5).slice(1, 0, 14, 2), y, "a with column stride 2 (copied)"},
      {f64({4, 5, 7}, 6).narrow(0, 1, 2), f64({2, 7, 6}, 7), "batched"},
      {f64({2, 1, 5, 7}, 8), f64({3, 7, 6}, 9), "batch broadcast"},
      {f64({2, 7, 5}, 10).transpose(-1, -2), f64({2, 6, 7}, 11).transpose(-1, -2), "batched transposed"},
      {f64({3, 5, 7}, 12), y, "batched . 2-D (folded)"},
      {f64({7, 3, 5}, 13).permute({1, 2, 0}), y, "batched col-major . 2-D"},
      {x, f64({4, 7, 6}, 14), "2-D . batched"},
      {f64({5, 7}, 15).expand({3, 5, 7}), y, "expanded batch"},
      {f64({1, 7}, 16).expand({5, 7}), y, "expanded rows (stride 0, copied)"},
  };
  for (const Case& c : cases) {
    INFO(c.what);
    check_close(matmul(c.a, c.b), ref_matmul(c.a, c.b), 1e-12, 1e-12);
    check_close(matmul(c.a.to(DType::f32), c.b.to(DType::f32)), ref_matmul(c.a, c.b).to(DType::f32), 1e-5, 1e-5);
  }
  // Many small products (parallel over the batch) and large ones (BLAS threads).
  check_close(matmul(f64({64, 9, 5}, 17), f64({64, 5, 8}, 18)), ref_matmul(f64({64, 9, 5}, 17), f64({64, 5, 8}, 18)),
              1e-12, 1e-12);
  Tensor big_a = f64({2, 70, 80}, 19), big_b = f64({2, 80, 90}, 20);
  check_close(matmul(big_a, big_b), ref_matmul(big_a, big_b), 1e-12, 1e-12);
}

TEST_CASE("matmul: transposed operands are read in place, not copied") {
  Tensor a = f64({64, 32}, 1), b = f64({48, 32}, 2);
  Tensor at = a.t(), bt = b.t();  // (32, 64), (32, 48): column-major views
  Tensor c, d, e, f, y;
  const int64_t out_bytes = 64 * 48 * 8;
  Allocated m = allocated_by([&] { c = matmul(at.t(), bt); });  // (64, 32) . (32, 48), b read transposed
  CHECK(m.bytes == out_bytes);                                     // the output only
  CHECK(m.allocs == 1);
  m = allocated_by([&] { d = matmul(bt.t(), at); });  // (48, 32) . (32, 64)
  CHECK(m.bytes == 48 * 64 * 8);
  CHECK(m.allocs == 1);
  check_close(d, ref_matmul(b, at), 1e-12, 1e-12);
  Tensor batched = f64({4, 32, 64}, 3).transpose(-1, -2);  // (4, 64, 32) column-major matrices
  m = allocated_by([&] { e = matmul(batched, bt); });
  CHECK(m.bytes == 4 * out_bytes);
  CHECK(m.allocs == 1);
  // A layout gemm cannot read (column stride 2) is copied once.
  Tensor strided = f64({64, 64}, 4).slice(1, 0, 64, 2);
  m = allocated_by([&] { f = matmul(strided, bt); });
  CHECK(m.bytes == out_bytes + 64 * 32 * 8);
  CHECK(m.allocs == 2);
  // linear reads W (out, in) transposed in place and views x (B, T, in) as (B*T, in).
  Tensor x = f64({2, 3, 32}, 5), w = f64({16, 32}, 6), bias = f64({16}, 7);
  m = allocated_by([&] { y = linear(x, w, bias); });
  CHECK(m.bytes == 2 * 3 * 16 * 8);
  CHECK(m.allocs == 1);
}

TEST_CASE("matmul: f64 gradcheck, including transposed, non-contiguous and broadcast-batch inputs") {
  using V = std::vector<Tensor>;
  auto mm = [](const V& v) { return matmul(v[0], v[1]); };
  check_grad(mm, {rleaf({3, 4}, 1), rleaf({4, 5}, 2)});
  check_grad([](const V& v) { return matmul(v[0].t(), v[1].t()); }, {rleaf({4, 3}, 3), rleaf({5, 4}, 4)});
  check_grad([](const V& v) { return matmul(v[0].slice(1, 0, 8, 2), v[1]); }, {rleaf({3, 8}, 5), rleaf({4, 2}, 6)});
  check_grad(mm, {rleaf({2, 1, 3, 4}, 7), rleaf({3, 4, 2}, 8)});          // batch broadcast both ways
  check_grad(mm, {rleaf({3, 4}, 9), rleaf({2, 4, 5}, 10)});              // 2-D . batched
  check_grad(mm, {rleaf({2, 3, 4}, 11), rleaf({4, 5}, 12)});             // folded path
  check_grad([](const V& v) { return matmul(v[0].permute({1, 2, 0}), v[1]); },
             {rleaf({4, 2, 3}, 13), rleaf({4, 5}, 14)});                  // batched col-major . 2-D
  check_grad([](const V& v) { return matmul(v[0].transpose(-1, -2), v[1]); },
             {rleaf({2, 4, 3}, 15), rleaf({2, 4, 5}, 16)});               // batched transposed
  check_grad(mm, {rleaf({4}, 17), rleaf({4}, 18)});                       // dot
  check_grad(mm, {rleaf({3, 4}, 19), rleaf({4}, 20)});                    // matrix . vector
  check_grad(mm, {rleaf({4}, 21), rleaf({2, 4, 3}, 22)});                 // vector . batch
  check_grad(mm, {rleaf({2, 3, 4}, 23), rleaf({4}, 24)});                 // batch . vector
  // Only one side requires grad.
  check_grad(mm, {rleaf({3, 4}, 25), f64({4, 2}, 26)});
  check_grad(mm, {f64({3, 4}, 27), rleaf({4, 2}, 28)});
}

TEST_CASE("linear: values by hand and f64 gradcheck") {
  Tensor x = from_vector({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor w = from_vector({1, 0, -1, 2, 1, 0}, {2, 3});
  Tensor b = from_vector({10, 20});
  check_values(linear(x, w, b), {1 - 3 + 10, 2 + 2 + 20, 4 - 6 + 10, 8 + 5 + 20});
  check_values(linear(x, w), {-2, 4, -2, 13});
  Tensor v = linear(from_vector({1, 2, 3}), w, b);
  CHECK(v.shape() == Shape{2});
  check_values(v, {8, 24});
  CHECK(linear(zeros({4, 5, 3}), w, b).shape() == Shape{4, 5, 2});
  using V = std::vector<Tensor>;
  auto lin = [](const V& v) { return linear(v[0], v[1], v[2]); };
  check_grad(lin, {rleaf({2, 3, 4}, 1), rleaf({5, 4}, 2), rleaf({5}, 3)});
  check_grad([](const V& v) { return linear(v[0], v[1]); }, {rleaf({3, 4}, 4), rleaf({5, 4}, 5)});
  check_grad(lin, {rleaf({4}, 6), rleaf({5, 4}, 7), rleaf({5}, 8)});
  // Non-contiguous x whose leading dims do not merge (copied), transposed W.
  check_grad([](const V& v) { return linear(v[0].transpose(0, 1), v[1].t(), v[2]); },
             {rleaf({3, 2, 4}, 9), rleaf({4, 5}, 10), rleaf({5}, 11)});
  // Against matmul + add.
  Tensor xx = f64({2, 3, 4}, 12), ww = f64({5, 4}, 13), bb = f64({5}, 14);
  check_close(linear(xx, ww, bb), matmul(xx, ww.t()) + bb, 1e-12, 1e-12);
}

TEST_CASE("matmul and linear: bad input names the op and the shapes") {
  Tensor a = zeros({2, 3}), b = zeros({4, 5});
  CHECK_THROWS_WITH_AS(matmul(a, b), doctest::Contains("matmul: shapes [2, 3] and [4, 5] cannot be multiplied"),
                       Error);
  CHECK_THROWS_WITH_AS(matmul(zeros({2, 2, 3}), zeros({3, 3, 4})), doctest::Contains("[2, 2, 3] and [3, 3, 4]"),
                       Error);
  CHECK_THROWS_WITH_AS(matmul(zeros({}), zeros({3})), doctest::Contains("matmul: both operands need at least 1 dim"),
                       Error);
  CHECK_THROWS_WITH_AS(matmul(a, zeros({3, 2}, {.dtype = DType::f64})), doctest::Contains("f32 [2, 3] and f64 [3, 2]"),
                       Error);
  CHECK_THROWS_WITH_AS(matmul(arange(3), arange(3)), doctest::Contains("matmul: expected f32 or f64"), Error);
  CHECK_THROWS_WITH_AS(matmul(zeros({3}), zeros({4})), doctest::Contains("[3] and [4]"), Error);
  CHECK_THROWS_WITH_AS(linear(zeros({2, 3}), zeros({4, 5})),
                       doctest::Contains("linear: input shape [2, 3] and weight shape [4, 5]"), Error);
  CHECK_THROWS_WITH_AS(linear(zeros({2, 3}), zeros({4, 3}), zeros({5})), doctest::Contains("bias shape [5]"), Error);
  CHECK_THROWS_WITH_AS(linear(zeros({2, 3}), zeros({3})), doctest::Contains("linear: weight must be 2-D"), Error);
}
