#!/usr/bin/env bash
# Set up and build, then run the whole test suite through ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Say up front whether the GPU suite will run or be skipped (and why).
./build/tests/colt5_gpu_tests --no-run 2>&1 | grep -i "skipped" || echo "GPU tests: a CUDA device is visible; the GPU suite runs"
ctest --test-dir build --output-on-failure -j"$(nproc 2>/dev/null || echo 2)"
