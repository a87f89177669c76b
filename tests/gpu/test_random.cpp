// Random fills on the GPU (kernels/cuda/random.cu) against the CPU fill of the
// same seed, and both against formulas written out here (runs only with a GPU:
// tests/gpu/main.cpp exits 77 otherwise). Sizes 0, 1, 7, 2^20 + 3 (and an empty
// 3-D shape), generators started at an even and at an odd counter.
//
// Expected agreement (engine/generator.h):
//   rand / uniform / randint   bit for bit, every dtype (hash, u01, fma and
//                              integer maths are exact on both devices);
//   randn f32 / bf16 / f16     bit for bit, except where the host's double lies
//                              within a relative 2^-44 of an f32 rounding
//                              midpoint ("tie zone": CUDA's log / cos are within
//                              1 / 2 ulp, the host libm within ~0.5 ulp, so the
//                              two doubles are ~6e-16 apart at most): there
//                              either neighbour is accepted, and the tie zone
//                              must stay a handful of elements (~1.3e-6 of them
//                              expected);
//   randn f64                  relative 1e-14;
//   generator counter          advanced identically (n, or 2n for randn).
#include <doctest/doctest.h>

#include <climits>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "colt5.h"
#include "engine/dispatch.h"
#include "engine/generator.h"

namespace {

using namespace colt5;
const Device kGpu = Device::cuda(0);

const std::vector<Shape> kShapes = {{0}, {1}, {7}, {(int64_t{1} << 20) + 3}, {3, 0, 2}};

struct Start {
  uint64_t seed, counter;
};
// An even and an odd first counter (randn's pairs start at counter / 2).
const std::vector<Start> kStarts = {{0, 0}, {0x5EEDF00Dull, 5}};

std::string label(const char* what, DType dt, const Shape& shape, const Start& s) {
  std::string r = std::string(what) + " " + dtype_name(dt) + " numel " + std::to_string(shape_numel(shape)) +
                  " seed " + std::to_string(s.seed) + " counter " + std::to_string(s.counter);
  return r;
}

// The raw bytes of element i of a contiguous CPU tensor.
bool same_bits(const Tensor& a, const Tensor& b, int64_t i) {
  const size_t es = dtype_size(a.dtype());
  return std::memcmp(static_cast<const char*>(a.data_ptr()) + i * es, static_cast<const char*>(b.data_ptr()) + i * es,
                     es) == 0;
}

// Draws the same tensor on both devices from generators in the same state;
// checks shape, dtype, device, requires_grad and the counter advance. Returns
// {cpu, gpu copied back to the CPU}.
template <class Draw>
std::pair<Tensor, Tensor> draw_both(const Shape& shape, DType dt, const Start& s, uint64_t advance, Draw&& draw) {
  Generator gc(s.seed), gg(s.seed);
  gc.set_state(s.counter);
  gg.set_state(s.counter);
  Tensor c = draw(gc, Options{.dtype = dt, .device = Device::cpu()});
  Tensor g = draw(gg, Options{.dtype = dt, .device = kGpu, .requires_grad = is_floating(dt)});
  CHECK(c.device() == Device::cpu());
  CHECK(g.device() == kGpu);
  CHECK(c.shape() == shape);
  CHECK(g.shape() == shape);
  CHECK(c.dtype() == dt);
  CHECK(g.dtype() == dt);
  CHECK(g.strides() == contiguous_strides(shape));  // a fresh row-major buffer
  CHECK(g.requires_grad() == is_floating(dt));
  CHECK(gc.state() == s.counter + advance);
  CHECK(gg.state() == gc.state());
  CHECK(gg.seed() == s.seed);
  return {c, g.detach().to(Device::cpu())};
}

// Every element bit for bit; `want(i)` (double) is the formula written out
// here, converted to the dtype as copies convert.
template <class Want>
void expect_exact(const Tensor& c, const Tensor& g, Want&& want) {
  REQUIRE(c.numel() == g.numel());
  dispatch_all(c.dtype(), "test", [&](auto tag) {
    using T = decltype(tag);
    const T* pc = static_cast<const T*>(c.data_ptr());
    int64_t bad_gpu = -1, bad_cpu = -1, n_bad = 0;
    for (int64_t i = 0; i < c.numel(); ++i) {
      const T w = want(tag, i);
      if (std::memcmp(&pc[i], &w, sizeof(T)) != 0 && bad_cpu < 0) bad_cpu = i;
      if (!same_bits(c, g, i)) {
        ++n_bad;
        if (bad_gpu < 0) bad_gpu = i;
      }
    }
    const double cpu_v = bad_gpu >= 0 ? to_double(pc[bad_gpu]) : 0.0;
    const double gpu_v = bad_gpu >= 0 ? to_double(static_cast<const T*>(g.data_ptr())[bad_gpu]) : 0.0;
    INFO("first cpu element off the formula: " << bad_cpu << "; gpu elements differing from cpu: " << n_bad
                                               << ", first " << bad_gpu << " (cpu " << cpu_v << ", gpu " << gpu_v
                                               << ")");
    CHECK(bad_cpu == -1);
    CHECK(n_bad == 0);
  });
}

// u01 written out: the top 53 bits of the hash, times 2^-53.
double u01_here(uint64_t seed, uint64_t c) {
  return static_cast<double>(Generator::hash(seed, c) >> 11) / 9007199254740992.0;
}
// Box-Muller of the pair at counters 2 p, 2 p + 1, as the host libm computes it.
double normal_here(uint64_t seed, uint64_t p) {
  double u1 = u01_here(seed, 2 * p);
  const double u2 = u01_here(seed, 2 * p + 1);
  if (u1 < 1e-300) u1 = 1e-300;
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
}

}  // namespace

TEST_CASE("gpu random: rand and uniform are bit-identical to the CPU (f32, f64, bf16, f16)") {
  struct Range {
    double lo, hi;
  };
  for (DType dt : {DType::f32, DType::f64, DType::bf16, DType::f16})
    for (const Shape& shape : kShapes)
      for (const Start& s : kStarts)
        for (Range r : {Range{0.0, 1.0}, Range{-3.0, 5.0}, Range{-0.125, 1e-3}}) {
          const bool plain = r.lo == 0.0 && r.hi == 1.0;
          INFO(label(plain ? "rand" : "uniform", dt, shape, s) << " [" << r.lo << ", " << r.hi << ")");
          auto [c, g] = draw_both(shape, dt, s, shape_numel(shape), [&](Generator& gen, Options o) {
            return plain ? rand(shape, gen, o) : uniform(shape, r.lo, r.hi, gen, o);
          });
          expect_exact(c, g, [&](auto tag, int64_t i) {
            const double u = u01_here(s.seed, s.counter + i);
            return from_double<decltype(tag)>(plain ? u : std::fma(r.hi - r.lo, u, r.lo));
          });
          if (dt == DType::f64 && c.numel() > 0) {  // the values are where they should be
            const std::vector<double> v = c.to_vector<double>();
            bool in_range = true;
            for (double x : v) in_range = in_range && x >= r.lo && x < r.hi;
            CHECK(in_range);
          }
        }
}

TEST_CASE("gpu random: randint is bit-identical to the CPU (i64 exact beyond 2^53, f32, f64, bf16)") {
  struct Range {
    int64_t lo, hi;
  };
  const std::vector<Range> ranges = {{0, 10}, {-5, 1000003}, {INT64_MIN / 2, INT64_MAX / 2 + 12345}, {INT64_MIN, INT64_MAX}};
  for (DType dt : {DType::i64, DType::f32, DType::f64, DType::bf16})
    for (const Shape& shape : kShapes)
      for (const Start& s : kStarts)
        for (Range r : ranges) {
          INFO(label("randint", dt, shape, s) << " [" << r.lo << ", " << r.hi << ")");
          auto [c, g] = draw_both(shape, dt, s, shape_numel(shape), [&](Generator& gen, Options o) {
            return randint(r.lo, r.hi, shape, gen, o);
          });
          const uint64_t span = static_cast<uint64_t>(r.hi) - static_cast<uint64_t>(r.lo);
          auto value = [&](int64_t i) {
            return static_cast<int64_t>(static_cast<uint64_t>(r.lo) + Generator::hash(s.seed, s.counter + i) % span);
          };
          expect_exact(c, g, [&](auto tag, int64_t i) {
            using T = decltype(tag);
            if constexpr (std::is_same_v<T, int64_t>) return value(i);
            else return from_double<T>(static_cast<double>(value(i)));
          });
          if (dt == DType::i64 && c.numel() > 0) {
            const int64_t* p = static_cast<const int64_t*>(c.data_ptr());
            bool in_range = true, odd_seen = false;
            for (int64_t i = 0; i < c.numel(); ++i) {
              in_range = in_range && p[i] >= r.lo && p[i] < r.hi;
              odd_seen = odd_seen || (p[i] & 1);
            }
            CHECK(in_range);
            // The low bits survive in wide ranges too (no rounding through double).
            if (c.numel() > 1000) CHECK(odd_seen);
          }
        }
}

TEST_CASE("gpu random: randn f32 / bf16 / f16 bit-identical to the CPU outside the f32 tie zone") {
  const double delta = std::ldexp(1.0, -44);
  for (DType dt : {DType::f32, DType::bf16, DType::f16})
    for (const Shape& shape : kShapes)
      for (const Start& s : kStarts) {
        INFO(label("randn", dt, shape, s));
        const int64_t n = shape_numel(shape);
        auto [c, g] = draw_both(shape, dt, s, 2 * n, [&](Generator& gen, Options o) { return randn(shape, gen, o); });
        const uint64_t pair0 = s.counter / 2;
        dispatch_all(dt, "test", [&](auto tag) {
          using T = decltype(tag);
          const T* pc = static_cast<const T*>(c.data_ptr());
          const T* pg = static_cast<const T*>(g.data_ptr());
          int64_t bad_cpu = -1, bad_gpu = -1, ties = 0, tie_differs = 0;
          for (int64_t i = 0; i < n; ++i) {
            const double h = normal_here(s.seed, pair0 + i);
            const T w = from_double<T>(h);
            if (std::memcmp(&pc[i], &w, sizeof(T)) != 0 && bad_cpu < 0) bad_cpu = i;
            const T a = from_double<T>(h * (1 - delta)), b = from_double<T>(h * (1 + delta));
            const bool tie = std::memcmp(&a, &b, sizeof(T)) != 0;
            const bool same = std::memcmp(&pg[i], &pc[i], sizeof(T)) == 0;
            if (tie) {
              ++ties;
              if (!same) ++tie_differs;
              if (!same && std::memcmp(&pg[i], &a, sizeof(T)) != 0 && std::memcmp(&pg[i], &b, sizeof(T)) != 0 &&
                  bad_gpu < 0)
                bad_gpu = i;
            } else if (!same && bad_gpu < 0) {
              bad_gpu = i;
            }
          }
          const int64_t k = bad_gpu >= 0 ? bad_gpu : 0;
          INFO("first cpu element off the formula " << bad_cpu << "; elements in the tie zone " << ties
                                                    << " (of which differ " << tie_differs << "); first bad gpu element "
                                                    << bad_gpu);
          INFO("at that element: cpu " << (n > 0 ? to_double(pc[k]) : 0.0) << ", gpu "
                                       << (n > 0 ? to_double(pg[k]) : 0.0) << ", host double "
                                       << normal_here(s.seed, pair0 + k));
          CHECK(bad_cpu == -1);
          CHECK(bad_gpu == -1);
          CHECK(ties <= 16);
        });
      }
}

TEST_CASE("gpu random: randn f64 within 1e-14 relative of the CPU; moments of N(0, 1)") {
  for (const Shape& shape : kShapes)
    for (const Start& s : kStarts) {
      INFO(label("randn", DType::f64, shape, s));
      const int64_t n = shape_numel(shape);
      auto [c, g] = draw_both(shape, DType::f64, s, 2 * n,
                              [&](Generator& gen, Options o) { return randn(shape, gen, o); });
      const double* pc = static_cast<const double*>(c.data_ptr());
      const double* pg = static_cast<const double*>(g.data_ptr());
      double worst = 0, sum = 0, sum2 = 0;
      int64_t worst_i = -1, bad_cpu = -1, identical = 0;
      for (int64_t i = 0; i < n; ++i) {
        if (pc[i] != normal_here(s.seed, s.counter / 2 + i) && bad_cpu < 0) bad_cpu = i;
        const double rel = std::abs(pg[i] - pc[i]) / std::abs(pc[i]);
        if (!(rel <= worst)) worst = rel, worst_i = i;  // NaN counts as worst
        identical += pg[i] == pc[i];
        sum += pc[i];
        sum2 += pc[i] * pc[i];
      }
      INFO("worst relative difference " << worst << " at " << worst_i << "; bit-identical " << identical << " of "
                                        << n);
      CHECK(bad_cpu == -1);
      CHECK(worst <= 1e-14);
      if (n > 1000) {
        MESSAGE("randn f64, " << n << " elements: bit-identical on both devices " << identical << ", worst relative "
                              << worst);
        CHECK(std::abs(sum / n) < 5.0 / std::sqrt(double(n)));
        CHECK(std::abs(sum2 / n - 1.0) < 0.01);
      }
    }
}

TEST_CASE("gpu random: consecutive draws continue the stream; default generator; CPU-GPU interleaving") {
  // Two draws on the GPU equal one longer draw split in two (uniform), and a
  // randn after an odd-length rand starts at the same pair on both devices.
  Generator g1(42), g2(42);
  Tensor a = rand({5}, g1, {.device = kGpu}), b = rand({9}, g1, {.device = kGpu});
  Tensor ab = rand({14}, g2, {.device = kGpu});
  CHECK(g1.state() == 14);
  CHECK(g2.state() == 14);
  const std::vector<float> va = a.to_vector<float>(), vb = b.to_vector<float>(), vab = ab.to_vector<float>();
  bool split_ok = true;
  for (int i = 0; i < 5; ++i) split_ok = split_ok && va[i] == vab[i];
  for (int i = 0; i < 9; ++i) split_ok = split_ok && vb[i] == vab[5 + i];
  CHECK(split_ok);

  Generator gc(9), gg(9);
  Tensor c1 = randint(0, 100, {3}, gc), c2 = randn({6}, gc, {.dtype = DType::bf16});
  Tensor d1 = randint(0, 100, {3}, gg, {.dtype = DType::i64, .device = kGpu});
  Tensor d2 = randn({6}, gg, {.dtype = DType::bf16, .device = kGpu});
  CHECK(gc.state() == 3 + 12);
  CHECK(gg.state() == gc.state());
  CHECK(c1.to_vector<int64_t>() == d1.to_vector<int64_t>());
  CHECK(c2.to_vector<double>() == d2.to_vector<double>());

  manual_seed(123);
  Tensor x = randn({1000}, {.device = kGpu});
  CHECK(default_generator().state() == 2000);
  manual_seed(123);
  Tensor y = randn({1000});
  CHECK(x.device() == kGpu);
  // f32 randn: the tie zone of 1000 elements is almost surely empty.
  CHECK(x.to_vector<float>() == y.to_vector<float>());
}
