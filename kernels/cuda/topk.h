// Hard top-k over the last dim of contiguous rows, CUDA (pointer level: no
// tensors, no autograd). Plain C++ header: includable without nvcc.
//
// Same order as kernels/cpu/topk.h, and bit-identical results: larger value
// first, ties to the LOWER index, -0.0 == +0.0, NaN below everything (NaNs tie
// with each other); the values returned are the input's own bits.
//
// Algorithm (see topk.cu): order-preserving integer keys; a radix select in
// 11-bit digits (3 passes for f32, 6 for f64) finds the k-th key T and how many
// entries equal to T are needed; a gather takes every entry > T (to be sorted)
// and the first needed entries == T in index order (already in final place);
// a bitonic sort in shared memory orders the > T part.
//   - "block" path: one block per row, the row held in shared memory
//     (one kernel launch). Possible when k <= 16384 (f32) / 8192 (f64) and
//     n*sizeof(T) + pow2(k)*{8 (f32), 16 (f64)} bytes fit in a block's shared
//     memory; `automatic` takes it when also n*sizeof(T) <= 64 KiB or
//     rows >= 2 * (number of SMs).
//   - "multi_block" path: a long row is split over many blocks; each pass
//     builds per-block histograms, merged with global atomics, and the last
//     block of the row picks the digit; a per-block count of ties makes the
//     gather deterministic. k above the shared-memory sort's capacity is
//     sorted with CUB's segmented radix sort (two stable passes).
// All launches go to `stream`; no host synchronisation, no allocation.
// Tuning switches, read once from the environment (benchmarks only):
//   COLT5_TOPK_BLOCK_THREADS=256|512  block size of the block path;
//   COLT5_TOPK_NO_SHUFFLE=1           bitonic stages through shared memory only.
#pragma once
#include <cstddef>
#include <cstdint>

struct CUstream_st;
typedef CUstream_st* cudaStream_t;

namespace colt5::kernels::cuda {

// Which implementation to use; `automatic` picks per shape and device.
// The others exist for tests and benchmarks (both give identical results).
enum class TopkPath { automatic, block, multi_block };

// Device workspace (bytes) that topk needs for this shape on the current
// device (0 is possible: then `workspace` may be null). f64 has its own size.
size_t topk_workspace_bytes(int64_t rows, int64_t n, int64_t k, TopkPath path = TopkPath::automatic);
size_t topk_workspace_bytes_f64(int64_t rows, int64_t n, int64_t k, TopkPath path = TopkPath::automatic);

// x (rows, n) contiguous on the current device; writes values (rows, k) and
// indices (rows, k) int64, each row sorted descending, ties -> lower index.
// Requires 0 <= k <= n and n < 2^32 (throws colt5::Error otherwise).
// `workspace` holds at least topk_workspace_bytes(rows, n, k, path) bytes.
void topk(const float* x, int64_t rows, int64_t n, int64_t k, float* values, int64_t* indices,
          void* workspace, cudaStream_t stream, TopkPath path = TopkPath::automatic);
void topk(const double* x, int64_t rows, int64_t n, int64_t k, double* values, int64_t* indices,
          void* workspace, cudaStream_t stream, TopkPath path = TopkPath::automatic);

// Which path `automatic` takes for this shape on the current device.
TopkPath topk_auto_path(int64_t rows, int64_t n, int64_t k, bool f64 = false);

// Benchmark baselines (not top-k: a full sort of every row, which is what a
// top-k built on a sort pays), CUB from the CUDA toolkit:
//   which = 0: cub::DeviceSegmentedRadixSort::SortPairsDescending
//   which = 1: cub::DeviceSegmentedSort::SortPairsDescending
// Writes the sorted values (rows, n) and int32 indices (rows, n).
size_t sort_baseline_workspace_bytes(int64_t rows, int64_t n, int which);
void sort_baseline(const float* x, int64_t rows, int64_t n, float* sorted_values, int32_t* sorted_indices,
                   void* workspace, cudaStream_t stream, int which);

}  // namespace colt5::kernels::cuda
