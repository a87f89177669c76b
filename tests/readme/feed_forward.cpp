// README, "Using the layers from C++": ConditionalRoutedFeedForward on 32768
// tokens with a mask. Check: the heavy branch is scattered into zeros, so the
// output equals the light branch alone at exactly N - 1024 positions per row.
#include "readme_check.h"

// README:begin
#include <colt5.h>

#include <cstdio>
#include <cstdlib>

using namespace colt5;

int main() {
  // The GPU when there is one. On the CPU, COLT5_README_SMALL=1 (ctest sets it) shrinks the sizes.
  const Device device = cuda_available() ? Device::cuda() : Device::cpu();
  const bool small = device.is_cpu() && std::getenv("COLT5_README_SMALL") != nullptr;
  Generator gen(0);
// README:end

  // README:begin
  // mock input, 32768 tokens, and a mask (variable-length sequences)
  const int64_t n = small ? 2048 : 32768;
  Tensor tokens = randn({2, n, 512}, gen, {.device = device});
  Tensor mask = ones({2, n}, {.dtype = DType::b8, .device = device});

  ConditionalRoutedFeedForward ff(
      {.dim = 512,
       .num_heavy_tokens = 1024,  // heavy branch receives only 1024 routed tokens of 32768
       .light_ff_mult = 0.5,      // hidden dimension ratio of light branch
       .heavy_ff_mult = 4},       // hidden dimension ratio of heavy branch
      gen);
  ff.to(device);

  Tensor ff_out = ff(tokens, mask);  // (2, 32768, 512): light and heavy branch summed
  std::printf("feed-forward: %s\n", shape_str(ff_out.shape()).c_str());
  // README:end

  NoGradGuard no_grad;
  Tensor heavy = ff_out - ff.light_ff->forward(tokens);
  bool ok = readme::check_output("ff_out", ff_out, {2, n, 512}, device) &&
            readme::check_counts("positions without heavy output", readme::rows_equal(heavy, zeros({512}), 0.0),
                                 n - 1024);
  return ok ? 0 : 1;
}
