// NumPy .npy files (format versions 1.0, 2.0, 3.0):
//
//   "\x93NUMPY" major minor, header length (u16 LE for 1.x, u32 LE for 2.x/3.x),
//   header: a Python dict literal {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
//   padded with spaces and a newline, then the data in C order.
//
// dtypes: '<f4' (f32), '<f8' (f64), '<f2' (f16), '<i8' (i64), '|b1' (bool).
// NumPy has no bfloat16: a bf16 tensor is written as '<f4' (exact: every bf16
// value is an f32 value) and reads back as f32. Reading rejects, with the file
// name and the problem: bad magic, unknown version, a header that is not the
// expected dict, fortran_order True, big-endian or other dtypes (e.g. '<i4',
// object arrays), and data shorter or longer than the shape needs.
// Writing uses version 1.0 (2.0 when the header needs it) and pads the header
// so the data starts at a multiple of 64 bytes, as NumPy does.
#pragma once
#include <string>

#include "engine/tensor.h"

namespace colt5 {

// Reads a .npy file into a contiguous CPU tensor.
Tensor load_npy(const std::string& path);
// Writes t (any layout or device; values in C order). Replaced atomically.
void save_npy(const std::string& path, const Tensor& t);

// In-memory forms: `bytes` is a whole file; `name` stands for the file in messages.
Tensor parse_npy(const std::string& bytes, const std::string& name = "<memory>");
std::string serialize_npy(const Tensor& t);

}  // namespace colt5
