#include "engine/npy.h"

#include "engine/byte_source.h"

#include <bit>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <vector>

namespace colt5 {

static_assert(std::endian::native == std::endian::little, ".npy I/O assumes a little-endian host");

namespace {

#define NPY_CHECK(cond, where, ...) COLT5_CHECK(cond, "npy: ", where, ": ", __VA_ARGS__)

const char kMagic[] = "\x93NUMPY";  // 6 bytes

using io::Source;
using io::MemorySource;
struct FileSource : io::FileSource {
  explicit FileSource(const std::string& path) : io::FileSource(path, "npy") {}
};

// ---- the header: a Python dict literal with str keys; values str, bool or a tuple of ints.

struct PyValue {
  enum Kind { str, boolean, tuple } kind = str;
  std::string s;
  bool b = false;
  std::vector<int64_t> ints;
};

struct HeaderParser {
  const std::string& h;
  const std::string& file;
  size_t i = 0;

  [[noreturn]] void fail(const std::string& msg) const {
    COLT5_FAIL("npy: ", file, ": malformed header at character ", i, ": ", msg, " (header: ", h, ")");
  }
  void ws() {
    while (i < h.size() && (h[i] == ' ' || h[i] == '\t' || h[i] == '\n' || h[i] == '\r')) ++i;
  }
  bool eat(char c) {
    ws();
    if (i < h.size() && h[i] == c) {
      ++i;
      return true;
    }
    return false;
  }
  void expect(char c) {
    if (!eat(c)) fail(std::string("expected '") + c + "'");
  }
  std::string string() {
    ws();
    if (i >= h.size() || (h[i] != '\'' && h[i] != '"')) fail("expected a quoted string");
    char q = h[i++];
    std::string out;
    while (i < h.size() && h[i] != q) {
      if (h[i] == '\\') fail("escapes are not supported in header strings");
      out += h[i++];
    }
    if (i >= h.size()) fail("unterminated string");
    ++i;
    return out;
  }
  int64_t integer() {
    ws();
    size_t start = i;
    uint64_t v = 0;
    while (i < h.size() && h[i] >= '0' && h[i] <= '9') {
      uint64_t d = h[i] - '0';
      if (v > (static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) - d) / 10) fail("dimension too large");
      v = v * 10 + d;
      ++i;
    }
    if (i == start) fail("expected a non-negative integer");
    if (i < h.size() && h[i] == 'L') ++i;  // Python 2 long
    return static_cast<int64_t>(v);
  }
  PyValue value() {
    ws();
    PyValue v;
    if (i >= h.size()) fail("expected a value");
    if (h[i] == '\'' || h[i] == '"') {
      v.kind = PyValue::str;
      v.s = string();
    } else if (h.compare(i, 4, "True") == 0) {
      v.kind = PyValue::boolean;
      v.b = true;
      i += 4;
    } else if (h.compare(i, 5, "False") == 0) {
      v.kind = PyValue::boolean;
      i += 5;
    } else if (h[i] == '(') {
      ++i;
      v.kind = PyValue::tuple;
      if (!eat(')')) {
        for (;;) {
          v.ints.push_back(integer());
          if (eat(')')) break;
          expect(',');
          if (eat(')')) break;  // trailing comma: (3,)
        }
      }
    } else if (h[i] == '[') {
      fail("structured (record) dtypes are not supported");
    } else {
      fail("expected a string, True, False or a tuple");
    }
    return v;
  }
};

struct Header {
  std::string descr;
  bool fortran = false;
  Shape shape;
};

Header parse_header(const std::string& text, const std::string& file) {
  HeaderParser p{text, file};
  Header hd;
  bool has_descr = false, has_fortran = false, has_shape = false;
  p.expect('{');
  if (!p.eat('}')) {
    for (;;) {
      std::string key = p.string();
      p.expect(':');
      PyValue v = p.value();
      auto once = [&](bool& flag) {
        if (flag) p.fail("key '" + key + "' appears twice");
        flag = true;
      };
      if (key == "descr") {
        once(has_descr);
        if (v.kind != PyValue::str) p.fail("'descr' must be a string");
        hd.descr = v.s;
      } else if (key == "fortran_order") {
        once(has_fortran);
        if (v.kind != PyValue::boolean) p.fail("'fortran_order' must be True or False");
        hd.fortran = v.b;
      } else if (key == "shape") {
        once(has_shape);
        if (v.kind != PyValue::tuple) p.fail("'shape' must be a tuple of integers");
        hd.shape = v.ints;
      } else {
        p.fail("unexpected key '" + key + "' (expected descr, fortran_order, shape)");
      }
      if (p.eat('}')) break;
      p.expect(',');
      if (p.eat('}')) break;  // trailing comma, as NumPy writes
    }
  }
  p.ws();
  if (p.i != text.size()) p.fail("unexpected text after the dict");
  if (!has_descr || !has_fortran || !has_shape) p.fail("the dict must have the keys 'descr', 'fortran_order' and 'shape'");
  return hd;
}

DType parse_descr(const std::string& d, const std::string& file) {
  NPY_CHECK(d.size() >= 2, file, "unsupported dtype '", d, "'");
  char order = d[0];
  std::string code = d.substr(1);
  if (code == "b1" || code == "?") {
    NPY_CHECK(order == '|' || order == '<' || order == '>' || order == '=', file, "unsupported dtype '", d, "'");
    return DType::b8;
  }
  NPY_CHECK(order != '>', file, "dtype '", d, "' is big-endian; only little-endian data is supported (convert with ",
            "arr.astype(arr.dtype.newbyteorder('<')))");
  static const std::pair<const char*, DType> table[] = {
      {"f4", DType::f32}, {"f8", DType::f64}, {"f2", DType::f16}, {"i8", DType::i64}};
  for (const auto& [c, t] : table)
    if (code == c) {
      NPY_CHECK(order == '<' || order == '=', file, "dtype '", d, "': byte order '", order, "' is not little-endian");
      return t;
    }
  if (code == "O") COLT5_FAIL("npy: ", file, ": object arrays (pickled data, dtype '", d, "') are not supported");
  COLT5_FAIL("npy: ", file, ": unsupported dtype '", d, "' (colt5 reads <f4, <f8, <f2, <i8, |b1)");
}

const char* descr_of(DType t) {
  switch (t) {
    case DType::f32: return "<f4";
    case DType::f64: return "<f8";
    case DType::f16: return "<f2";
    case DType::i64: return "<i8";
    case DType::b8: return "|b1";
    case DType::bf16: return "<f4";  // written widened to f32
  }
  return "?";
}

Tensor parse(Source& src) {
  const std::string& f = src.name;
  NPY_CHECK(src.size >= 10, f, "file is ", src.size, " bytes, too short for a .npy header");
  unsigned char pre[12] = {};
  src.read(0, pre, std::min<uint64_t>(src.size, 12));
  NPY_CHECK(std::memcmp(pre, kMagic, 6) == 0, f, "bad magic: not a .npy file (expected \"\\x93NUMPY\")");
  int major = pre[6], minor = pre[7];
  NPY_CHECK((major == 1 || major == 2 || major == 3) && minor == 0, f, "unsupported format version ", major, ".",
            minor, " (1.0, 2.0 and 3.0 are supported)");
  uint64_t hlen, hstart;
  if (major == 1) {
    hlen = pre[8] | (uint64_t(pre[9]) << 8);
    hstart = 10;
  } else {
    NPY_CHECK(src.size >= 12, f, "file is ", src.size, " bytes, too short for a version ", major, " header");
    hlen = pre[8] | (uint64_t(pre[9]) << 8) | (uint64_t(pre[10]) << 16) | (uint64_t(pre[11]) << 24);
    hstart = 12;
  }
  NPY_CHECK(hlen <= src.size - hstart, f, "header length ", hlen, " exceeds the file size (", src.size,
            " bytes): truncated?");
  std::string header(hlen, '\0');
  src.read(hstart, header.data(), hlen);
  for (unsigned char c : header)
    NPY_CHECK(c < 0x80 || major == 3, f, "non-ASCII byte in a version ", major, " header");
  Header hd = parse_header(header, f);
  NPY_CHECK(!hd.fortran, f, "fortran_order is True; only C-order arrays are supported (save np.ascontiguousarray(a))");
  DType dt = parse_descr(hd.descr, f);
  NPY_CHECK(hd.shape.size() <= static_cast<size_t>(kMaxDims), f, "shape ", shape_str(hd.shape), " has more than ",
            kMaxDims, " dims");
  uint64_t numel = 1;
  for (int64_t d : hd.shape) {
    NPY_CHECK(d == 0 || numel <= std::numeric_limits<uint64_t>::max() / 8 / static_cast<uint64_t>(d), f, "shape ",
              shape_str(hd.shape), " is too large");
    numel *= static_cast<uint64_t>(d);
  }
  uint64_t nbytes = numel * dtype_size(dt), avail = src.size - hstart - hlen;
  NPY_CHECK(avail >= nbytes, f, "data truncated: shape ", shape_str(hd.shape), " of '", hd.descr, "' needs ", nbytes,
            " bytes, the file has ", avail);
  NPY_CHECK(avail == nbytes, f, avail - nbytes, " unexpected bytes after the data (shape ", shape_str(hd.shape),
            " of '", hd.descr, "' needs ", nbytes, ")");
  Tensor t = make_tensor(hd.shape, dt, Device::cpu());
  src.read(hstart + hlen, t.data_ptr(), nbytes);
  if (dt == DType::b8) {
    const auto* p = static_cast<const unsigned char*>(t.data_ptr());
    for (uint64_t k = 0; k < nbytes; ++k)
      NPY_CHECK(p[k] <= 1, f, "bool element ", k, " has byte value ", int(p[k]), " (must be 0 or 1)");
  }
  return t;
}

// NumPy's header: "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }" padded with
// spaces and a newline so that magic + length + header is a multiple of 64.
std::string header_bytes(const Tensor& t) {
  std::string shape = "(";
  for (int d = 0; d < t.dim(); ++d) shape += std::to_string(t.size(d)) + (t.dim() == 1 ? "," : d + 1 < t.dim() ? ", " : "");
  shape += ")";
  std::string dict =
      std::string("{'descr': '") + descr_of(t.dtype()) + "', 'fortran_order': False, 'shape': " + shape + ", }";
  for (int major : {1, 2}) {
    size_t prefix = major == 1 ? 10 : 12;
    size_t total = prefix + dict.size() + 1;
    size_t pad = (64 - total % 64) % 64;
    size_t hlen = dict.size() + pad + 1;
    if (major == 1 && hlen > 65535) continue;
    std::string out(kMagic, 6);
    out += static_cast<char>(major);
    out += '\0';
    for (size_t k = 0; k < prefix - 8; ++k) out += static_cast<char>((hlen >> (8 * k)) & 0xff);
    out += dict;
    out.append(pad, ' ');
    out += '\n';
    return out;
  }
  return {};
}

Tensor host_data(const Tensor& t) {
  COLT5_CHECK(t.defined(), "npy: cannot write an undefined tensor");
  Tensor h = t.detach().to(Device::cpu());
  if (h.dtype() == DType::bf16) h = h.to(DType::f32);
  return h.contiguous();
}

}  // namespace

Tensor parse_npy(const std::string& bytes, const std::string& name) {
  MemorySource src(bytes, name);
  return parse(src);
}

Tensor load_npy(const std::string& path) {
  FileSource src(path);
  return parse(src);
}

std::string serialize_npy(const Tensor& t) {
  Tensor h = host_data(t);
  std::string out = header_bytes(h);
  out.append(static_cast<const char*>(h.data_ptr()), h.numel() * dtype_size(h.dtype()));
  return out;
}

void save_npy(const std::string& path, const Tensor& t) {
  Tensor h = host_data(t);
  std::string header = header_bytes(h);
  std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    NPY_CHECK(f.is_open(), path, "cannot open \"", tmp, "\" for writing");
    f.write(header.data(), header.size());
    f.write(static_cast<const char*>(h.data_ptr()), h.numel() * dtype_size(h.dtype()));
    f.flush();
    NPY_CHECK(f.good(), path, "write error (disk full?)");
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) std::filesystem::remove(tmp);
  NPY_CHECK(!ec, path, "cannot rename \"", tmp, "\" to it (", ec.message(), ")");
}

}  // namespace colt5
