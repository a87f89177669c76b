// The CUDA caching allocator, streams and error checks (runs only with a GPU:
// tests/gpu/main.cpp exits 77 otherwise).
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "colt5.h"
#include "engine/cuda/check.h"
#include "engine/cuda/cublas.h"
#include "engine/cuda/memory.h"

namespace {

using namespace colt5;
const Device kGpu = Device::cuda(0);

// One SGD step of a small MLP: the allocation pattern of a training loop.
struct Mlp {
  Tensor w1, b1, w2, b2;
  explicit Mlp(Generator& g) {
    w1 = uniform({64, 32}, -0.2, 0.2, g, {.device = kGpu}).requires_grad_();
    b1 = zeros({64}, {.device = kGpu}).requires_grad_();
    w2 = uniform({10, 64}, -0.2, 0.2, g, {.device = kGpu}).requires_grad_();
    b2 = zeros({10}, {.device = kGpu}).requires_grad_();
  }
  double step(const Tensor& x, const Tensor& y, double lr) {
    Tensor loss = cross_entropy(linear(gelu(linear(x, w1, b1)), w2, b2), y);
    loss.backward();
    for (Tensor* p : {&w1, &b1, &w2, &b2}) {
      NoGradGuard ng;
      Tensor next = (*p - p->grad() * lr).detach();
      *p = next.requires_grad_();
    }
    return loss.item<double>();
  }
};

}  // namespace

TEST_CASE("cuda allocator: training-like steps stop calling cudaMalloc") {
  Generator g(7);
  Mlp mlp(g);
  Tensor x = randn({128, 32}, g, {.device = kGpu});
  Tensor y = randint(0, 10, {128}, g, {.dtype = DType::i64, .device = kGpu});
  std::vector<int64_t> allocs;
  for (int s = 0; s < 12; ++s) {
    mlp.step(x, y, 0.1);
    allocs.push_back(memory_stats(kGpu).driver_allocs);
  }
  INFO("cudaMalloc calls after each step: first " << allocs.front() << ", after step 4 " << allocs[3] << ", last "
                                                  << allocs.back());
  CHECK(allocs.front() > 0);
  CHECK(allocs[3] == allocs.back());  // steady state: every block comes from the cache
}

TEST_CASE("cuda allocator: current and peak bytes, cache reuse, empty_cache") {
  cuda::synchronize(0);
  // Earlier tests in this process leave blocks in the cache; a larger cached
  // block would serve the request below (and count in full): start empty.
  cuda::empty_cache(0);
  reset_peak_memory(kGpu);
  const MemoryStats s0 = memory_stats(kGpu);
  const int64_t n = 3 << 20;  // 12 MiB of f32, a multiple of the 2 MiB granularity
  int64_t allocs_before = 0;
  {
    Tensor t = empty({n}, {.device = kGpu});
    const MemoryStats s1 = memory_stats(kGpu);
    CHECK(s1.current_bytes == s0.current_bytes + 4 * n);
    CHECK(s1.peak_bytes >= s1.current_bytes);
    allocs_before = s1.driver_allocs;
  }
  const MemoryStats s2 = memory_stats(kGpu);
  CHECK(s2.current_bytes == s0.current_bytes);
  CHECK(s2.peak_bytes >= s0.current_bytes + 4 * n);
  CHECK(s2.cached_bytes >= 4 * n);
  {
    Tensor t = empty({n}, {.device = kGpu});  // same size: from the cache
    CHECK(memory_stats(kGpu).driver_allocs == allocs_before);
  }
  reset_peak_memory(kGpu);
  CHECK(memory_stats(kGpu).peak_bytes == memory_stats(kGpu).current_bytes);
  cuda::empty_cache(0);
  CHECK(memory_stats(kGpu).cached_bytes == 0);
}

TEST_CASE("cuda allocator: out of memory throws, naming the request and the cache") {
  { Tensor warm = empty({1 << 20}, {.device = kGpu}); }  // something cached
  const int64_t tb = int64_t{1} << 40;
  bool threw = false;
  try {
    Tensor t = empty({tb / 4}, {.device = kGpu});
  } catch (const Error& e) {
    threw = true;
    const std::string msg = e.what();
    INFO(msg);
    CHECK(msg.find("out of memory") != std::string::npos);
    CHECK(msg.find(std::to_string(tb) + " bytes") != std::string::npos);
    CHECK(msg.find("cache held") != std::string::npos);
  }
  CHECK(threw);
  // The device is still usable afterwards.
  Tensor t = ones({4}, {.device = kGpu});
  CHECK(sum(t).item<double>() == 4.0);
}

TEST_CASE("cuda: CUDA_CHECK and CUBLAS_CHECK throw with file, line and the library's string") {
  bool threw = false;
  try {
    CUDA_CHECK(cudaSetDevice(9999));
  } catch (const Error& e) {
    threw = true;
    const std::string msg = e.what();
    INFO(msg);
    CHECK(msg.find("cudaSetDevice") != std::string::npos);
    CHECK(msg.find("cudaErrorInvalidDevice") != std::string::npos);
    CHECK(msg.find("test_cuda_memory.cpp") != std::string::npos);
  }
  CHECK(threw);
  cudaGetLastError();
  threw = false;
  try {
    CUBLAS_CHECK(CUBLAS_STATUS_INVALID_VALUE);
  } catch (const Error& e) {
    threw = true;
    const std::string msg = e.what();
    INFO(msg);
    CHECK(msg.find("CUBLAS_STATUS_INVALID_VALUE") != std::string::npos);
    CHECK(msg.find("test_cuda_memory.cpp") != std::string::npos);
  }
  CHECK(threw);
  // Engine-level device errors name the device.
  CHECK_THROWS_WITH_AS(cuda::set_device(12345), doctest::Contains("cuda:12345 does not exist"), Error);
}

TEST_CASE("cuda: one current stream per device; a user stream can replace it") {
  cudaStream_t s0 = cuda::current_stream(0);
  CHECK(s0 != nullptr);
  CHECK(cuda::current_stream(0) == s0);
  cudaStream_t user = nullptr;
  CUDA_CHECK(cudaStreamCreateWithFlags(&user, cudaStreamNonBlocking));
  cuda::set_current_stream(0, user);
  {
    Generator g(3);
    Tensor a = randn({256, 256}, g, {.device = kGpu});
    Tensor c = matmul(a, a);  // cuBLAS follows the stream
    Tensor ref = matmul(a.to(Device::cpu()), a.to(Device::cpu()));
    std::vector<float> x = c.to_vector<float>(), y = ref.to_vector<float>();
    double worst = 0;
    for (size_t i = 0; i < x.size(); ++i) worst = std::max(worst, std::abs(double(x[i]) - y[i]));
    CHECK(worst < 1e-3);
  }
  cuda::synchronize(0);
  cuda::set_current_stream(0, s0);
  CUDA_CHECK(cudaStreamDestroy(user));  // its cached blocks stay in its (now unused) free list
  Tensor t = full({3}, 2.0, {.device = kGpu});
  CHECK(sum(t).item<double>() == 6.0);
}

TEST_CASE("cuda: TF32 is off by default and switchable") {
  CHECK_FALSE(cuda::allow_tf32());
  cuda::set_allow_tf32(true);
  CHECK(cuda::allow_tf32());
  cuda::set_allow_tf32(false);
  CHECK_FALSE(cuda::allow_tf32());
}

TEST_CASE("cuda: host copies are complete when they return") {
  Generator g(11);
  for (int i = 0; i < 5; ++i) {
    Tensor h = randn({1 << 18}, g);
    Tensor d = h.to(kGpu);
    Tensor d2 = mul(d, 2.0);  // queued work, then a device-to-host copy right away
    std::vector<float> back = d2.to_vector<float>(), want = h.to_vector<float>();
    bool same = true;
    for (size_t k = 0; k < back.size(); ++k) same = same && back[k] == 2.0f * want[k];
    CHECK(same);
  }
}

TEST_CASE("cuda: tensors on two devices") {
  if (cuda_device_count() < 2) return;  // one GPU: nothing to check
  Tensor a = arange(10, {.dtype = DType::f32, .device = Device::cuda(0)});
  Tensor b = a.to(Device::cuda(1));
  CHECK(b.device() == Device::cuda(1));
  CHECK(sum(b).item<double>() == 45.0);
  CHECK_THROWS_AS(add(a, b), Error);
}
