// Where a tensor lives. CPU always exists; CUDA devices exist when the engine
// was built with COLT5_CUDA and a GPU is present at run time.
#pragma once
#include <cstdint>
#include <string>

namespace colt5 {

enum class DeviceType : uint8_t { cpu, cuda };

struct Device {
  DeviceType type = DeviceType::cpu;
  int index = 0;

  static Device cpu() { return {DeviceType::cpu, 0}; }
  static Device cuda(int i = 0) { return {DeviceType::cuda, i}; }
  bool is_cpu() const { return type == DeviceType::cpu; }
  bool is_cuda() const { return type == DeviceType::cuda; }
  bool operator==(const Device& o) const { return type == o.type && index == o.index; }
  bool operator!=(const Device& o) const { return !(*this == o); }
  std::string str() const { return is_cpu() ? "cpu" : "cuda:" + std::to_string(index); }
  // "cpu", "cuda", "cuda:1"
  static Device parse(const std::string& s);
};

// True when the engine was compiled with CUDA support.
bool cuda_compiled();
// Number of usable CUDA devices at run time (0 without CUDA or without a GPU).
int cuda_device_count();
inline bool cuda_available() { return cuda_device_count() > 0; }
// Waits until all work queued on the device is done (no-op on the CPU).
void device_synchronize(Device device);

}  // namespace colt5
