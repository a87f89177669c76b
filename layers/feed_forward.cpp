#include "layers/feed_forward.h"

#include <cmath>

#include "ops/elementwise.h"

namespace colt5 {

static int64_t ff_hidden(int64_t dim, double mult) {
  COLT5_CHECK(dim > 0, "FeedForward: dim must be positive, got ", dim);
  COLT5_CHECK(mult > 0 && std::isfinite(mult), "FeedForward: mult must be positive and finite, got ", mult);
  const int64_t hidden = static_cast<int64_t>(static_cast<double>(dim) * mult);  // Python int(): truncation
  COLT5_CHECK(hidden >= 1, "FeedForward: int(dim * mult) = int(", dim, " * ", mult, ") = ", hidden,
              " hidden units; it must be at least 1");
  return hidden;
}

FeedForward::FeedForward(int64_t dim, double mult, Generator& gen) : dim_(dim), hidden_(ff_hidden(dim, mult)) {
  norm = register_module("0", std::make_shared<RMSNorm>(dim));
  proj_in = register_module("1", std::make_shared<Linear>(dim, hidden_, true, gen));
  proj_out = register_module("3", std::make_shared<Linear>(hidden_, dim, true, gen));
}

Tensor FeedForward::forward(const Tensor& x) const {
  return proj_out->forward(gelu(proj_in->forward(norm->forward(x))));
}

}  // namespace colt5
