#!/usr/bin/env bash
# Build with CUDA (sm_90a + compute_90 PTX) and run the whole test suite on a
# machine with an NVIDIA GPU: every CPU test file and every GPU test file
# (backend ops, kernels, ops, layer parity, memory), then optionally the GPU
# benchmarks. Logs go to $OUT (default ./out).
#   bash scripts/gpu_suite.sh            # build + ctest
#   BENCH=1 bash scripts/gpu_suite.sh    # ... + colt5 bench on the GPU
# Extra header folders (doctest, CLI11) are looked up in .deps/ as well.
set -o pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/out}; B=${B:-build-gpu}; mkdir -p "$OUT"
cli11=(); [ -d .deps/cli11 ] && cli11=(-DCOLT5_CLI11_INCLUDE="$PWD/.deps/cli11")
if [ ! -f "$B/CMakeCache.txt" ]; then
  cmake -S . -B "$B" -DCOLT5_CUDA=ON -DCMAKE_BUILD_TYPE=Release "${cli11[@]}" > "$OUT/cmake.log" 2>&1 \
    || { tail -30 "$OUT/cmake.log"; exit 1; }
fi
t0=$(date +%s)
cmake --build "$B" -j"$(nproc)" > "$OUT/build.log" 2>&1 || { grep -E "error|Error" "$OUT/build.log" | head -30; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
if [ -z "${NO_TESTS:-}" ]; then
  # CPU-side entries through ctest; the GPU suite once, whole, in one process.
  ctest --test-dir "$B" -j"${JOBS:-8}" -E '^gpu_' --output-on-failure --timeout 500 2>&1 | tee "$OUT/ctest.log" | tail -25
  "$B/tests/colt5_gpu_tests" ${GPU_FILTER:-} 2>&1 | tee "$OUT/gpu_tests.log" | tail -${TAIL:-60}
fi
if [ -n "${BENCH:-}" ]; then
  for b in ${BENCH_LIST:-cuda coor-descent coor-descent-kernels topk attention local-attention}; do
    echo "== colt5 bench $b"
    timeout ${BENCH_S:-150} "$B/colt5" bench $b ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench_$b.log"
  done
fi
