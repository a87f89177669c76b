#include "engine/json.h"

#include <charconv>
#include <cmath>
#include <cstdio>

#include "engine/error.h"

namespace colt5 {

// ------------------------------------------------------------ access

const char* Json::type_name() const {
  switch (type_) {
    case Type::null: return "null";
    case Type::boolean: return "bool";
    case Type::integer: return "integer";
    case Type::number: return "number";
    case Type::string: return "string";
    case Type::array: return "array";
    case Type::object: return "object";
  }
  return "?";
}

#define JSON_EXPECT(cond, want) COLT5_CHECK(cond, "json: expected ", want, ", got ", type_name())

bool Json::as_bool() const { JSON_EXPECT(is_bool(), "a bool"); return bool_; }
int64_t Json::as_int() const { JSON_EXPECT(is_integer(), "an integer"); return int_; }
double Json::as_double() const {
  JSON_EXPECT(is_number(), "a number");
  return type_ == Type::integer ? static_cast<double>(int_) : num_;
}
const std::string& Json::as_string() const { JSON_EXPECT(is_string(), "a string"); return str_; }
const Json::Array& Json::as_array() const { JSON_EXPECT(is_array(), "an array"); return arr_; }
const Json::Object& Json::as_object() const { JSON_EXPECT(is_object(), "an object"); return obj_; }
Json::Array& Json::as_array() { JSON_EXPECT(is_array(), "an array"); return arr_; }
Json::Object& Json::as_object() { JSON_EXPECT(is_object(), "an object"); return obj_; }

const Json* Json::find(const std::string& key) const {
  for (const auto& [k, v] : as_object())
    if (k == key) return &v;
  return nullptr;
}

const Json& Json::at(const std::string& key) const {
  const Json* v = find(key);
  COLT5_CHECK(v, "json: missing key \"", key, "\"");
  return *v;
}

const Json& Json::at(size_t i) const {
  const Array& a = as_array();
  COLT5_CHECK(i < a.size(), "json: index ", i, " out of range for an array of ", a.size());
  return a[i];
}

size_t Json::size() const {
  if (is_array()) return arr_.size();
  if (is_object()) return obj_.size();
  return 0;
}

Json& Json::set(const std::string& key, Json value) {
  for (auto& [k, v] : as_object())
    if (k == key) return v = std::move(value);
  obj_.emplace_back(key, std::move(value));
  return obj_.back().second;
}

Json& Json::push_back(Json value) {
  as_array().push_back(std::move(value));
  return arr_.back();
}

bool Json::operator==(const Json& o) const {
  if (is_number() && o.is_number()) {
    if (is_integer() && o.is_integer()) return int_ == o.int_;
    return as_double() == o.as_double();
  }
  if (type_ != o.type_) return false;
  switch (type_) {
    case Type::null: return true;
    case Type::boolean: return bool_ == o.bool_;
    case Type::string: return str_ == o.str_;
    case Type::array: return arr_ == o.arr_;
    case Type::object: return obj_ == o.obj_;
    default: return false;
  }
}

void Json::out_of_range(double v) { COLT5_FAIL("json: integer ", v, " does not fit in int64"); }

// ------------------------------------------------------------ writer

std::string json_quote(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);  // UTF-8 passes through
        }
    }
  }
  return out + "\"";
}

static std::string number_text(double v) {
  COLT5_CHECK(std::isfinite(v), "json: cannot write the non-finite number ", v);
  char buf[32];
  auto r = std::to_chars(buf, buf + sizeof buf, v);  // shortest text that reads back exactly
  std::string s(buf, r.ptr);
  // Keep it a JSON number that reads back as a non-integer: "1" -> "1.0".
  if (s.find_first_of(".eE") == std::string::npos) s += ".0";
  return s;
}

void Json::dump_to(std::string& out, int indent, int level) const {
  auto newline = [&](int lvl) {
    if (indent < 0) return;
    out += '\n';
    out.append(static_cast<size_t>(indent * lvl), ' ');
  };
  switch (type_) {
    case Type::null: out += "null"; break;
    case Type::boolean: out += bool_ ? "true" : "false"; break;
    case Type::integer: out += std::to_string(int_); break;
    case Type::number: out += number_text(num_); break;
    case Type::string: out += json_quote(str_); break;
    case Type::array:
      out += '[';
      for (size_t i = 0; i < arr_.size(); ++i) {
        if (i) out += ',';
        newline(level + 1);
        arr_[i].dump_to(out, indent, level + 1);
      }
      if (!arr_.empty()) newline(level);
      out += ']';
      break;
    case Type::object:
      out += '{';
      for (size_t i = 0; i < obj_.size(); ++i) {
        if (i) out += ',';
        newline(level + 1);
        out += json_quote(obj_[i].first);
        out += indent < 0 ? ":" : ": ";
        obj_[i].second.dump_to(out, indent, level + 1);
      }
      if (!obj_.empty()) newline(level);
      out += '}';
      break;
  }
}

std::string Json::dump(int indent) const {
  std::string out;
  dump_to(out, indent, 0);
  return out;
}

// ------------------------------------------------------------ parser

namespace {

constexpr int kMaxDepth = 256;

struct Parser {
  const std::string& s;
  const std::string& what;
  size_t i = 0;

  [[noreturn]] void fail(const std::string& msg) const {
    std::string near;
    if (i < s.size()) {
      unsigned char c = static_cast<unsigned char>(s[i]);
      near = c >= 0x20 && c < 0x7f ? std::string(" near '") + static_cast<char>(c) + "'" : "";
    } else {
      near = " at end of input";
    }
    COLT5_FAIL(what, ": invalid JSON at byte ", i, near, ": ", msg);
  }

  void ws() {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) ++i;
  }

  bool eat(char c) {
    if (i < s.size() && s[i] == c) {
      ++i;
      return true;
    }
    return false;
  }

  void literal(const char* word) {
    for (const char* p = word; *p; ++p, ++i)
      if (i >= s.size() || s[i] != *p) fail(std::string("expected '") + word + "'");
  }

  Json value(int depth) {
    if (depth > kMaxDepth) fail("nesting deeper than " + std::to_string(kMaxDepth));
    ws();
    if (i >= s.size()) fail("expected a value");
    char c = s[i];
    switch (c) {
      case '{': return object(depth);
      case '[': return array(depth);
      case '"': return Json(string());
      case 't': literal("true"); return Json(true);
      case 'f': literal("false"); return Json(false);
      case 'n': literal("null"); return Json();
      default:
        if (c == '-' || (c >= '0' && c <= '9')) return number();
        fail("expected a value");
    }
  }

  Json object(int depth) {
    ++i;  // '{'
    Json::Object members;
    ws();
    if (eat('}')) return Json(std::move(members));
    for (;;) {
      ws();
      if (i >= s.size() || s[i] != '"') fail("expected a string key");
      std::string key = string();
      ws();
      if (!eat(':')) fail("expected ':' after key \"" + key + "\"");
      Json v = value(depth + 1);
      members.emplace_back(std::move(key), std::move(v));
      ws();
      if (eat(',')) continue;
      if (eat('}')) return Json(std::move(members));
      fail("expected ',' or '}' in object");
    }
  }

  Json array(int depth) {
    ++i;  // '['
    Json::Array elems;
    ws();
    if (eat(']')) return Json(std::move(elems));
    for (;;) {
      elems.push_back(value(depth + 1));
      ws();
      if (eat(',')) continue;
      if (eat(']')) return Json(std::move(elems));
      fail("expected ',' or ']' in array");
    }
  }

  unsigned hex4() {
    if (i + 4 > s.size()) fail("truncated \\u escape");
    unsigned v = 0;
    for (int k = 0; k < 4; ++k, ++i) {
      char c = s[i];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= c - '0';
      else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
      else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
      else fail("bad hex digit in \\u escape");
    }
    return v;
  }

  static void put_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xc0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xe0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
      out += static_cast<char>(0x80 | (cp & 0x3f));
    } else {
      out += static_cast<char>(0xf0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
      out += static_cast<char>(0x80 | (cp & 0x3f));
    }
  }

  std::string string() {
    ++i;  // opening quote
    std::string out;
    for (;;) {
      if (i >= s.size()) fail("unterminated string");
      unsigned char c = static_cast<unsigned char>(s[i]);
      if (c == '"') {
        ++i;
        return out;
      }
      if (c < 0x20) fail("unescaped control character in string");
      if (c != '\\') {
        out += static_cast<char>(c);
        ++i;
        continue;
      }
      ++i;
      if (i >= s.size()) fail("unterminated escape");
      char e = s[i++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          uint32_t cp = hex4();
          if (cp >= 0xd800 && cp < 0xdc00) {  // high surrogate: a low one must follow
            if (!(i + 1 < s.size() && s[i] == '\\' && s[i + 1] == 'u')) fail("unpaired surrogate in \\u escape");
            i += 2;
            uint32_t lo = hex4();
            if (lo < 0xdc00 || lo >= 0xe000) fail("unpaired surrogate in \\u escape");
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
          } else if (cp >= 0xdc00 && cp < 0xe000) {
            fail("unpaired surrogate in \\u escape");
          }
          put_utf8(out, cp);
          break;
        }
        default: --i; fail(std::string("unknown escape '\\") + e + "'");
      }
    }
  }

  Json number() {
    size_t start = i;
    auto digit = [&] { return i < s.size() && s[i] >= '0' && s[i] <= '9'; };
    eat('-');
    if (eat('0')) {
      if (digit()) fail("leading zero in number");
    } else if (digit()) {
      while (digit()) ++i;
    } else {
      fail("expected a digit");
    }
    bool integer = true;
    if (eat('.')) {
      integer = false;
      if (!digit()) fail("expected a digit after '.'");
      while (digit()) ++i;
    }
    if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
      integer = false;
      ++i;
      if (!eat('+')) eat('-');
      if (!digit()) fail("expected a digit in the exponent");
      while (digit()) ++i;
    }
    const char* b = s.data() + start;
    const char* e = s.data() + i;
    if (integer) {
      int64_t v;
      auto r = std::from_chars(b, e, v);
      if (r.ec == std::errc() && r.ptr == e) return Json(v);
      // Too large for int64: keep it as a double.
    }
    double d;
    auto r = std::from_chars(b, e, d);
    if (r.ec == std::errc::result_out_of_range) {
      i = start;
      fail("number out of range");
    }
    if (r.ec != std::errc() || r.ptr != e) {
      i = start;
      fail("malformed number");
    }
    return Json(d);
  }
};

}  // namespace

Json Json::parse(const std::string& text, const std::string& what) {
  Parser p{text, what};
  Json v = p.value(0);
  p.ws();
  if (p.i != text.size()) p.fail("unexpected text after the value");
  return v;
}

}  // namespace colt5
