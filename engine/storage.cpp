#include "engine/storage.h"

#include "engine/allocator.h"

namespace colt5 {

Storage::Storage(size_t n, Device d) : nbytes(n), device(d) {
  data = device_alloc(n, d);
}

Storage::~Storage() {
  if (data) device_free(data, nbytes, device);
}

}  // namespace colt5
