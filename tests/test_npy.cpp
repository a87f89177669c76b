// .npy read/write.
#include <doctest/doctest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <unistd.h>

#include "colt5.h"

using namespace colt5;

namespace {

std::string raw_bytes(const Tensor& t) {
  Tensor c = t.detach().to(Device::cpu()).contiguous();
  return std::string(static_cast<const char*>(c.data_ptr()), c.numel() * dtype_size(c.dtype()));
}

Tensor from_bytes(const std::string& bytes, const Shape& shape, DType dt) {
  Tensor t = empty(shape, {.dtype = dt});
  REQUIRE(bytes.size() == static_cast<size_t>(t.numel()) * dtype_size(dt));
  if (!bytes.empty()) std::memcpy(t.data_ptr(), bytes.data(), bytes.size());
  return t;
}

template <class T>
std::string pod_bytes(const std::vector<T>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

// magic, version, header length (u16 for 1.0, u32 otherwise), header, data.
std::string npy_file(int major, const std::string& header, const std::string& data) {
  std::string out("\x93NUMPY", 6);
  out += static_cast<char>(major);
  out += '\0';
  int nlen = major == 1 ? 2 : 4;
  for (int k = 0; k < nlen; ++k) out += static_cast<char>((header.size() >> (8 * k)) & 0xff);
  return out + header + data;
}

}  // namespace

TEST_CASE("npy: round trip of every dtype, 0-d and empty is bit-identical") {
  uint32_t f32bits[] = {0x3f800000u, 0x80000000u, 0x7fc00001u, 0xff800000u, 0x00000001u, 0x7f7fffffu};
  std::vector<Tensor> cases = {
      from_bytes(std::string(reinterpret_cast<char*>(f32bits), sizeof f32bits), {2, 3}, DType::f32),
      from_vector({1.0 / 3, -0.0, 1e-310, -1e300}, {2, 1, 2}, {.dtype = DType::f64}),
      from_bytes(pod_bytes<uint16_t>({0x3c00, 0x8001, 0x7e01, 0x7bff, 0xfc00}), {5}, DType::f16),
      from_vector_i64({std::numeric_limits<int64_t>::min(), -1, 0, std::numeric_limits<int64_t>::max()}, {4}),
      from_vector_bool({true, false, true}, {3, 1}),
      scalar_tensor(-7.5),
      scalar_tensor(3, {.dtype = DType::i64}),
      zeros({2, 0, 3}, {.dtype = DType::f64}),
  };
  auto dir = std::filesystem::temp_directory_path() / ("colt5_npy_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  int k = 0;
  for (const Tensor& t : cases) {
    INFO("case " << k << " dtype " << dtype_name(t.dtype()) << " shape " << shape_str(t.shape()));
    std::string bytes = serialize_npy(t);
    CHECK(bytes.substr(0, 8) == std::string("\x93NUMPY\x01\x00", 8));
    size_t hlen = static_cast<unsigned char>(bytes[8]) | (static_cast<unsigned char>(bytes[9]) << 8);
    CHECK((10 + hlen) % 64 == 0);  // data 64-aligned as NumPy writes it
    CHECK(bytes[10 + hlen - 1] == '\n');
    Tensor r = parse_npy(bytes);
    CHECK(r.dtype() == t.dtype());
    CHECK(r.shape() == t.shape());
    CHECK(raw_bytes(r) == raw_bytes(t));

    std::string path = (dir / ("t" + std::to_string(k++) + ".npy")).string();
    save_npy(path, t);
    Tensor f = load_npy(path);
    CHECK(f.shape() == t.shape());
    CHECK(raw_bytes(f) == raw_bytes(t));
  }
  std::filesystem::remove_all(dir);
}

TEST_CASE("npy: the header is NumPy's dict; non-contiguous tensors are written in C order; bf16 as f32") {
  Tensor a = arange(0, 6, 1, {.dtype = DType::f32}).reshape({2, 3});
  std::string b = serialize_npy(a.t());
  std::string header = b.substr(10, 118);
  CHECK(header.rfind("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }", 0) == 0);
  CHECK(b.size() == 128 + 24);
  CHECK(parse_npy(b).to_vector<float>() == std::vector<float>{0, 3, 1, 4, 2, 5});
  CHECK(serialize_npy(from_vector({1, 2})).find("'shape': (2,), }") != std::string::npos);
  CHECK(serialize_npy(scalar_tensor(1)).find("'shape': (), }") != std::string::npos);
  CHECK(serialize_npy(from_vector_bool({true})).find("'descr': '|b1'") != std::string::npos);

  Tensor h = from_bytes(pod_bytes<uint16_t>({0x3f80, 0xc049, 0x0001}), {3}, DType::bf16);
  Tensor r = parse_npy(serialize_npy(h));
  CHECK(r.dtype() == DType::f32);
  CHECK(r.to_vector<double>() == h.to_vector<double>());  // exact widening
}

TEST_CASE("npy: hand-written headers of versions 1.0, 2.0 and 3.0 parse") {
  // NumPy 1.0 file for np.array([[1.5, -2.0]], dtype='<f8'), header padded to 128 bytes in all.
  std::string h1 = "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 2), }";
  REQUIRE(h1.size() == 59);
  h1 += std::string(128 - 10 - 59 - 1, ' ') + "\n";
  std::string f1 = npy_file(1, h1, pod_bytes<double>({1.5, -2.0}));
  REQUIRE(f1.size() == 128 + 16);
  Tensor t1 = parse_npy(f1, "a.npy");
  CHECK(t1.dtype() == DType::f64);
  CHECK(t1.shape() == Shape{1, 2});
  CHECK(t1.to_vector<double>() == std::vector<double>{1.5, -2.0});

  // Another key order, double quotes, no trailing comma, Python-2 longs, little padding: 2.0.
  Tensor t2 = parse_npy(npy_file(2, "{\"shape\": (3L,), \"fortran_order\": False, \"descr\": \"<i8\"}\n",
                                 pod_bytes<int64_t>({5, -6, 7})),
                        "b.npy");
  CHECK(t2.dtype() == DType::i64);
  CHECK(t2.to_vector<int64_t>() == std::vector<int64_t>{5, -6, 7});

  // 3.0 (UTF-8 header), f16 0-d, and a bool matrix in 1.0.
  Tensor t3 = parse_npy(npy_file(3, "{'descr': '<f2', 'fortran_order': False, 'shape': ()}   \n",
                                 pod_bytes<uint16_t>({0xc100})));
  CHECK(t3.dim() == 0);
  CHECK(t3.item<double>() == -2.5);
  Tensor t4 = parse_npy(npy_file(1, "{'descr': '|b1', 'fortran_order': False, 'shape': (2, 2), }\n",
                                 std::string("\x01\x00\x00\x01", 4)));
  CHECK(t4.dtype() == DType::b8);
  CHECK(t4.to_vector<int64_t>() == std::vector<int64_t>{1, 0, 0, 1});
}

TEST_CASE("npy: bad files are rejected naming the file and the problem") {
  auto rejects = [](const std::string& bytes, const std::string& problem) {
    INFO("expected: " << problem);
    CHECK_THROWS_WITH_AS(parse_npy(bytes, "bad.npy"), doctest::Contains(problem.c_str()), Error);
    CHECK_THROWS_WITH_AS(parse_npy(bytes, "bad.npy"), doctest::Contains("bad.npy"), Error);
  };
  auto hdr = [](const std::string& descr, const std::string& fortran, const std::string& shape) {
    return "{'descr': '" + descr + "', 'fortran_order': " + fortran + ", 'shape': " + shape + ", }\n";
  };
  std::string f4x2 = pod_bytes<float>({1, 2});
  CHECK(parse_npy(npy_file(1, hdr("<f4", "False", "(2,)"), f4x2)).numel() == 2);

  rejects(npy_file(1, hdr("<f4", "True", "(2,)"), f4x2), "fortran_order is True");
  std::string magic = npy_file(1, hdr("<f4", "False", "(2,)"), f4x2);
  magic[1] = 'X';
  rejects(magic, "bad magic");
  rejects("PK\x03\x04 this is a zip", "bad magic");
  rejects("\x93NUM", "too short");
  rejects(npy_file(4, hdr("<f4", "False", "(2,)"), f4x2), "unsupported format version 4.0");
  rejects(npy_file(1, hdr(">f4", "False", "(2,)"), f4x2), "big-endian");
  rejects(npy_file(1, hdr("<i4", "False", "(2,)"), f4x2), "unsupported dtype '<i4'");
  rejects(npy_file(1, hdr("|O", "False", "(2,)"), f4x2), "object arrays");
  rejects(npy_file(1, "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }\n", f4x2),
          "structured");
  rejects(npy_file(1, hdr("<f4", "False", "(3,)"), f4x2), "data truncated: shape [3] of '<f4' needs 12 bytes");
  rejects(npy_file(1, hdr("<f4", "False", "(1,)"), f4x2), "4 unexpected bytes after the data");
  rejects(npy_file(1, "{'descr': '<f4', 'shape': (2,), }\n", f4x2), "must have the keys");
  rejects(npy_file(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 'y'}\n", f4x2),
          "unexpected key 'x'");
  rejects(npy_file(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (-2,), }\n", f4x2),
          "expected a non-negative integer");
  rejects(npy_file(1, "{'descr': '<f4', 'fortran_order': 0, 'shape': (2,), }\n", f4x2), "malformed header");
  rejects(npy_file(1, "{'descr': '<f4' 'fortran_order': False}\n", f4x2), "expected ','");
  rejects(npy_file(1, hdr("|b1", "False", "(2,)"), std::string("\x01\x05", 2)), "byte value 5");
  {
    std::string big = npy_file(1, hdr("<f4", "False", "(2,)"), f4x2);
    big[8] = '\xff';
    big[9] = '\x7f';
    rejects(big, "exceeds the file size");
  }
  CHECK_THROWS_WITH_AS(load_npy("/nonexistent/x.npy"), doctest::Contains("/nonexistent/x.npy: cannot open"), Error);
  CHECK_THROWS_WITH_AS(save_npy("/nonexistent/x.npy", zeros({1})), doctest::Contains("/nonexistent/x.npy: cannot open"),
                       Error);
}
