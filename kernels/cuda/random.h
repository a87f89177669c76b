// Counter-based random fills on a CUDA device (the device's current stream, no
// sync), for engine/generator.cpp. Plain C++ header: includable without nvcc.
// dst is a contiguous buffer of n elements of dtype dt; element i is computed
// on the device with the same functions the host uses (colt5::rng in
// engine/generator.h) and converted to dt as copies convert (through double):
//   random_uniform  rng::uniform_at(seed, c0 + i, lo, hi)
//   random_normal   rng::normal_at(seed, pair0 + i)
//   random_int      rng::randint_at(seed, c0 + i, lo, span), written exactly
//                   for i64, through double for other dtypes.
// Counters wrap modulo 2^64 like the host's. The caller reserves the counters.
#pragma once
#include <cstdint>

#include "engine/dtype.h"

namespace colt5::kernels::cuda {

void random_uniform(void* dst, DType dt, int64_t n, uint64_t seed, uint64_t c0, double lo, double hi, int device);
void random_normal(void* dst, DType dt, int64_t n, uint64_t seed, uint64_t pair0, int device);
void random_int(void* dst, DType dt, int64_t n, uint64_t seed, uint64_t c0, int64_t lo, uint64_t span, int device);

}  // namespace colt5::kernels::cuda
