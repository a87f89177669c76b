// Routing gathers and scatters on CUDA: host API (plain C++, no nvcc needed).
// Same dims, operands and results as kernels/cpu/routing.h (the reference).
// Sums over routed rows (the gather backward) run in the CPU's order; the
// score gradients (dot products over D) are reduced as a warp tree instead of
// sequentially, so they agree with the CPU to rounding (f32: ~1e-7 D absolute).
// All pointers are device pointers; work is queued on `stream`, nothing
// synchronises, nothing is allocated (pass the workspace asked for).
//
// How each op runs:
//   * gather_rows, route_back_forward, the ddst/drouted part of
//     route_back_backward: one thread per output element (a feature of one
//     row), consecutive threads on consecutive features (coalesced).
//   * gather_rows_dscores, dscores of route_back_backward: one warp per row.
//   * route_back_inverse: fill -1, then atomicMax(inv[b, idx[b, j]], j): the
//     largest j wins whatever the schedule (= "last wins" of the CPU loop).
//   * gather_rows_backward (scatter-add, deterministic, no float atomics):
//     router indices are distinct within one (batch, route) row (a top-k never
//     picks a token twice). The kernel relies on that and verifies it:
//       1. inv[b, r, t] = the j of route r that picked token t, or -1, built
//          with atomicCAS from -1; a CAS that finds the slot taken means a
//          duplicate within (b, r) and raises a flag in the workspace;
//       2. one thread per dx element sums g[b, r, inv[b, r, t]] * s over r in
//          order (0 when no route picked t): every dx element written once,
//          no atomics, the same order as the CPU loop;
//       3. only when the flag is up (read on the device: no host sync), an
//          ordered fallback recomputes dx with one thread per (b, feature)
//          walking all routed rows in order (correct for any indices, slow).
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/cpu/routing.h"

struct CUstream_st;
typedef CUstream_st* cudaStream_t;

namespace colt5::kernels::cuda {

using colt5::kernels::RoutingDims;
using colt5::kernels::RowsIn;
using colt5::kernels::RowsOut;

void gather_rows(const RoutingDims& d, RowsOut out, RowsIn x, const int64_t* idx, const void* scores,
                 cudaStream_t stream);

// Scratch for gather_rows_backward: the inverse map (B, R, N) i32 and the duplicate flag.
size_t gather_rows_backward_workspace_bytes(const RoutingDims& d);
void gather_rows_backward(const RoutingDims& d, RowsOut dx, RowsIn g, const int64_t* idx, const void* scores,
                          void* workspace, size_t workspace_bytes, cudaStream_t stream);

void gather_rows_dscores(const RoutingDims& d, void* dscores, RowsIn g, RowsIn x, const int64_t* idx,
                         cudaStream_t stream);
void route_back_inverse(const RoutingDims& d, const int64_t* idx, int64_t* inv, cudaStream_t stream);
void route_back_forward(const RoutingDims& d, RowsOut out, RowsIn dst, RowsIn routed, const int64_t* inv,
                        const void* scores, cudaStream_t stream);
void route_back_backward(const RoutingDims& d, RowsOut ddst, RowsOut drouted, void* dscores, RowsIn g, RowsIn routed,
                         const int64_t* idx, const int64_t* inv, const void* scores, cudaStream_t stream);

}  // namespace colt5::kernels::cuda
