// README, "Using the layers from C++": the bare CoordinateDescentRouter with
// 2 routes over 32768 tokens. Check: shapes, indices distinct and inside the
// sequence, straight-through scores exactly 1, routed tokens gathered from x.
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
  const int64_t n = small ? 2048 : 32768;
  Tensor x = randn({2, n, 512}, gen, {.device = device});

  CoordinateDescentRouter router(512, {.n_iters = 20, .num_routing_tokens = 2}, gen);
  router.to(device);

  RouterReturn r = router(x, 1024);  // each of the 2 routes picks 1024 of the 32768 tokens
  std::printf("indices %s, scores %s, routed tokens %s\n", shape_str(r.indices.shape()).c_str(),
              shape_str(r.scores.shape()).c_str(), shape_str(r.routed_tokens.shape()).c_str());
  // indices (2, 2, 1024) i64, scores (2, 2, 1024): 1 in value (straight-through),
  // differentiable through the coordinate descent; routed_tokens (2, 2, 1024, 512)
  // README:end

  bool ok = readme::check_output("scores", r.scores, {2, 2, 1024}, device) &&
            readme::check_output("routed_tokens", r.routed_tokens, {2, 2, 1024, 512}, device);
  if (ok && r.indices.shape() != Shape{2, 2, 1024}) ok = readme::fail("indices shape " + shape_str(r.indices.shape()));
  if (ok) {
    std::vector<int64_t> idx = r.indices.to(Device::cpu()).to_vector<int64_t>();
    std::vector<float> s = r.scores.to(Device::cpu()).to_vector<float>();
    for (float v : s)
      if (v != 1.0f) ok = readme::fail("a straight-through score is " + std::to_string(v));
    for (int64_t row = 0; row < 4 && ok; ++row) {
      std::vector<char> seen(n, 0);
      for (int64_t j = 0; j < 1024 && ok; ++j) {
        int64_t i = idx[row * 1024 + j];
        if (i < 0 || i >= n || seen[i]) ok = readme::fail("index " + std::to_string(i) + " out of range or repeated");
        else seen[i] = 1;
      }
    }
    // routed_tokens[b, r, j] == x[b, indices[b, r, j]]
    Tensor xb = x.to(Device::cpu()), rt = r.routed_tokens.to(Device::cpu());
    for (int64_t b = 0; b < 2 && ok; ++b)
      for (int64_t j = 0; j < 1024 && ok; j += 97) {
        int64_t i = idx[(b * 2 + 1) * 1024 + j];
        std::vector<float> want = xb.select(0, b).select(0, i).to_vector<float>();
        std::vector<float> got = rt.select(0, b).select(0, 1).select(0, j).to_vector<float>();
        if (want != got) ok = readme::fail("routed token (" + std::to_string(b) + ", 1, " + std::to_string(j) + ")");
      }
  }
  return ok ? 0 : 1;
}
