// Seedable random numbers. A Generator is a counter-based stream (SplitMix64
// of seed and counter): element i of a fill is a pure function of (seed,
// counter), so the same seed gives the same tensor on any device and thread
// count. CPU tensors are filled on the host (parallel_for); CUDA tensors are
// filled on the device by kernels/cuda/random.cu, which evaluates the very
// functions in colt5::rng below (one definition, two backends):
//   uniform(lo, hi)  element i = fma(hi - lo, u01(hash(seed, c0 + i)), lo)
//                    (one rounding, so no compiler may contract it differently);
//   rand             uniform(0, 1): exactly u01(hash(seed, c0 + i));
//   randint(lo, hi)  element i = lo + hash(seed, c0 + i) mod (hi - lo), exact
//                    in i64, converted through double for other dtypes;
//   randn            element i = Box-Muller of the pair at counters
//                    2 (c0/2 + i), 2 (c0/2 + i) + 1, in double;
// then converted to the dtype as every copy does (through double; bf16/f16
// through f32). c0 is gen.reserve(n) (2n for randn): the generator advances
// by the same amount whatever the device.
//
// Bit-exactness across devices: hash, u01, fma and integer maths are exact, so
// uniform / rand / randint are identical bit for bit. randn needs log, cos and
// sqrt in double: sqrt is correctly rounded everywhere, but CUDA's log (<= 1 ulp)
// and cos (<= 2 ulp) may differ from the host libm's (~0.5 ulp) in the last bits,
// so an f64 randn value may differ by a few ulp (relative <~1e-15;
// tests/gpu/test_random.cpp allows 1e-14). An f32 / bf16 / f16 value can differ
// (by one step) only when its double lies within those few ulp of an f32
// rounding midpoint: under ~1e-8 of elements even if every double differed
// (a zone 40x wider holds 2-3 of the test's 2^20 f32 values, none of bf16/f16).
#pragma once
#include <cmath>
#include <cstdint>

#include "engine/tensor.h"

#if defined(__CUDACC__)
#define COLT5_RNG_HD __host__ __device__ __forceinline__
#else
#define COLT5_RNG_HD inline
#endif

namespace colt5 {

namespace rng {

// SplitMix64 finaliser of a (seed, counter) mix.
COLT5_RNG_HD uint64_t hash(uint64_t seed, uint64_t counter) {
  uint64_t z = seed * 0x9E3779B97F4A7C15ull + counter * 0xD1B54A32D192ED03ull + 0x632BE59BD9B4E019ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// The top 53 bits as a double in [0, 1) (exact).
COLT5_RNG_HD double u01(uint64_t bits) { return static_cast<double>(bits >> 11) * 0x1.0p-53; }

COLT5_RNG_HD double uniform_at(uint64_t seed, uint64_t c, double lo, double hi) {
#if defined(__CUDA_ARCH__)
  return __fma_rn(hi - lo, u01(hash(seed, c)), lo);
#else
  return std::fma(hi - lo, u01(hash(seed, c)), lo);
#endif
}

// Standard normal from the Box-Muller pair `pair` (counters 2 pair, 2 pair + 1).
COLT5_RNG_HD double normal_at(uint64_t seed, uint64_t pair) {
  constexpr double kTwoPi = 2.0 * 3.14159265358979323846;  // == 2.0 * M_PI
  double u1 = u01(hash(seed, 2 * pair));
  const double u2 = u01(hash(seed, 2 * pair + 1));
  if (u1 < 1e-300) u1 = 1e-300;
  // No additions: nothing a compiler could fuse into an FMA on one side only.
#if defined(__CUDA_ARCH__)
  return __dmul_rn(::sqrt(__dmul_rn(-2.0, ::log(u1))), ::cos(__dmul_rn(kTwoPi, u2)));
#else
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(kTwoPi * u2);
#endif
}

// lo + hash mod span, span = hi - lo as unsigned (wraps like two's complement,
// so every int64 range works without signed overflow).
COLT5_RNG_HD int64_t randint_at(uint64_t seed, uint64_t c, int64_t lo, uint64_t span) {
  return static_cast<int64_t>(static_cast<uint64_t>(lo) + hash(seed, c) % span);
}

}  // namespace rng

class Generator {
 public:
  explicit Generator(uint64_t seed = 0) : seed_(seed) {}
  void manual_seed(uint64_t seed) { seed_ = seed; counter_ = 0; }
  uint64_t seed() const { return seed_; }
  uint64_t next_u64();
  double uniform();  // [0, 1)
  double normal();   // standard normal (Box-Muller)
  // Advance past n draws and return the first counter (for bulk fills).
  uint64_t reserve(uint64_t n) { uint64_t c = counter_; counter_ += n; return c; }
  static uint64_t hash(uint64_t seed, uint64_t counter) { return rng::hash(seed, counter); }
  uint64_t state() const { return counter_; }
  void set_state(uint64_t c) { counter_ = c; }

 private:
  uint64_t seed_ = 0, counter_ = 0;
};

// The process-wide default generator.
Generator& default_generator();
void manual_seed(uint64_t seed);

// Factories; opt.device picks where the values are computed (see the top).
Tensor rand(const Shape& shape, Generator& gen, Options opt = {});   // U[0, 1)
Tensor randn(const Shape& shape, Generator& gen, Options opt = {});  // N(0, 1)
Tensor uniform(const Shape& shape, double lo, double hi, Generator& gen, Options opt = {});
Tensor randint(int64_t lo, int64_t hi, const Shape& shape, Generator& gen, Options opt = {.dtype = DType::i64});
Tensor rand(const Shape& shape, Options opt = {});
Tensor randn(const Shape& shape, Options opt = {});

}  // namespace colt5
