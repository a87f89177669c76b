#include "engine/generator.h"

#include <cmath>
#include <type_traits>

#include "engine/dispatch.h"
#include "engine/parallel.h"
#ifdef COLT5_WITH_CUDA
#include "kernels/cuda/random.h"
#endif

namespace colt5 {

uint64_t Generator::next_u64() { return rng::hash(seed_, counter_++); }

double Generator::uniform() { return rng::u01(next_u64()); }

double Generator::normal() {
  uint64_t c = reserve(2);
  double u1 = rng::u01(rng::hash(seed_, c)), u2 = rng::u01(rng::hash(seed_, c + 1));
  if (u1 < 1e-300) u1 = 1e-300;
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
}

Generator& default_generator() {
  static Generator g(0);
  return g;
}
void manual_seed(uint64_t seed) { default_generator().manual_seed(seed); }

namespace {

// A contiguous CPU tensor with element i = element(T{}, i), converted by the
// caller exactly as the CUDA kernels convert.
template <class F>
Tensor fill_cpu(const Shape& shape, DType dtype, F&& element) {
  Tensor t = make_tensor(shape, dtype, Device::cpu());
  const int64_t n = t.numel();
  dispatch_all(dtype, "random", [&](auto tag) {
    using T = decltype(tag);
    T* p = static_cast<T*>(t.data_ptr());
    parallel_for(0, n, 16384, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) p[i] = element(tag, i);
    });
  });
  return t;
}

// The tensor on opt.device: `cpu()` builds it on the host, `cuda(ptr, device)`
// fills a fresh contiguous tensor on that device.
template <class Cpu, class Cuda>
Tensor make_random([[maybe_unused]] const char* op, const Shape& shape, const Options& opt, Cpu&& cpu, Cuda&& cuda) {
  Tensor t;
  if (opt.device.is_cpu()) {
    t = cpu();
  } else {
#ifdef COLT5_WITH_CUDA
    t = make_tensor(shape, opt.dtype, opt.device);
    cuda(t.data_ptr(), opt.device.index);
#else
    COLT5_FAIL(op, ": this build has no CUDA backend (device ", opt.device.str(), ")");
#endif
  }
  if (opt.requires_grad) t.requires_grad_();
  return t;
}

}  // namespace

Tensor uniform(const Shape& shape, double lo, double hi, Generator& gen, Options opt) {
  const int64_t n = shape_numel(shape);
  const uint64_t seed = gen.seed(), c0 = gen.reserve(n);
  return make_random(
      "uniform", shape, opt,
      [&] {
        return fill_cpu(shape, opt.dtype, [&](auto tag, int64_t i) {
          return from_double<decltype(tag)>(rng::uniform_at(seed, c0 + i, lo, hi));
        });
      },
      [&](void* dst, int device) {
#ifdef COLT5_WITH_CUDA
        kernels::cuda::random_uniform(dst, opt.dtype, n, seed, c0, lo, hi, device);
#endif
      });
}

Tensor rand(const Shape& shape, Generator& gen, Options opt) { return uniform(shape, 0.0, 1.0, gen, opt); }

Tensor randn(const Shape& shape, Generator& gen, Options opt) {
  const int64_t n = shape_numel(shape);
  const uint64_t seed = gen.seed(), pair0 = gen.reserve(2 * n) / 2;
  return make_random(
      "randn", shape, opt,
      [&] {
        return fill_cpu(shape, opt.dtype, [&](auto tag, int64_t i) {
          return from_double<decltype(tag)>(rng::normal_at(seed, pair0 + i));
        });
      },
      [&](void* dst, int device) {
#ifdef COLT5_WITH_CUDA
        kernels::cuda::random_normal(dst, opt.dtype, n, seed, pair0, device);
#endif
      });
}

Tensor randint(int64_t lo, int64_t hi, const Shape& shape, Generator& gen, Options opt) {
  COLT5_CHECK(hi > lo, "randint: empty range [", lo, ", ", hi, ")");
  const int64_t n = shape_numel(shape);
  const uint64_t seed = gen.seed(), c0 = gen.reserve(n);
  const uint64_t span = static_cast<uint64_t>(hi) - static_cast<uint64_t>(lo);
  return make_random(
      "randint", shape, opt,
      [&] {
        return fill_cpu(shape, opt.dtype, [&](auto tag, int64_t i) {
          using T = decltype(tag);
          const int64_t v = rng::randint_at(seed, c0 + i, lo, span);
          if constexpr (std::is_same_v<T, int64_t>) return v;
          else return from_double<T>(static_cast<double>(v));
        });
      },
      [&](void* dst, int device) {
#ifdef COLT5_WITH_CUDA
        kernels::cuda::random_int(dst, opt.dtype, n, seed, c0, lo, span, device);
#endif
      });
}

Tensor rand(const Shape& shape, Options opt) { return rand(shape, default_generator(), opt); }
Tensor randn(const Shape& shape, Options opt) { return randn(shape, default_generator(), opt); }

}  // namespace colt5
