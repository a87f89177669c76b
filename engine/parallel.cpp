#include "engine/parallel.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace colt5 {
namespace {

class Pool {
 public:
  explicit Pool(int n) { resize(n); }
  ~Pool() { stop_workers(); }

  int size() const { return nthreads_; }

  void resize(int n) {
    n = std::max(1, n);
    if (n == nthreads_) return;
    stop_workers();
    nthreads_ = n;
    stop_ = false;
    for (int i = 1; i < n; ++i) workers_.emplace_back([this] { loop(); });
  }

  // Runs task(i) for i in [0, ntasks); the caller participates.
  void run(int64_t ntasks, const std::function<void(int64_t)>& task) {
    if (ntasks <= 0) return;
    if (ntasks == 1 || nthreads_ == 1 || in_pool_) {
      for (int64_t i = 0; i < ntasks; ++i) task(i);
      return;
    }
    std::lock_guard<std::mutex> run_lock(run_mu_);  // one parallel region at a time
    {
      std::lock_guard<std::mutex> lk(mu_);
      task_ = &task;
      ntasks_ = ntasks;
      next_ = 0;
      done_ = 0;
      error_ = nullptr;
      ++generation_;
    }
    cv_.notify_all();
    work();
    std::unique_lock<std::mutex> lk(mu_);
    done_cv_.wait(lk, [&] { return done_ == ntasks_; });
    task_ = nullptr;
    if (error_) std::rethrow_exception(error_);
  }

 private:
  // Claims task indices of the current region until none is left. A claim is
  // made under the mutex together with the region's task and count, so a
  // worker that wakes late can never take an index (or count a completion)
  // of a region other than the one it runs (tasks are coarse: one per thread).
  void work() {
    bool was = in_pool_;
    in_pool_ = true;
    for (;;) {
      int64_t i = 0;
      const std::function<void(int64_t)>* task = nullptr;
      {
        std::lock_guard<std::mutex> lk(mu_);
        if (task_ == nullptr || next_ >= ntasks_) break;
        i = next_++;
        task = task_;
      }
      try {
        (*task)(i);
      } catch (...) {
        std::lock_guard<std::mutex> lk(mu_);
        if (!error_) error_ = std::current_exception();
      }
      std::lock_guard<std::mutex> lk(mu_);
      if (++done_ == ntasks_) done_cv_.notify_all();
    }
    in_pool_ = was;
  }

  void loop() {
    uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return stop_ || (generation_ != seen && task_ != nullptr); });
        if (stop_) return;
        seen = generation_;
      }
      work();
    }
  }

  void stop_workers() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
  }

  int nthreads_ = 0;
  std::vector<std::thread> workers_;
  std::mutex mu_, run_mu_;
  std::condition_variable cv_, done_cv_;
  const std::function<void(int64_t)>* task_ = nullptr;  // these five: guarded by mu_
  int64_t ntasks_ = 0;
  int64_t next_ = 0;
  int64_t done_ = 0;
  uint64_t generation_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
  static thread_local bool in_pool_;
};
thread_local bool Pool::in_pool_ = false;

int default_threads() {
  if (const char* s = std::getenv("COLT5_NUM_THREADS")) {
    int n = std::atoi(s);
    if (n > 0) return n;
  }
  unsigned h = std::thread::hardware_concurrency();
  return h ? static_cast<int>(h) : 1;
}

Pool& pool() {
  static Pool p(default_threads());
  return p;
}

}  // namespace

void set_num_threads(int n) { pool().resize(n); }
int get_num_threads() { return pool().size(); }

void parallel_for(int64_t begin, int64_t end, int64_t grain,
                  const std::function<void(int64_t, int64_t)>& fn) {
  int64_t n = end - begin;
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  int64_t nthreads = pool().size();
  int64_t nchunks = std::min<int64_t>(nthreads, (n + grain - 1) / grain);
  if (nchunks <= 1) {
    fn(begin, end);
    return;
  }
  int64_t step = (n + nchunks - 1) / nchunks;
  pool().run(nchunks, [&](int64_t c) {
    int64_t b = begin + c * step;
    int64_t e = std::min(end, b + step);
    if (b < e) fn(b, e);
  });
}

void parallel_chunks(int64_t nchunks, const std::function<void(int64_t)>& fn) {
  pool().run(nchunks, fn);
}

}  // namespace colt5
