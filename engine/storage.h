// Storage: one allocation on one device, shared by every tensor view of it.
// Memory comes from the device's allocator (engine/allocator.h) and goes back
// to it when the last view is gone.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>

#include "engine/device.h"

namespace colt5 {

struct Storage {
  void* data = nullptr;
  size_t nbytes = 0;
  Device device;
  // Bumped by every in-place write; autograd checks that tensors it saved for
  // the backward were not modified in between.
  uint64_t version = 0;

  Storage(size_t nbytes, Device device);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
};

using StoragePtr = std::shared_ptr<Storage>;

}  // namespace colt5
