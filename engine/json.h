// A small JSON value, parser and writer (RFC 8259), enough for file headers
// (safetensors) and configuration files; the core library has no JSON
// dependency.
//
// Objects keep their members in file order, duplicates included, so a reader
// can report a duplicated key by name (find() returns the first). Integers that
// fit in int64 are kept exactly; other numbers are doubles. Strings are UTF-8;
// \uXXXX escapes (surrogate pairs included) are decoded to UTF-8.
#pragma once
#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace colt5 {

class Json {
 public:
  enum class Type : uint8_t { null, boolean, integer, number, string, array, object };
  using Array = std::vector<Json>;
  using Object = std::vector<std::pair<std::string, Json>>;

  Json() = default;  // null
  Json(std::nullptr_t) {}
  Json(bool b) : type_(Type::boolean), bool_(b) {}
  template <class T>
    requires(std::is_integral_v<T> && !std::is_same_v<T, bool>)
  Json(T v) : type_(Type::integer), int_(checked_int(v)) {}
  Json(double v) : type_(Type::number), num_(v) {}
  Json(const char* s) : type_(Type::string), str_(s) {}
  Json(std::string s) : type_(Type::string), str_(std::move(s)) {}
  Json(Array a) : type_(Type::array), arr_(std::move(a)) {}
  Json(Object o) : type_(Type::object), obj_(std::move(o)) {}
  static Json array() { return Json(Array{}); }
  static Json object() { return Json(Object{}); }

  Type type() const { return type_; }
  const char* type_name() const;  // "null", "bool", "integer", "number", "string", "array", "object"
  bool is_null() const { return type_ == Type::null; }
  bool is_bool() const { return type_ == Type::boolean; }
  bool is_integer() const { return type_ == Type::integer; }
  bool is_number() const { return type_ == Type::integer || type_ == Type::number; }  // any number
  bool is_string() const { return type_ == Type::string; }
  bool is_array() const { return type_ == Type::array; }
  bool is_object() const { return type_ == Type::object; }

  // Typed access; throws colt5::Error naming the expected and actual type.
  bool as_bool() const;
  int64_t as_int() const;   // integers only (1.0 is a number, not an integer)
  double as_double() const; // any number
  const std::string& as_string() const;
  const Array& as_array() const;
  const Object& as_object() const;
  Array& as_array();
  Object& as_object();

  // Objects: first member named key, or nullptr. at() throws naming the key.
  const Json* find(const std::string& key) const;
  bool contains(const std::string& key) const { return find(key) != nullptr; }
  const Json& at(const std::string& key) const;
  // Arrays: element i (bounds-checked).
  const Json& at(size_t i) const;
  size_t size() const;  // members of an object, elements of an array, else 0

  // Building: set() replaces an existing member (or appends); push_back() appends.
  Json& set(const std::string& key, Json value);
  Json& push_back(Json value);

  // Compact text (indent < 0) or pretty-printed with `indent` spaces. Non-finite
  // numbers cannot be written (throws).
  std::string dump(int indent = -1) const;

  // Parses exactly one value surrounded by optional whitespace. Errors give the
  // byte offset and the problem, prefixed by `what` (e.g. a file name).
  static Json parse(const std::string& text, const std::string& what = "json");

  bool operator==(const Json& o) const;
  bool operator!=(const Json& o) const { return !(*this == o); }

 private:
  template <class T>
  static int64_t checked_int(T v) {
    if constexpr (std::is_unsigned_v<T> && sizeof(T) >= sizeof(int64_t))
      if (v > static_cast<T>(INT64_MAX)) out_of_range(static_cast<double>(v));
    return static_cast<int64_t>(v);
  }
  [[noreturn]] static void out_of_range(double v);
  void dump_to(std::string& out, int indent, int level) const;
  Type type_ = Type::null;
  bool bool_ = false;
  int64_t int_ = 0;
  double num_ = 0;
  std::string str_;
  Array arr_;
  Object obj_;
};

// A JSON string literal (with quotes) for s.
std::string json_quote(const std::string& s);

}  // namespace colt5
