// Scalar definitions of every elementwise op, shared by the CPU loops and the
// CUDA kernels (one definition, two backends). Unary ops take up to two
// parameters (p0, p1); binary ops map (a, b) -> out; "bool" ops write bool.
#pragma once
#include <cmath>
#include <cstdint>

#ifdef __CUDACC__
#define COLT5_HD __host__ __device__ __forceinline__
#else
#define COLT5_HD inline
#endif

namespace colt5 {

// X(name, expression in x, p0, p1)
#define COLT5_UNARY_FLOAT_OPS(X)                                                        \
  X(neg, -x)                                                                            \
  X(exp, std::exp(x))                                                                   \
  X(log, std::log(x))                                                                   \
  X(sqrt, std::sqrt(x))                                                                 \
  X(rsqrt, T(1) / std::sqrt(x))                                                         \
  X(abs, std::abs(x))                                                                   \
  X(sign, T((x > T(0)) - (x < T(0))))                                                   \
  X(relu, x > T(0) ? x : T(0))                                                          \
  X(gelu, T(0.5) * x * (T(1) + std::erf(x * T(0.70710678118654752440))))               \
  X(sigmoid, T(1) / (T(1) + std::exp(-x)))                                              \
  X(tanh, std::tanh(x))                                                                 \
  X(sin, std::sin(x))                                                                   \
  X(cos, std::cos(x))                                                                   \
  X(erf, std::erf(x))                                                                   \
  X(add_scalar, x + T(p0))                                                              \
  X(mul_scalar, x * T(p0))                                                              \
  X(rsub_scalar, T(p0) - x)                                                             \
  X(rdiv_scalar, T(p0) / x)                                                             \
  X(pow_scalar, std::pow(x, T(p0)))                                                     \
  X(clamp, x < T(p0) ? T(p0) : (x > T(p1) ? T(p1) : x))

// X(name, expression in a, b)   a, b, out of type T
#define COLT5_BINARY_OPS(X)                       \
  X(add, a + b)                                   \
  X(sub, a - b)                                   \
  X(mul, a * b)                                   \
  X(div, a / b)                                   \
  X(pow, std::pow(a, b))                          \
  X(maximum, a > b ? a : b)                       \
  X(minimum, a < b ? a : b)                       \
  /* backward helpers: a = incoming grad, b = saved input/output */ \
  X(relu_backward, b > T(0) ? a : T(0))           \
  X(gelu_backward, a * (T(0.5) * (T(1) + std::erf(b * T(0.70710678118654752440))) + \
                        b * T(0.39894228040143267794) * std::exp(T(-0.5) * b * b))) \
  X(sigmoid_backward, a * b * (T(1) - b))         \
  X(tanh_backward, a * (T(1) - b * b))

// X(name, expression in a, b) -> bool
#define COLT5_COMPARE_OPS(X) \
  X(eq, a == b)              \
  X(ne, a != b)              \
  X(lt, a < b)               \
  X(le, a <= b)              \
  X(gt, a > b)               \
  X(ge, a >= b)              \
  X(logical_and, (a != T(0)) && (b != T(0))) \
  X(logical_or, (a != T(0)) || (b != T(0)))

#define COLT5_ENUM_ENTRY(name, ...) name,
enum class UnaryOp { COLT5_UNARY_FLOAT_OPS(COLT5_ENUM_ENTRY) logical_not };
enum class BinaryOp { COLT5_BINARY_OPS(COLT5_ENUM_ENTRY) };
enum class CompareOp { COLT5_COMPARE_OPS(COLT5_ENUM_ENTRY) };
#undef COLT5_ENUM_ENTRY

const char* unary_op_name(UnaryOp op);
const char* binary_op_name(BinaryOp op);
const char* compare_op_name(CompareOp op);

// Functors (usable on host and device).
#define COLT5_UNARY_FUNCTOR(name, expr)                                   \
  struct Unary_##name {                                                   \
    double p0, p1;                                                        \
    template <class T> COLT5_HD T operator()(T x) const { return expr; }  \
  };
COLT5_UNARY_FLOAT_OPS(COLT5_UNARY_FUNCTOR)
#undef COLT5_UNARY_FUNCTOR

#define COLT5_BINARY_FUNCTOR(name, expr)                                        \
  struct Binary_##name {                                                        \
    template <class T> COLT5_HD T operator()(T a, T b) const { return expr; }   \
  };
COLT5_BINARY_OPS(COLT5_BINARY_FUNCTOR)
#undef COLT5_BINARY_FUNCTOR

#define COLT5_COMPARE_FUNCTOR(name, expr)                                          \
  struct Compare_##name {                                                          \
    template <class T> COLT5_HD bool operator()(T a, T b) const { return expr; }   \
  };
COLT5_COMPARE_OPS(COLT5_COMPARE_FUNCTOR)
#undef COLT5_COMPARE_FUNCTOR

}  // namespace colt5
