// GPU suite entry: when no CUDA device can be used, say why and exit 77 so that
// ctest reports these tests as skipped rather than passed.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>

#include "engine/device.h"

int main(int argc, char** argv) {
  if (!colt5::cuda_compiled()) {
    std::printf("GPU tests skipped: colt5 was built without CUDA (COLT5_CUDA=OFF or no nvcc)\n");
    return 77;
  }
  if (!colt5::cuda_available()) {
    std::printf("GPU tests skipped: built with CUDA, but no CUDA device is visible on this machine\n");
    return 77;
  }
  doctest::Context ctx;
  ctx.applyCommandLine(argc, argv);
  return ctx.run();
}
