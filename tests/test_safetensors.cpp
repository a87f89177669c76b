// safetensors read/write and the JSON parser/writer under it.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <unistd.h>

#include "colt5.h"

using namespace colt5;

namespace {

// The raw bytes of a tensor's values in C order.
std::string raw_bytes(const Tensor& t) {
  Tensor c = t.detach().to(Device::cpu()).contiguous();
  return std::string(static_cast<const char*>(c.data_ptr()), c.numel() * dtype_size(c.dtype()));
}

// A tensor of dtype `dt` with exactly these bytes.
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

// 8-byte little-endian length + header + data.
std::string st_file(const std::string& header, const std::string& data) {
  std::string out;
  uint64_t n = header.size();
  for (int k = 0; k < 8; ++k) out += static_cast<char>((n >> (8 * k)) & 0xff);
  return out + header + data;
}

std::filesystem::path temp_dir() {
  auto d = std::filesystem::temp_directory_path() / ("colt5_io_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(d);
  return d;
}

// One tensor of each dtype, with awkward values: NaN payloads, -0, inf, subnormals, extremes.
std::map<std::string, Tensor> every_dtype() {
  std::map<std::string, Tensor> m;
  uint32_t f32bits[] = {0x3f800000u, 0x80000000u, 0x7fc00001u, 0xff800000u, 0x00000001u, 0x7f7fffffu};
  m["f32"] = from_bytes(std::string(reinterpret_cast<char*>(f32bits), sizeof f32bits), {2, 3}, DType::f32);
  m["f64"] = from_vector({1.0 / 3, -0.0, 1e-310, -1e300}, {2, 2}, {.dtype = DType::f64});
  m["f16"] = from_bytes(pod_bytes<uint16_t>({0x3c00, 0x8001, 0x7e01, 0x7bff, 0xfc00}), {5}, DType::f16);
  m["bf16"] = from_bytes(pod_bytes<uint16_t>({0x3f80, 0xff81, 0x0001, 0x7f7f}), {1, 4}, DType::bf16);
  m["i64"] = from_vector_i64({std::numeric_limits<int64_t>::min(), -1, 0, std::numeric_limits<int64_t>::max()},
                             {4, 1});
  m["bool"] = from_vector_bool({true, false, false, true, true}, {5});
  m["scalar"] = scalar_tensor(2.5, {.dtype = DType::f64});
  m["empty"] = zeros({0, 3});
  return m;
}

}  // namespace

// ------------------------------------------------------------ JSON

TEST_CASE("safetensors json: values, escapes and numbers round trip") {
  Json j = Json::parse(R"( {"a": [1, -2, 3.5, -0.25e2, true, false, null],
                            "s": "q\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00",
                            "big": 9223372036854775807, "small": -9223372036854775808,
                            "huge": 18446744073709551616, "nested": {"x": {}} } )");
  REQUIRE(j.is_object());
  CHECK(j.size() == 6);
  const Json& a = j.at("a");
  CHECK(a.at(size_t{0}).as_int() == 1);
  CHECK(a.at(1).as_int() == -2);
  CHECK(a.at(2).as_double() == 3.5);
  CHECK(!a.at(2).is_integer());
  CHECK(a.at(3).as_double() == -25.0);
  CHECK(a.at(4).as_bool());
  CHECK(!a.at(5).as_bool());
  CHECK(a.at(6).is_null());
  CHECK(j.at("s").as_string() == "q\"\\/\b\f\n\r\t\xc3\xa9\xf0\x9f\x98\x80");
  CHECK(j.at("big").as_int() == std::numeric_limits<int64_t>::max());
  CHECK(j.at("small").as_int() == std::numeric_limits<int64_t>::min());
  CHECK(!j.at("huge").is_integer());
  CHECK(j.at("huge").as_double() == 18446744073709551616.0);
  CHECK(j.at("nested").at("x").is_object());
  // dump -> parse is the identity, compact and pretty; control characters are escaped.
  CHECK(Json::parse(j.dump()) == j);
  CHECK(Json::parse(j.dump(2)) == j);
  CHECK(Json(std::string("a\x01")).dump() == "\"a\\u0001\"");
  CHECK(Json(0.1).dump() == "0.1");
  CHECK(Json(size_t{7}).dump() == "7");
  CHECK(Json(-3LL).as_int() == -3);
  CHECK_THROWS_WITH_AS(Json(UINT64_MAX), doctest::Contains("does not fit in int64"), Error);
  CHECK(Json(2.0).dump() == "2.0");
  CHECK(Json::parse(Json(0.1).dump()).as_double() == 0.1);
  CHECK_THROWS_WITH_AS(Json(std::nan("")).dump(), doctest::Contains("non-finite"), Error);
  CHECK_THROWS_WITH_AS(j.at("nope"), doctest::Contains("missing key \"nope\""), Error);
  CHECK_THROWS_WITH_AS(j.at("s").as_int(), doctest::Contains("expected an integer, got string"), Error);
}

TEST_CASE("safetensors json: malformed text is rejected with the byte offset") {
  auto bad = [](const std::string& text, const char* problem) {
    INFO(text);
    CHECK_THROWS_WITH_AS(Json::parse(text, "cfg.json"), doctest::Contains(problem), Error);
    CHECK_THROWS_WITH_AS(Json::parse(text, "cfg.json"), doctest::Contains("cfg.json: invalid JSON at byte"), Error);
  };
  bad("", "expected a value");
  bad("{\"a\": 1,}", "expected a string key");
  bad("[1, 2,]", "expected a value");
  bad("[1 2]", "expected ',' or ']'");
  bad("{\"a\" 1}", "expected ':'");
  bad("01", "leading zero");
  bad("1.", "digit after '.'");
  bad("1e", "exponent");
  bad("-", "expected a digit");
  bad("1e999", "out of range");
  bad("\"abc", "unterminated string");
  bad("\"a\nb\"", "control character");
  bad("\"\\x\"", "unknown escape");
  bad("\"\\ud800\"", "unpaired surrogate");
  bad("\"\\u12g4\"", "bad hex digit");
  bad("tru", "expected 'true'");
  bad("{} {}", "unexpected text after the value");
  bad(std::string(300, '['), "nesting deeper than");
}

// ------------------------------------------------------------ safetensors

TEST_CASE("safetensors: round trip of every dtype is bit-identical (memory and file)") {
  auto m = every_dtype();
  std::map<std::string, std::string> meta = {{"format", "pt"}, {"note", "quote \" and \xc3\xa9"}};
  std::string bytes = serialize_safetensors(m, meta);
  SafetensorsFile back = parse_safetensors(bytes);
  CHECK(back.metadata == meta);
  REQUIRE(back.tensors.size() == m.size());
  for (const auto& [name, t] : m) {
    INFO(name);
    const Tensor& r = back.tensors.at(name);
    CHECK(r.dtype() == t.dtype());
    CHECK(r.shape() == t.shape());
    CHECK(r.is_contiguous());
    CHECK(raw_bytes(r) == raw_bytes(t));
  }
  CHECK(back.tensors.at("scalar").dim() == 0);

  auto path = (temp_dir() / "all.safetensors").string();
  save_safetensors(path, m, meta);
  std::ifstream f(path, std::ios::binary);
  std::string on_disk((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  CHECK(on_disk == bytes);  // the file is exactly the serialized bytes
  std::map<std::string, std::string> meta2;
  auto loaded = load_safetensors(path, &meta2);
  CHECK(meta2 == meta);
  for (const auto& [name, t] : m) CHECK(raw_bytes(loaded.at(name)) == raw_bytes(t));
  CHECK(!std::filesystem::exists(path + ".tmp"));
  std::filesystem::remove(path);
}

TEST_CASE("safetensors: non-contiguous and requires-grad tensors are written in C order") {
  Tensor a = arange(0, 12, 1, {.dtype = DType::f32}).reshape({3, 4});
  Tensor t = a.t();                      // (4, 3), strides (1, 4)
  Tensor s = a.slice(1, 0, 4, 2);        // (3, 2), every other column
  Tensor g = from_vector({1, 2}, {2}, {.requires_grad = true});
  auto back = parse_safetensors(serialize_safetensors({{"t", t}, {"s", s}, {"g", g}})).tensors;
  CHECK(back.at("t").shape() == Shape{4, 3});
  CHECK(back.at("t").to_vector<float>() == std::vector<float>{0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11});
  CHECK(back.at("s").to_vector<float>() == std::vector<float>{0, 2, 4, 6, 8, 10});
  CHECK(!back.at("g").requires_grad());
  CHECK(back.at("g").to_vector<float>() == std::vector<float>{1, 2});
}

TEST_CASE("safetensors: the writer pads the header to 8 bytes and aligns every tensor") {
  auto m = every_dtype();
  std::string bytes = serialize_safetensors(m, {{"k", "v"}});
  uint64_t n = 0;
  for (int k = 7; k >= 0; --k) n = (n << 8) | static_cast<unsigned char>(bytes[k]);
  CHECK(n % 8 == 0);
  std::string header = bytes.substr(8, n);
  Json h = Json::parse(header);
  // "__metadata__" first, then the tensors sorted by name.
  std::vector<std::string> keys;
  for (const auto& [k, v] : h.as_object()) keys.push_back(k);
  std::vector<std::string> want = {"__metadata__", "bf16", "bool", "empty", "f16", "f32", "f64", "i64", "scalar"};
  CHECK(keys == want);
  // Data laid out largest element size first, then by name; back to back; each aligned to its size.
  std::vector<std::string> layout_order = {"f64", "i64", "scalar", "empty", "f32", "bf16", "f16", "bool"};
  int64_t pos = 0;
  for (const std::string& name : layout_order) {
    INFO(name);
    const Json& offs = h.at(name).at("data_offsets");
    CHECK(offs.at(size_t{0}).as_int() == pos);
    pos = offs.at(1).as_int();
    CHECK(offs.at(size_t{0}).as_int() % static_cast<int64_t>(dtype_size(m.at(name).dtype())) == 0);
  }
  CHECK(static_cast<uint64_t>(pos) == bytes.size() - 8 - n);
  CHECK(h.at("scalar").at("shape").size() == 0);
  CHECK(h.at("bool").at("dtype").as_string() == "BOOL");
  CHECK(h.at("bf16").at("dtype").as_string() == "BF16");
}

TEST_CASE("safetensors: a hand-built file parses to known values") {
  // Every byte written out: length 0x70 = 112 (110 bytes of JSON + 2 spaces of padding),
  // the JSON, then f16 1.0 (0x3c00), f16 -2.5 (0xc100) and one true byte.
  std::string header =
      R"({"w":{"dtype":"F16","shape":[2],"data_offsets":[0,4]},"m":{"dtype":"BOOL","shape":[1,1],"data_offsets":[4,5]}})";
  REQUIRE(header.size() == 110);
  std::string file = std::string("\x70\x00\x00\x00\x00\x00\x00\x00", 8) + header + "  " +
                     std::string("\x00\x3c\x00\xc1\x01", 5);
  SafetensorsFile st = parse_safetensors(file, "hand.safetensors");
  CHECK(st.metadata.empty());
  REQUIRE(st.tensors.size() == 2);
  const Tensor& w = st.tensors.at("w");
  CHECK(w.dtype() == DType::f16);
  CHECK(w.shape() == Shape{2});
  CHECK(w.to_vector<double>() == std::vector<double>{1.0, -2.5});
  const Tensor& m = st.tensors.at("m");
  CHECK(m.dtype() == DType::b8);
  CHECK(m.shape() == Shape{1, 1});
  CHECK(m.item<bool>());

  // F32, F64, BF16 and I64 values, plus metadata and a 0-d tensor.
  std::string data = pod_bytes<double>({-0.5}) + pod_bytes<int64_t>({-7, 1LL << 40}) + pod_bytes<float>({3.25f}) +
                     pod_bytes<uint16_t>({0x4049});  // bf16 3.140625
  std::string h2 = R"({"__metadata__":{"format":"pt"},"d":{"dtype":"F64","shape":[],"data_offsets":[0,8]},)"
                   R"("i":{"dtype":"I64","shape":[2],"data_offsets":[8,24]},)"
                   R"("f":{"dtype":"F32","shape":[1],"data_offsets":[24,28]},)"
                   R"("h":{"dtype":"BF16","shape":[1],"data_offsets":[28,30]}})";
  SafetensorsFile st2 = parse_safetensors(st_file(h2, data));
  CHECK(st2.metadata.at("format") == "pt");
  CHECK(st2.tensors.at("d").dim() == 0);
  CHECK(st2.tensors.at("d").item<double>() == -0.5);
  CHECK(st2.tensors.at("i").to_vector<int64_t>() == std::vector<int64_t>{-7, 1LL << 40});
  CHECK(st2.tensors.at("f").item<float>() == 3.25f);
  CHECK(st2.tensors.at("h").item<double>() == 3.140625);
}

TEST_CASE("safetensors: corrupted files are rejected naming the file, the problem and the tensor") {
  const std::string F = "bad.safetensors";
  auto rejects = [&](const std::string& bytes, std::vector<std::string> parts) {
    parts.push_back(F);
    try {
      parse_safetensors(bytes, F);
      FAIL("accepted a corrupted file; expected: " << parts.front());
    } catch (const Error& e) {
      std::string msg = e.what();
      for (const auto& p : parts) {
        INFO("message: " << msg);
        CHECK(msg.find(p) != std::string::npos);
      }
    }
  };
  std::string good_h = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                       R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})";
  std::string data(12, '\0');
  std::string good = st_file(good_h, data);
  REQUIRE(parse_safetensors(good).tensors.size() == 2);

  rejects("", {"too short for the 8-byte header length"});
  rejects(std::string("\x05\x00\x00", 3), {"too short"});
  rejects(good.substr(0, good.size() - 1), {"tensor \"b\"", "run past the end of the data area"});  // truncated data
  rejects(good.substr(0, 40), {"header length", "exceeds the file size"});                          // truncated header
  {
    std::string big = good;
    big[5] = '\x01';  // header length ~ 2^40
    rejects(big, {"header length", "exceeds the file size"});
  }
  rejects(st_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},})", std::string(8, '\0')),
          {"invalid JSON", "expected a string key"});
  rejects(st_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})", std::string(8, '\0')),
          {"invalid JSON"});
  rejects(st_file("[1]", ""), {"does not start with '{'"});
  rejects(st_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                  R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,16]}})",
                  std::string(12, '\0')),
          {"tensor \"b\"", "data_offsets [8, 16]", "needs 4 bytes"});
  rejects(st_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                  R"("b":{"dtype":"F32","shape":[1],"data_offsets":[12,16]}})",
                  std::string(12, '\0')),
          {"tensor \"b\"", "run past the end"});
  rejects(st_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                  R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                  std::string(8, '\0')),
          {"overlap tensor \"a\""});
  rejects(st_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                  R"("b":{"dtype":"F32","shape":[1],"data_offsets":[12,16]}})",
                  std::string(16, '\0')),
          {"tensor \"b\"", "bytes [8, 12) of the data area unused"});
  rejects(st_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", std::string(12, '\0')),
          {"4 bytes after the last tensor"});
  rejects(st_file(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", std::string(8, '\0')),
          {"tensor \"a\"", "shape [3] of F32 needs 12 bytes but data_offsets [0, 8] span 8"});
  rejects(st_file(R"({"a":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}})", std::string(8, '\0')),
          {"tensor \"a\"", "unsupported dtype \"I32\""});
  rejects(st_file(R"({"a":{"dtype":"F17","shape":[2],"data_offsets":[0,8]}})", std::string(8, '\0')),
          {"unsupported dtype \"F17\""});
  rejects(st_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                  R"("a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
                  std::string(16, '\0')),
          {"tensor \"a\"", "duplicate tensor name"});
  rejects(st_file(R"({"a":{"shape":[2],"data_offsets":[0,8]}})", std::string(8, '\0')),
          {"tensor \"a\"", "missing \"dtype\""});
  rejects(st_file(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", std::string(8, '\0')),
          {"shape entries must be non-negative integers"});
  rejects(st_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", std::string(8, '\0')),
          {"end before they begin"});
  rejects(st_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", std::string(8, '\0')),
          {"\"data_offsets\" must be [begin, end]"});
  rejects(st_file(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,8]}})",
                  std::string(8, '\0')),
          {"is too large"});
  rejects(st_file(R"({"__metadata__":{"n":1},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                  std::string(8, '\0')),
          {"\"__metadata__\" value of \"n\" must be a string"});
  rejects(st_file(R"({"m":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}})", std::string("\x01\x02", 2)),
          {"tensor \"m\"", "byte value 2"});
  CHECK_THROWS_WITH_AS(load_safetensors("/nonexistent/dir/w.safetensors"),
                       doctest::Contains("/nonexistent/dir/w.safetensors: cannot open"), Error);
}

TEST_CASE("safetensors: writing rejects bad names and undefined tensors") {
  CHECK_THROWS_WITH_AS(serialize_safetensors({{"", zeros({1})}}), doctest::Contains("empty name"), Error);
  CHECK_THROWS_WITH_AS(serialize_safetensors({{"__metadata__", zeros({1})}}), doctest::Contains("cannot be a tensor"),
                       Error);
  CHECK_THROWS_WITH_AS(serialize_safetensors({{"x", Tensor()}}), doctest::Contains("tensor \"x\": undefined"), Error);
  CHECK_THROWS_WITH_AS(save_safetensors("/nonexistent/dir/w.safetensors", {{"x", zeros({1})}}),
                       doctest::Contains("/nonexistent/dir/w.safetensors: cannot open"), Error);
  // An empty file set is valid: header "{}" padded to 8.
  std::string e = serialize_safetensors({});
  CHECK(e.size() == 16);
  CHECK(parse_safetensors(e).tensors.empty());
}
