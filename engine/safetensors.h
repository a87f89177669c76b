// safetensors files (https://github.com/huggingface/safetensors):
//
//   [8 bytes: header length N, little-endian u64]
//   [N bytes: JSON {"__metadata__": {str: str}?,
//                   NAME: {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...}]
//   [data area: each tensor's bytes, C order, little-endian, at [begin, end)]
//
// Supported dtypes: F32, F64, F16, BF16, I64, BOOL (colt5's six). Reading
// validates everything and every error names the file, the problem and, where
// there is one, the tensor: header length against the file size, the JSON,
// dtype, shape, shape x dtype size == end - begin, offsets inside the data area,
// tensors neither overlapping nor leaving gaps (as the reference reader
// requires: the data area is exactly the tensors' bytes), names unique.
//
// Writing does what the reference writer does: the header is padded with
// spaces to a multiple of 8 bytes (so the data area starts 8-aligned), tensors
// are laid out back to back by element size (largest first) then name, so every
// tensor starts aligned to its element size; the JSON lists "__metadata__"
// first (when given) and then the tensors sorted by name. Tensors may be
// non-contiguous or on a GPU; their values are written in C order.
#pragma once
#include <map>
#include <string>

#include "engine/tensor.h"

namespace colt5 {

struct SafetensorsFile {
  std::map<std::string, Tensor> tensors;           // contiguous CPU tensors
  std::map<std::string, std::string> metadata;     // "__metadata__", empty when absent
};

// Reads a file (tensors on the CPU, in the file's dtypes).
SafetensorsFile read_safetensors(const std::string& path);
// The same, tensors only; metadata copied to *metadata when given.
std::map<std::string, Tensor> load_safetensors(const std::string& path,
                                               std::map<std::string, std::string>* metadata = nullptr);
// Writes a file (replaced atomically: written next to it, then renamed).
void save_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// In-memory forms: `bytes` is a whole file; `name` stands for the file in messages.
SafetensorsFile parse_safetensors(const std::string& bytes, const std::string& name = "<memory>");
std::string serialize_safetensors(const std::map<std::string, Tensor>& tensors,
                                  const std::map<std::string, std::string>& metadata = {});

// "F32" <-> DType::f32 etc.; the parser throws for other names.
const char* safetensors_dtype_name(DType t);

}  // namespace colt5
