// Random-access bytes of a file, or of an in-memory string standing for one:
// what the safetensors and .npy readers parse. Errors are prefixed with the
// format's name and the file's name ("npy: x.npy: cannot open ...").
#pragma once
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "engine/error.h"

namespace colt5::io {

struct Source {
  std::string name;
  uint64_t size = 0;
  virtual ~Source() = default;
  virtual void read(uint64_t offset, void* dst, size_t n) = 0;
};

struct MemorySource : Source {
  const std::string& bytes;
  MemorySource(const std::string& b, const std::string& n) : bytes(b) {
    name = n;
    size = b.size();
  }
  void read(uint64_t offset, void* dst, size_t n) override {
    if (n) std::memcpy(dst, bytes.data() + offset, n);
  }
};

struct FileSource : Source {
  std::ifstream f;
  const char* format;
  FileSource(const std::string& path, const char* fmt) : f(path, std::ios::binary), format(fmt) {
    name = path;
    COLT5_CHECK(f.is_open(), format, ": ", path, ": cannot open the file for reading");
    std::error_code ec;
    uint64_t s = std::filesystem::file_size(path, ec);
    COLT5_CHECK(!ec, format, ": ", path, ": cannot read the file size (", ec.message(), ")");
    size = s;
  }
  void read(uint64_t offset, void* dst, size_t n) override {
    f.seekg(static_cast<std::streamoff>(offset));
    f.read(static_cast<char*>(dst), static_cast<std::streamsize>(n));
    COLT5_CHECK(f && static_cast<size_t>(f.gcount()) == n, format, ": ", name, ": read error at byte ", offset, " (",
                n, " bytes)");
  }
};

}  // namespace colt5::io
