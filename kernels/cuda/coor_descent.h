// Coordinate descent (SPEC §1) on CUDA, f32, pointer level. Same parameters,
// same algorithm and the same `saved` layout as kernels/cpu/coor_descent.h
// (the derivation of the backward is in kernels/cpu/coor_descent.cpp).
//
// A row lives on chip while it iterates: its scores sit in registers, and the
// only traffic between iterations is one (sum, count) reduction per row.
//   * cluster path (rows up to 16·16384 = 262144 entries): a row is split over a
//     thread-block cluster of C = 1..16 blocks (Hopper; C = 16 is the
//     non-portable size), which reduce through distributed shared memory and a
//     cluster barrier. C grows while the GPU has idle SMs, so a few rows still
//     fill it.
//   * grid path (longer rows): G blocks per row (8192 or 16384 entries each in
//     registers, G up to the number of co-resident blocks), launched
//     cooperatively so all blocks are resident; per-iteration partials go
//     through global memory (L2) with a per-row arrival counter. Rows too long
//     for the registers of every resident block stream their scores from L2
//     on each iteration instead ("grid-stream").
// The backward is two launches: a per-row reduction (G of the derivation) and
// one elementwise sweep over the iterations.
//
// All pointers are device pointers; work is queued on `stream` (nothing
// synchronises). `workspace` must hold coor_descent_workspace_bytes(p, launch)
// bytes (4-byte aligned; cudaMalloc's alignment is plenty) and must not be
// shared by calls that may run concurrently; the forward and the backward of
// one call may share it. Results are deterministic: every reduction has a
// fixed order, and the blocks of a row all compute the bit-identical a_t.
// The first call for a shape queries the device (SM count, cluster and
// occupancy limits; cached), which synchronises nothing but is not capturable
// in a CUDA graph: make one call before capturing.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "kernels/cpu/coor_descent.h"

struct CUstream_st;
using cudaStream_t = CUstream_st*;

namespace colt5::kernels::cuda {

enum class CoorDescentPath : int { automatic = 0, cluster = 1, grid = 2, grid_stream = 3 };

// Optional override of the automatic choice (tests and benchmarks use it to
// exercise every path on the same inputs). blocks_per_row: the cluster size
// (1, 2, 4, 8, 16) for `cluster`, the number of blocks per row for `grid` /
// `grid_stream`; 0 = choose.
struct CoorDescentLaunch {
  CoorDescentPath path = CoorDescentPath::automatic;
  int blocks_per_row = 0;
};

// Bytes of scratch the forward and backward need (the larger of the two).
size_t coor_descent_workspace_bytes(const CoorDescentParams& p, const CoorDescentLaunch& launch = {});

// s, out (rows, n); mask (rows, n) uint8 or nullptr; k (rows) or nullptr (then p.k_scalar);
// saved (rows, coor_descent_saved_per_row(p)).
void coor_descent_forward(const CoorDescentParams& p, const float* s, const uint8_t* mask, const float* k, float* out,
                          float* saved, void* workspace, cudaStream_t stream, const CoorDescentLaunch& launch = {});

// dout (rows, n) -> ds (rows, n); dk (rows) or nullptr.
void coor_descent_backward(const CoorDescentParams& p, const float* s, const uint8_t* mask, const float* k,
                           const float* out, const float* saved, const float* dout, float* ds, float* dk,
                           void* workspace, cudaStream_t stream);

// The forward's launch plan in words, e.g. "cluster C=4 x 256 threads x 8/thread".
std::string coor_descent_plan(const CoorDescentParams& p, const CoorDescentLaunch& launch = {});

}  // namespace colt5::kernels::cuda
