// README, "Using the layers from C++": weights from a safetensors file and
// inputs from .npy, as exported from the PyTorch package. The hidden set-up
// writes them from another instance of the layer (what the Python side would
// do); check: the loaded layer gives that instance's output bit for bit, and
// y.npy holds it.
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

  {  // stands in for the Python side: save_file(m.state_dict(), "w.safetensors"); np.save("x.npy", x)
    Generator other(1);
    ConditionalRoutedAttention m({.dim = 512, .num_heavy_tokens_q = 32, .num_heavy_tokens_kv = 1024}, other);
    m.save_weights("w.safetensors");
    save_npy("x.npy", randn({1, small ? 2048 : 4096, 512}, other));
  }

  // README:begin
  // the same keyword arguments as in Python
  ConditionalRoutedAttention attn({.dim = 512, .num_heavy_tokens_q = 32, .num_heavy_tokens_kv = 1024}, gen);
  // strict: missing, unexpected and mis-shaped names are all reported at once
  attn.load_weights("w.safetensors");
  attn.to(device);

  Tensor x = load_npy("x.npy").to(device);  // (1, 4096, 512) float32
  Tensor y = attn(x);
  save_npy("y.npy", y.to(Device::cpu()));   // np.load("y.npy") in Python
  // README:end

  Generator other(1);
  ConditionalRoutedAttention m({.dim = 512, .num_heavy_tokens_q = 32, .num_heavy_tokens_kv = 1024}, other);
  m.to(device);
  Tensor want = m(randn({1, x.size(1), 512}, other).to(device)).to(Device::cpu());
  bool ok = readme::check_output("y", y, {1, x.size(1), 512}, device);
  if (ok && y.to(Device::cpu()).to_vector<float>() != want.to_vector<float>())
    ok = readme::fail("the loaded layer's output differs from the saved layer's");
  if (ok && load_npy("y.npy").to_vector<float>() != want.to_vector<float>()) ok = readme::fail("y.npy differs");
  return ok ? 0 : 1;
}
