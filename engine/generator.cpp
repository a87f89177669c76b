#include "engine/generator.h"

#include <cmath>
#include <vector>

#include "engine/dispatch.h"
#include "engine/parallel.h"

namespace colt5 {

uint64_t Generator::hash(uint64_t seed, uint64_t counter) {
  uint64_t z = seed * 0x9E3779B97F4A7C15ull + counter * 0xD1B54A32D192ED03ull + 0x632BE59BD9B4E019ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t Generator::next_u64() { return hash(seed_, counter_++); }

static double u01(uint64_t bits) { return static_cast<double>(bits >> 11) * 0x1.0p-53; }

double Generator::uniform() { return u01(next_u64()); }

static double normal_at(uint64_t seed, uint64_t c) {
  // One Box-Muller pair per two counters; element i uses pair i.
  double u1 = u01(Generator::hash(seed, 2 * c));
  double u2 = u01(Generator::hash(seed, 2 * c + 1));
  if (u1 < 1e-300) u1 = 1e-300;
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
}

double Generator::normal() {
  uint64_t c = reserve(2);
  double u1 = u01(hash(seed_, c)), u2 = u01(hash(seed_, c + 1));
  if (u1 < 1e-300) u1 = 1e-300;
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
}

Generator& default_generator() {
  static Generator g(0);
  return g;
}
void manual_seed(uint64_t seed) { default_generator().manual_seed(seed); }

template <class F>
static Tensor fill_host(const Shape& shape, Options opt, F&& value_at) {
  Tensor host = make_tensor(shape, opt.dtype, Device::cpu());
  int64_t n = host.numel();
  dispatch_all(opt.dtype, "random", [&](auto tag) {
    using T = decltype(tag);
    T* p = static_cast<T*>(host.data_ptr());
    parallel_for(0, n, 16384, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) p[i] = from_double<T>(value_at(i));
    });
  });
  Tensor t = host.to(opt.device);
  if (opt.requires_grad) t.requires_grad_();
  return t;
}

Tensor uniform(const Shape& shape, double lo, double hi, Generator& gen, Options opt) {
  uint64_t seed = gen.seed(), c0 = gen.reserve(shape_numel(shape));
  return fill_host(shape, opt, [&](int64_t i) { return lo + (hi - lo) * u01(Generator::hash(seed, c0 + i)); });
}
Tensor rand(const Shape& shape, Generator& gen, Options opt) { return uniform(shape, 0.0, 1.0, gen, opt); }
Tensor randn(const Shape& shape, Generator& gen, Options opt) {
  int64_t n = shape_numel(shape);
  uint64_t seed = gen.seed(), c0 = gen.reserve(2 * n);
  return fill_host(shape, opt, [&](int64_t i) { return normal_at(seed, c0 / 2 + i); });
}
Tensor randint(int64_t lo, int64_t hi, const Shape& shape, Generator& gen, Options opt) {
  COLT5_CHECK(hi > lo, "randint: empty range [", lo, ", ", hi, ")");
  uint64_t seed = gen.seed(), c0 = gen.reserve(shape_numel(shape));
  uint64_t span = static_cast<uint64_t>(hi - lo);
  return fill_host(shape, opt, [&](int64_t i) {
    return static_cast<double>(lo + static_cast<int64_t>(Generator::hash(seed, c0 + i) % span));
  });
}
Tensor rand(const Shape& shape, Options opt) { return rand(shape, default_generator(), opt); }
Tensor randn(const Shape& shape, Options opt) { return randn(shape, default_generator(), opt); }

}  // namespace colt5
