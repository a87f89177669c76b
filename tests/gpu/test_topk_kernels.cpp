// CUDA hard top-k vs the CPU kernel (itself checked against a stable-sort
// oracle in tests/test_topk_kernels.cpp): values and indices bit-identical,
// on both GPU paths, over shapes from tiny rows to 2^20 entries.
#include <doctest/doctest.h>

#ifdef COLT5_WITH_CUDA
#include <cuda_runtime.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "engine/cuda/check.h"
#include "engine/error.h"
#include "kernels/cpu/topk.h"
#include "kernels/cuda/topk.h"

namespace {

using colt5::kernels::cuda::TopkPath;

template <class T>
struct DevBuf {
  T* p = nullptr;
  explicit DevBuf(size_t count) {
    if (count) CUDA_CHECK(cudaMalloc(&p, count * sizeof(T)));
  }
  ~DevBuf() {
    if (p) cudaFree(p);
  }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
};

template <class T>
size_t ws_bytes(int64_t rows, int64_t n, int64_t k, TopkPath path) {
  if constexpr (sizeof(T) == 4)
    return colt5::kernels::cuda::topk_workspace_bytes(rows, n, k, path);
  else
    return colt5::kernels::cuda::topk_workspace_bytes_f64(rows, n, k, path);
}

// Runs the GPU kernel on x; outputs and workspace start poisoned.
template <class T>
void gpu_topk(const std::vector<T>& x, int64_t rows, int64_t n, int64_t k, TopkPath path, std::vector<T>& v,
              std::vector<int64_t>& idx) {
  const size_t out = size_t(rows * k);
  DevBuf<T> dx(x.size()), dv(out);
  DevBuf<int64_t> di(out);
  const size_t wsb = ws_bytes<T>(rows, n, k, path);
  DevBuf<unsigned char> dws(wsb);
  CUDA_CHECK(cudaMemcpy(dx.p, x.data(), x.size() * sizeof(T), cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemset(dv.p, 0xFF, out * sizeof(T)));
  CUDA_CHECK(cudaMemset(di.p, 0xFF, out * sizeof(int64_t)));
  if (wsb) CUDA_CHECK(cudaMemset(dws.p, 0xAB, wsb));
  cudaStream_t s;
  CUDA_CHECK(cudaStreamCreate(&s));
  colt5::kernels::cuda::topk(dx.p, rows, n, k, dv.p, di.p, dws.p, s, path);
  CUDA_CHECK(cudaStreamSynchronize(s));
  CUDA_CHECK(cudaStreamDestroy(s));
  v.resize(out);
  idx.resize(out);
  CUDA_CHECK(cudaMemcpy(v.data(), dv.p, out * sizeof(T), cudaMemcpyDeviceToHost));
  CUDA_CHECK(cudaMemcpy(idx.data(), di.p, out * sizeof(int64_t), cudaMemcpyDeviceToHost));
}

// Mismatching slots between GPU (given path) and CPU; -1 if the path cannot run this shape.
template <class T>
int64_t mismatches(const std::vector<T>& x, int64_t rows, int64_t n, int64_t k, TopkPath path) {
  std::vector<T> cv(size_t(rows * k)), gv;
  std::vector<int64_t> ci(size_t(rows * k)), gi;
  colt5::kernels::cpu::topk<T>(x.data(), rows, n, k, cv.data(), ci.data());
  try {
    gpu_topk(x, rows, n, k, path, gv, gi);
  } catch (const colt5::Error& e) {
    if (path == TopkPath::block && std::string(e.what()).find("block path needs") != std::string::npos) return -1;
    throw;
  }
  int64_t bad = 0;
  for (size_t i = 0; i < cv.size(); ++i)
    if (gi[i] != ci[i] || std::memcmp(&gv[i], &cv[i], sizeof(T)) != 0) ++bad;
  return bad;
}

enum class Data { randn, ties, router, special, equal, ascending };

template <class T>
std::vector<T> make_data(Data d, int64_t count, uint64_t seed) {
  std::mt19937_64 g(seed);
  std::normal_distribution<double> nd;
  std::vector<T> x(static_cast<size_t>(count));
  const T inf = std::numeric_limits<T>::infinity();
  for (int64_t i = 0; i < count; ++i) {
    T& e = x[size_t(i)];
    switch (d) {
      case Data::randn: e = T(nd(g)); break;
      case Data::ties: e = T(0.5) * T(g() % 3); break;
      case Data::router: {  // soft top-k output: ~1/6 exactly 1, the rest in (0, 1)
        const double z = nd(g);
        e = z > 1.0 ? T(1) : T(std::exp(3.0 * (z - 1.0)));
        break;
      }
      case Data::special: {
        const uint64_t r = g() % 16;
        e = r == 0   ? std::numeric_limits<T>::quiet_NaN()
            : r == 1 ? -inf
            : r == 2 ? inf
            : r == 3 ? -std::numeric_limits<T>::max()
            : r == 4 ? T(-0.0)
            : r == 5 ? T(0.0)
                     : T(nd(g));
        break;
      }
      case Data::equal: e = T(-2.5); break;
      case Data::ascending: e = T(i % 4099) * T(0.25); break;
    }
  }
  return x;
}

const char* data_name(Data d) {
  switch (d) {
    case Data::randn: return "randn";
    case Data::ties: return "ties";
    case Data::router: return "router";
    case Data::special: return "special";
    case Data::equal: return "equal";
    case Data::ascending: return "ascending";
  }
  return "?";
}

struct Shape {
  int64_t rows, n, k;
};

template <class T>
void sweep(const std::vector<Shape>& shapes, const std::vector<Data>& kinds) {
  for (const Shape& s : shapes) {
    for (Data d : kinds) {
      const auto x = make_data<T>(d, s.rows * s.n, uint64_t(s.rows * 1000003 + s.n * 17 + s.k));
      for (TopkPath path : {TopkPath::automatic, TopkPath::block, TopkPath::multi_block}) {
        INFO("rows=", s.rows, " n=", s.n, " k=", s.k, " data=", data_name(d), " path=", int(path));
        const int64_t bad = mismatches(x, s.rows, s.n, s.k, path);
        CHECK(bad <= 0);
      }
    }
  }
}

}  // namespace

TEST_CASE("topk gpu f32: large shapes match the CPU bit for bit") {
  sweep<float>({{1, int64_t(1) << 20, 4096}, {2, 131072, 1024}, {4096, 8192, 256}, {16, 8192, 1024}},
               {Data::randn, Data::router});
  sweep<float>({{1, int64_t(1) << 20, 4096}, {16, 8192, 1024}}, {Data::ties, Data::special, Data::equal});
  sweep<float>({{1, int64_t(1) << 20, 1}, {3, 300000, 5000}}, {Data::randn, Data::ascending});
}

TEST_CASE("topk gpu f32: odd lengths, small rows, k = 1 and k = n") {
  sweep<float>({{3, 1001, 17},
                {5, 12345, 100},
                {7, 33333, 333},
                {1, 1, 1},
                {9, 1, 1},
                {4, 5, 5},
                {4, 7, 3},
                {300, 3000, 64},
                {3, 5000, 5000},
                {2, 8193, 8193},
                {2, 16385, 1},
                {1, 65537, 16384}},
               {Data::randn, Data::ties, Data::special, Data::router});
}

TEST_CASE("topk gpu f32: k above the shared-memory sort (CUB fallback)") {
  sweep<float>({{2, 20000, 20000}, {3, 40001, 17000}, {1, int64_t(1) << 20, 40000}},
               {Data::randn, Data::ties, Data::special});
}

TEST_CASE("topk gpu f64: matches the CPU bit for bit") {
  sweep<double>({{2, 131072, 1024}, {64, 8192, 256}, {3, 1001, 17}, {4, 5, 5}, {1, int64_t(1) << 20, 4096}},
                {Data::randn, Data::ties, Data::special});
  sweep<double>({{2, 10000, 9000}, {2, 9001, 8192}}, {Data::randn, Data::ties});
}

TEST_CASE("topk gpu: degenerate shapes and bad k") {
  using colt5::kernels::cuda::topk;
  std::vector<float> v;
  std::vector<int64_t> i;
  // k = 0 and rows = 0 launch nothing.
  CHECK_NOTHROW(topk((const float*)nullptr, 0, 10, 3, nullptr, nullptr, nullptr, nullptr));
  CHECK_NOTHROW(topk((const float*)nullptr, 4, 10, 0, nullptr, nullptr, nullptr, nullptr));
  CHECK_THROWS_WITH_AS(colt5::kernels::cuda::topk_workspace_bytes(2, 10, 11),
                       doctest::Contains("cuda topk: k must be in [0, n], got k=11 n=10"), colt5::Error);
  CHECK_THROWS_WITH_AS(topk((const float*)nullptr, 2, 10, -2, nullptr, nullptr, nullptr, nullptr),
                       doctest::Contains("got k=-2 n=10"), colt5::Error);
  CHECK_THROWS_WITH_AS(colt5::kernels::cuda::topk_workspace_bytes(1, 100000, 20000, TopkPath::block),
                       doctest::Contains("block path needs"), colt5::Error);
  // The shapes above really take the path the sweep expects.
  CHECK(colt5::kernels::cuda::topk_auto_path(4096, 8192, 256) == TopkPath::block);
  CHECK(colt5::kernels::cuda::topk_auto_path(1, int64_t(1) << 20, 4096) == TopkPath::multi_block);
  CHECK(colt5::kernels::cuda::topk_auto_path(2, 131072, 1024) == TopkPath::multi_block);
  CHECK(colt5::kernels::cuda::topk_workspace_bytes(4096, 8192, 256) == 0);
}

TEST_CASE("topk gpu: router rows, ties at 1.0 beyond k, first k indices win") {
  const int64_t n = 200000, k = 1000;
  std::vector<float> x(static_cast<size_t>(n), 0.125f);
  for (int64_t i = 5; i < n; i += 7) x[size_t(i)] = 1.0f;
  for (TopkPath path : {TopkPath::automatic, TopkPath::multi_block}) {
    std::vector<float> v;
    std::vector<int64_t> idx;
    gpu_topk(x, 1, n, k, path, v, idx);
    bool ok = true;
    for (int64_t j = 0; j < k; ++j) ok = ok && idx[size_t(j)] == 5 + 7 * j && v[size_t(j)] == 1.0f;
    CHECK(ok);
  }
}

#endif  // COLT5_WITH_CUDA
