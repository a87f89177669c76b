#include "engine/safetensors.h"

#include "engine/byte_source.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <vector>

#include "engine/json.h"

namespace colt5 {

static_assert(std::endian::native == std::endian::little, "safetensors I/O assumes a little-endian host");

namespace {

constexpr uint64_t kMaxHeader = 100'000'000;  // the reference reader's limit

#define ST_CHECK(cond, where, ...) COLT5_CHECK(cond, "safetensors: ", where, ": ", __VA_ARGS__)

using io::Source;
using io::MemorySource;
struct FileSource : io::FileSource {
  explicit FileSource(const std::string& path) : io::FileSource(path, "safetensors") {}
};

bool parse_dtype(const std::string& s, DType& out) {
  static const std::pair<const char*, DType> table[] = {{"F32", DType::f32}, {"F64", DType::f64},
                                                        {"F16", DType::f16}, {"BF16", DType::bf16},
                                                        {"I64", DType::i64}, {"BOOL", DType::b8}};
  for (const auto& [n, t] : table)
    if (s == n) {
      out = t;
      return true;
    }
  return false;
}

struct Entry {
  std::string name;
  DType dtype;
  Shape shape;
  uint64_t begin, end;
};

std::string tname(const std::string& name) { return "tensor \"" + name + "\": "; }

Entry parse_entry(const Source& src, const std::string& name, const Json& info) {
  const std::string& f = src.name;
  ST_CHECK(info.is_object(), f, tname(name), "expected an object {dtype, shape, data_offsets}, got ",
           info.type_name());
  const Json* dt = info.find("dtype");
  const Json* sh = info.find("shape");
  const Json* off = info.find("data_offsets");
  ST_CHECK(dt, f, tname(name), "missing \"dtype\"");
  ST_CHECK(sh, f, tname(name), "missing \"shape\"");
  ST_CHECK(off, f, tname(name), "missing \"data_offsets\"");
  Entry e{name, DType::f32, {}, 0, 0};
  ST_CHECK(dt->is_string(), f, tname(name), "\"dtype\" must be a string, got ", dt->type_name());
  ST_CHECK(parse_dtype(dt->as_string(), e.dtype), f, tname(name), "unsupported dtype \"", dt->as_string(),
           "\" (colt5 reads F32, F64, F16, BF16, I64, BOOL)");

  ST_CHECK(sh->is_array(), f, tname(name), "\"shape\" must be an array, got ", sh->type_name());
  ST_CHECK(sh->size() <= static_cast<size_t>(kMaxDims), f, tname(name), "shape has ", sh->size(),
           " dims, colt5 supports at most ", kMaxDims);
  uint64_t numel = 1;
  bool overflow = false;
  for (const Json& d : sh->as_array()) {
    ST_CHECK(d.is_integer() && d.as_int() >= 0, f, tname(name), "shape entries must be non-negative integers, got ",
             d.dump());
    e.shape.push_back(d.as_int());
    uint64_t v = static_cast<uint64_t>(d.as_int());
    if (v && numel > std::numeric_limits<uint64_t>::max() / v) overflow = true;
    numel *= v;
  }
  ST_CHECK(!overflow && numel <= std::numeric_limits<uint64_t>::max() / dtype_size(e.dtype), f, tname(name),
           "shape ", shape_str(e.shape), " is too large");

  ST_CHECK(off->is_array() && off->size() == 2, f, tname(name), "\"data_offsets\" must be [begin, end], got ",
           off->dump());
  for (int k = 0; k < 2; ++k)
    ST_CHECK(off->at(k).is_integer() && off->at(k).as_int() >= 0, f, tname(name),
             "\"data_offsets\" must be non-negative integers, got ", off->dump());
  e.begin = static_cast<uint64_t>(off->at(size_t{0}).as_int());
  e.end = static_cast<uint64_t>(off->at(size_t{1}).as_int());
  ST_CHECK(e.begin <= e.end, f, tname(name), "data_offsets [", e.begin, ", ", e.end, "] end before they begin");
  uint64_t nbytes = numel * dtype_size(e.dtype);
  ST_CHECK(e.end - e.begin == nbytes, f, tname(name), "shape ", shape_str(e.shape), " of ", dt->as_string(), " needs ",
           nbytes, " bytes but data_offsets [", e.begin, ", ", e.end, "] span ", e.end - e.begin);
  return e;
}

SafetensorsFile parse(Source& src) {
  const std::string& f = src.name;
  ST_CHECK(src.size >= 8, f, "file is ", src.size, " bytes, too short for the 8-byte header length");
  unsigned char lenbuf[8];
  src.read(0, lenbuf, 8);
  uint64_t n = 0;
  for (int k = 7; k >= 0; --k) n = (n << 8) | lenbuf[k];
  ST_CHECK(n <= src.size - 8, f, "header length ", n, " exceeds the file size (", src.size, " bytes, ", src.size - 8,
           " after the length field): truncated or not a safetensors file");
  ST_CHECK(n <= kMaxHeader, f, "header length ", n, " is over the ", kMaxHeader, "-byte limit");
  ST_CHECK(n >= 2, f, "header length ", n, " is too small for a JSON object");
  std::string header(n, '\0');
  src.read(8, header.data(), n);
  ST_CHECK(header[0] == '{', f, "header does not start with '{' (not a safetensors file?)");
  Json j = Json::parse(header, "safetensors: " + f + ": header");
  ST_CHECK(j.is_object(), f, "header must be a JSON object");

  SafetensorsFile out;
  std::vector<Entry> entries;
  std::map<std::string, int> seen;
  bool have_meta = false;
  for (const auto& [name, info] : j.as_object()) {
    if (name == "__metadata__") {
      ST_CHECK(!have_meta, f, "\"__metadata__\" appears twice");
      have_meta = true;
      ST_CHECK(info.is_object(), f, "\"__metadata__\" must be an object of strings, got ", info.type_name());
      for (const auto& [k, v] : info.as_object()) {
        ST_CHECK(v.is_string(), f, "\"__metadata__\" value of \"", k, "\" must be a string, got ", v.dump());
        ST_CHECK(out.metadata.emplace(k, v.as_string()).second, f, "\"__metadata__\" key \"", k, "\" appears twice");
      }
      continue;
    }
    ST_CHECK(!name.empty(), f, "a tensor has an empty name");
    ST_CHECK(seen.emplace(name, 1).second, f, tname(name), "duplicate tensor name");
    entries.push_back(parse_entry(src, name, info));
  }

  // The data area is exactly the tensors' bytes: sorted by offset, each begins where the last ended.
  uint64_t data_start = 8 + n, data_size = src.size - data_start;
  std::vector<const Entry*> order;
  for (const Entry& e : entries) order.push_back(&e);
  std::stable_sort(order.begin(), order.end(), [](const Entry* a, const Entry* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t pos = 0;
  const Entry* prev = nullptr;
  for (const Entry* e : order) {
    ST_CHECK(e->end <= data_size, f, tname(e->name), "data_offsets [", e->begin, ", ", e->end,
             "] run past the end of the data area (", data_size, " bytes): file truncated?");
    ST_CHECK(e->begin >= pos, f, tname(e->name), "data_offsets [", e->begin, ", ", e->end, "] overlap tensor \"",
             prev ? prev->name : "", "\" (which ends at ", pos, ")");
    ST_CHECK(e->begin == pos, f, tname(e->name), "data_offsets [", e->begin, ", ", e->end, "] leave bytes [", pos,
             ", ", e->begin, ") of the data area unused");
    pos = e->end;
    prev = e;
  }
  ST_CHECK(pos == data_size, f, "the data area has ", data_size - pos, " bytes after the last tensor (", data_size,
           " bytes, tensors end at ", pos, ")");

  for (const Entry& e : entries) {
    Tensor t = make_tensor(e.shape, e.dtype, Device::cpu());
    src.read(data_start + e.begin, t.data_ptr(), e.end - e.begin);
    if (e.dtype == DType::b8) {
      const auto* p = static_cast<const unsigned char*>(t.data_ptr());
      for (uint64_t k = 0; k < e.end - e.begin; ++k)
        ST_CHECK(p[k] <= 1, f, tname(e.name), "BOOL element ", k, " has byte value ", int(p[k]), " (must be 0 or 1)");
    }
    out.tensors.emplace(e.name, std::move(t));
  }
  return out;
}

struct Planned {
  std::string name;
  Tensor t;  // contiguous, CPU
  uint64_t begin = 0, end = 0;
};

// Header text (padded) and the tensors in data order.
std::string plan(const std::map<std::string, Tensor>& tensors, const std::map<std::string, std::string>& metadata,
                 std::vector<Planned>& data, const std::string& where) {
  for (const auto& [name, t] : tensors) {
    ST_CHECK(!name.empty(), where, "a tensor has an empty name");
    ST_CHECK(name != "__metadata__", where, "\"__metadata__\" cannot be a tensor name");
    ST_CHECK(t.defined(), where, tname(name), "undefined tensor");
    data.push_back({name, t.detach().to(Device::cpu()).contiguous()});
  }
  std::stable_sort(data.begin(), data.end(), [](const Planned& a, const Planned& b) {
    size_t sa = dtype_size(a.t.dtype()), sb = dtype_size(b.t.dtype());
    return sa != sb ? sa > sb : a.name < b.name;
  });
  uint64_t pos = 0;
  std::map<std::string, const Planned*> by_name;
  for (Planned& p : data) {
    p.begin = pos;
    pos = p.end = pos + static_cast<uint64_t>(p.t.numel()) * dtype_size(p.t.dtype());
    by_name[p.name] = &p;
  }
  Json h = Json::object();
  if (!metadata.empty()) {
    Json m = Json::object();
    for (const auto& [k, v] : metadata) m.set(k, v);
    h.set("__metadata__", std::move(m));
  }
  for (const auto& [name, p] : by_name) {
    Json shape = Json::array();
    for (int64_t d : p->t.shape()) shape.push_back(d);
    Json offs = Json::array();
    offs.push_back(static_cast<int64_t>(p->begin));
    offs.push_back(static_cast<int64_t>(p->end));
    Json info = Json::object();
    info.set("dtype", safetensors_dtype_name(p->t.dtype()));
    info.set("shape", std::move(shape));
    info.set("data_offsets", std::move(offs));
    h.set(name, std::move(info));
  }
  std::string text = h.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  return text;
}

template <class Write>
void emit(const std::string& header, const std::vector<Planned>& data, Write&& write) {
  unsigned char lenbuf[8];
  uint64_t n = header.size();
  for (int k = 0; k < 8; ++k) lenbuf[k] = static_cast<unsigned char>(n >> (8 * k));
  write(lenbuf, 8);
  write(header.data(), header.size());
  for (const Planned& p : data) write(p.t.data_ptr(), p.end - p.begin);
}

}  // namespace

const char* safetensors_dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "F32";
    case DType::f64: return "F64";
    case DType::f16: return "F16";
    case DType::bf16: return "BF16";
    case DType::i64: return "I64";
    case DType::b8: return "BOOL";
  }
  return "?";
}

SafetensorsFile parse_safetensors(const std::string& bytes, const std::string& name) {
  MemorySource src(bytes, name);
  return parse(src);
}

SafetensorsFile read_safetensors(const std::string& path) {
  FileSource src(path);
  return parse(src);
}

std::map<std::string, Tensor> load_safetensors(const std::string& path, std::map<std::string, std::string>* metadata) {
  SafetensorsFile file = read_safetensors(path);
  if (metadata) *metadata = std::move(file.metadata);
  return std::move(file.tensors);
}

std::string serialize_safetensors(const std::map<std::string, Tensor>& tensors,
                                  const std::map<std::string, std::string>& metadata) {
  std::vector<Planned> data;
  std::string header = plan(tensors, metadata, data, "<memory>");
  std::string out;
  emit(header, data, [&](const void* p, size_t n) { out.append(static_cast<const char*>(p), n); });
  return out;
}

void save_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  std::vector<Planned> data;
  std::string header = plan(tensors, metadata, data, path);
  std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    ST_CHECK(f.is_open(), path, "cannot open \"", tmp, "\" for writing");
    emit(header, data, [&](const void* p, size_t n) { f.write(static_cast<const char*>(p), n); });
    f.flush();
    ST_CHECK(f.good(), path, "write error (disk full?)");
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) std::filesystem::remove(tmp);
  ST_CHECK(!ec, path, "cannot rename \"", tmp, "\" to it (", ec.message(), ")");
}

}  // namespace colt5
