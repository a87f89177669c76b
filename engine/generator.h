// Seedable random numbers. A Generator is a counter-based stream (SplitMix64
// of seed and counter), so the same seed gives the same tensor on any device
// and thread count (values are drawn on the host, then copied).
#pragma once
#include <cstdint>

#include "engine/tensor.h"

namespace colt5 {

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
  static uint64_t hash(uint64_t seed, uint64_t counter);
  uint64_t state() const { return counter_; }
  void set_state(uint64_t c) { counter_ = c; }

 private:
  uint64_t seed_ = 0, counter_ = 0;
};

// The process-wide default generator.
Generator& default_generator();
void manual_seed(uint64_t seed);

Tensor rand(const Shape& shape, Generator& gen, Options opt = {});   // U[0, 1)
Tensor randn(const Shape& shape, Generator& gen, Options opt = {});  // N(0, 1)
Tensor uniform(const Shape& shape, double lo, double hi, Generator& gen, Options opt = {});
Tensor randint(int64_t lo, int64_t hi, const Shape& shape, Generator& gen, Options opt = {.dtype = DType::i64});
Tensor rand(const Shape& shape, Options opt = {});
Tensor randn(const Shape& shape, Options opt = {});

}  // namespace colt5
