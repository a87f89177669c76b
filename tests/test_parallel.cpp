// The thread pool (engine/parallel.h): every index of every region runs exactly
// once, regions of different sizes follow each other without a late worker
// taking an index of the wrong region (that double-counted completions and
// hung the caller with more threads than cores), exceptions reach the caller.
#include <atomic>
#include <stdexcept>
#include <vector>

#include "helpers.h"

using namespace colt5;

TEST_CASE("parallel_for: oversubscribed pool, many short regions of varying size") {
  const int before = get_num_threads();
  set_num_threads(16);  // more threads than this machine's cores: workers wake late
  std::vector<std::atomic<int>> hits(64);
  int64_t total = 0, expected = 0;
  for (int rep = 0; rep < 3000; ++rep) {
    const int64_t n = 1 + (rep * 7) % 40;
    for (int64_t i = 0; i < n; ++i) hits[i].store(0);
    parallel_for(0, n, 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) hits[i].fetch_add(1);
    });
    for (int64_t i = 0; i < n; ++i) total += hits[i].load();
    expected += n;
    if (total != expected) break;
  }
  CHECK(total == expected);
  set_num_threads(before);
}

TEST_CASE("parallel_for: an exception in a task reaches the caller; the pool keeps working") {
  const int before = get_num_threads();
  set_num_threads(4);
  CHECK_THROWS_WITH_AS(parallel_for(0, 8, 1,
                                    [](int64_t b, int64_t) {
                                      if (b == 6) throw std::runtime_error("task 6 failed");
                                    }),
                       "task 6 failed", std::runtime_error);
  std::atomic<int64_t> sum{0};
  parallel_for(0, 100, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) sum += i;
  });
  CHECK(sum.load() == 4950);
  set_num_threads(before);
}
