// Routing gathers and scatters (SPEC §2), pointer level: no tensors, no
// autograd. The readable CPU reference for kernels/cuda/routing.h, which
// takes the same dims and operand descriptions and computes the same sums in
// the same order.
//
// Letters: B batch, N tokens of the full sequence, D features per token,
// R routes, n routed tokens per (batch, route), m = R * n routed rows per batch.
//
// Operands:
//   x, dst, out, dx, ddst   (B, N, D) "token rows"
//   routed, g, drouted      (B, m, D) "routed rows": a (B, R, n, D) tensor whose
//                           (R, n) dims merge into one row dim
//   idx                     (B, m) i64, contiguous, values in [0, N) (checked by the caller)
//   scores, dscores         (B, m) contiguous, the operand's dtype; scores optional
//   inv                     (B, N) i64, contiguous: see route_back_inverse
// Row operands have any batch / row strides (>= 0) and a contiguous last dim.
//
// Ops (s = scores[b, j], 1 without scores):
//   gather_rows          out[b, j] = x[b, idx[b, j]] * s
//   gather_rows_backward dx[b, t]  = sum over j with idx[b, j] == t of g[b, j] * s,
//                        summed in increasing j (route-major) order, starting
//                        from zero, accumulated in f32 (f64 for f64); every
//                        element of dx is written.
//   gather_rows_dscores  dscores[b, j] = <g[b, j], x[b, idx[b, j]]>
//   route_back_inverse   inv[b, t] = the last j with idx[b, j] == t, or -1
//                        (R must be 1)
//   route_back_forward   out[b, t] = inv[b, t] >= 0 ? routed[b, inv] * s[b, inv] : dst[b, t]
//                        (overwrite; duplicate indices within a row are
//                        allowed: the last one wins, as in a sequential loop)
//   route_back_backward  ddst[b, t]    = inv[b, t] >= 0 ? 0 : g[b, t]
//                        drouted[b, j] = inv[b, idx[b, j]] == j ? g[b, idx[b, j]] * s : 0
//                        dscores[b, j] = inv[b, idx[b, j]] == j ? <g[b, idx[b, j]], routed[b, j]> : 0
//                        (each output optional: a null pointer skips it)
//
// dtypes: f32, f64, bf16, f16 (half types compute in f32). gather_rows also
// moves b8 (bool masks; no scores). Results do not depend on the thread count.
#pragma once
#include <cstddef>
#include <cstdint>

#include "engine/dtype.h"

namespace colt5::kernels {

struct RowsIn {
  const void* p = nullptr;
  int64_t sb = 0, sn = 0;  // element strides of the batch and row dims
};
struct RowsOut {
  void* p = nullptr;
  int64_t sb = 0, sn = 0;
};

struct RoutingDims {
  DType dtype = DType::f32;
  int64_t B = 0, N = 0, D = 0;
  int64_t R = 1, n = 0;  // idx (B, R, n)
  int64_t m() const { return R * n; }
};

// Throws colt5::Error naming `op` on negative sizes, a bad dtype or null pointers.
void check_routing_dims(const RoutingDims& d, const char* op);

}  // namespace colt5::kernels

namespace colt5::kernels::cpu {

using colt5::kernels::RoutingDims;
using colt5::kernels::RowsIn;
using colt5::kernels::RowsOut;

void gather_rows(const RoutingDims& d, RowsOut out, RowsIn x, const int64_t* idx, const void* scores);
void gather_rows_backward(const RoutingDims& d, RowsOut dx, RowsIn g, const int64_t* idx, const void* scores);
void gather_rows_dscores(const RoutingDims& d, void* dscores, RowsIn g, RowsIn x, const int64_t* idx);
void route_back_inverse(const RoutingDims& d, const int64_t* idx, int64_t* inv);
void route_back_forward(const RoutingDims& d, RowsOut out, RowsIn dst, RowsIn routed, const int64_t* inv,
                        const void* scores);
void route_back_backward(const RoutingDims& d, RowsOut ddst, RowsOut drouted, void* dscores, RowsIn g, RowsIn routed,
                         const int64_t* idx, const int64_t* inv, const void* scores);

}  // namespace colt5::kernels::cpu
