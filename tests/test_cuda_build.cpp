// CPU-side checks of the CUDA backend's presence (runs in every build, GPU or
// not): what a build without CUDA, or a machine without a GPU, says when a
// CUDA device is asked for.
#include <doctest/doctest.h>

#include "colt5.h"

using namespace colt5;

TEST_CASE("cuda build: cuda_compiled matches the build, devices parse") {
#ifdef COLT5_WITH_CUDA
  CHECK(cuda_compiled());
#else
  CHECK_FALSE(cuda_compiled());
  CHECK(cuda_device_count() == 0);
#endif
  CHECK(cuda_device_count() >= 0);
  CHECK(cuda_available() == (cuda_device_count() > 0));
  CHECK(Device::parse("cuda:1") == Device::cuda(1));
  CHECK(Device::cuda(2).str() == "cuda:2");
}

TEST_CASE("cuda build: asking for a missing CUDA device is a clear error, not a crash") {
  Tensor x = ones({4});
  // Past the last device: always missing.
  const int missing = cuda_device_count() + 3;
  CHECK_THROWS_WITH_AS(x.to(Device::cuda(missing)), doctest::Contains("CUDA"), Error);
  CHECK_THROWS_WITH_AS(zeros({2}, {.device = Device::cuda(missing)}), doctest::Contains("CUDA"), Error);
  if (!cuda_available()) {
    CHECK_THROWS_WITH_AS(x.to(Device::cuda(0)), doctest::Contains("CUDA"), Error);
#ifndef COLT5_WITH_CUDA
    CHECK_THROWS_WITH_AS(memory_stats(Device::cuda(0)), doctest::Contains("no CUDA backend"), Error);
#endif
  }
  // The CPU side keeps working after the error.
  CHECK(sum(x).item<double>() == 4.0);
}
