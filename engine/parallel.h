// CPU parallelism: a small persistent thread pool.
// parallel_for splits [begin, end) into contiguous chunks of at least `grain`
// items and runs fn(chunk_begin, chunk_end) on the pool (the caller thread takes
// part). Nested calls run serially. Thread count: set_num_threads(n), or the
// COLT5_NUM_THREADS environment variable, default hardware_concurrency().
#pragma once
#include <cstdint>
#include <functional>

namespace colt5 {

void set_num_threads(int n);
int get_num_threads();

// fn(b, e) over chunks. Chunk boundaries depend only on (begin, end, grain,
// thread count), never on timing.
void parallel_for(int64_t begin, int64_t end, int64_t grain,
                  const std::function<void(int64_t, int64_t)>& fn);

// Runs fn(chunk_index) for chunk_index in [0, nchunks) on the pool; used for
// deterministic reductions where the chunking must not depend on thread count.
void parallel_chunks(int64_t nchunks, const std::function<void(int64_t)>& fn);

}  // namespace colt5
