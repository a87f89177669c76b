#include "kernels/cpu/elementwise.h"

#include "engine/dispatch.h"
#include "kernels/cpu/loop.h"

namespace colt5 {

#define COLT5_NAME_CASE(name, ...) case Op::name: return #name;
const char* unary_op_name(UnaryOp op) {
  using Op = UnaryOp;
  switch (op) {
    COLT5_UNARY_FLOAT_OPS(COLT5_NAME_CASE)
    case Op::logical_not: return "logical_not";
  }
  return "?";
}
const char* binary_op_name(BinaryOp op) {
  using Op = BinaryOp;
  switch (op) { COLT5_BINARY_OPS(COLT5_NAME_CASE) }
  return "?";
}
const char* compare_op_name(CompareOp op) {
  using Op = CompareOp;
  switch (op) { COLT5_COMPARE_OPS(COLT5_NAME_CASE) }
  return "?";
}
#undef COLT5_NAME_CASE

namespace kernels::cpu {

template <class T, class F>
static void unary_loop(F f, T* out, const T* in, const Geometry<2>& g) {
  strided_loop<2>(g, [&](const int64_t* off, int64_t n, const int64_t* is) {
    T* o = out + off[0];
    const T* x = in + off[1];
    if (is[0] == 1 && is[1] == 1) {
      for (int64_t i = 0; i < n; ++i) o[i] = f(x[i]);
    } else {
      for (int64_t i = 0; i < n; ++i) o[i * is[0]] = f(x[i * is[1]]);
    }
  });
}

void unary(UnaryOp op, double p0, double p1, DType dt, void* out, const void* in, const Geometry<2>& g) {
  if (op == UnaryOp::logical_not) {
    COLT5_CHECK(dt == DType::b8, "logical_not: expected bool, got ", dtype_name(dt));
    unary_loop<bool>([](bool x) { return !x; }, static_cast<bool*>(out), static_cast<const bool*>(in), g);
    return;
  }
  dispatch_float(dt, unary_op_name(op), [&](auto tag) {
    using T = decltype(tag);
    switch (op) {
#define COLT5_CASE(name, ...)                                                                           \
  case UnaryOp::name:                                                                                   \
    unary_loop<T>(Unary_##name{p0, p1}, static_cast<T*>(out), static_cast<const T*>(in), g); \
    break;
      COLT5_UNARY_FLOAT_OPS(COLT5_CASE)
#undef COLT5_CASE
      default: break;
    }
  });
}

template <class O, class T, class F>
static void binary_loop(F f, O* out, const T* a, const T* b, const Geometry<3>& g) {
  strided_loop<3>(g, [&](const int64_t* off, int64_t n, const int64_t* is) {
    O* o = out + off[0];
    const T* x = a + off[1];
    const T* y = b + off[2];
    if (is[0] == 1 && is[1] == 1 && is[2] == 1) {
      for (int64_t i = 0; i < n; ++i) o[i] = f(x[i], y[i]);
    } else if (is[0] == 1 && is[1] == 1 && is[2] == 0) {
      const T yv = *y;
      for (int64_t i = 0; i < n; ++i) o[i] = f(x[i], yv);
    } else {
      for (int64_t i = 0; i < n; ++i) o[i * is[0]] = f(x[i * is[1]], y[i * is[2]]);
    }
  });
}

void binary(BinaryOp op, DType dt, void* out, const void* a, const void* b, const Geometry<3>& g) {
  if (dt == DType::i64) {
    auto* o = static_cast<int64_t*>(out);
    auto* x = static_cast<const int64_t*>(a);
    auto* y = static_cast<const int64_t*>(b);
    switch (op) {
      case BinaryOp::add: binary_loop(Binary_add{}, o, x, y, g); return;
      case BinaryOp::sub: binary_loop(Binary_sub{}, o, x, y, g); return;
      case BinaryOp::mul: binary_loop(Binary_mul{}, o, x, y, g); return;
      case BinaryOp::div: binary_loop(Binary_div{}, o, x, y, g); return;
      case BinaryOp::maximum: binary_loop(Binary_maximum{}, o, x, y, g); return;
      case BinaryOp::minimum: binary_loop(Binary_minimum{}, o, x, y, g); return;
      default: COLT5_FAIL(binary_op_name(op), ": not defined for i64 tensors");
    }
  }
  dispatch_float(dt, binary_op_name(op), [&](auto tag) {
    using T = decltype(tag);
    auto* o = static_cast<T*>(out);
    auto* x = static_cast<const T*>(a);
    auto* y = static_cast<const T*>(b);
    switch (op) {
#define COLT5_CASE(name, ...) \
  case BinaryOp::name: binary_loop(Binary_##name{}, o, x, y, g); break;
      COLT5_BINARY_OPS(COLT5_CASE)
#undef COLT5_CASE
    }
  });
}

void compare(CompareOp op, DType dt, bool* out, const void* a, const void* b, const Geometry<3>& g) {
  auto run = [&](auto tag) {
    using T = decltype(tag);
    auto* x = static_cast<const T*>(a);
    auto* y = static_cast<const T*>(b);
    switch (op) {
#define COLT5_CASE(name, ...) \
  case CompareOp::name: binary_loop(Compare_##name{}, out, x, y, g); break;
      COLT5_COMPARE_OPS(COLT5_CASE)
#undef COLT5_CASE
    }
  };
  if (dt == DType::b8) run(bool{});
  else dispatch_numeric(dt, compare_op_name(op), run);
}

void where(DType dt, void* out, const bool* cond, const void* a, const void* b, const Geometry<4>& g) {
  auto run = [&](auto tag) {
    using T = decltype(tag);
    auto* o = static_cast<T*>(out);
    auto* x = static_cast<const T*>(a);
    auto* y = static_cast<const T*>(b);
    strided_loop<4>(g, [&](const int64_t* off, int64_t n, const int64_t* is) {
      for (int64_t i = 0; i < n; ++i)
        o[off[0] + i * is[0]] = cond[off[1] + i * is[1]] ? x[off[2] + i * is[2]] : y[off[3] + i * is[3]];
    });
  };
  if (dt == DType::b8) run(bool{});
  else dispatch_numeric(dt, "where", run);
}

}  // namespace kernels::cpu
}  // namespace colt5
