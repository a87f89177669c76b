#!/usr/bin/env bash
# Set up and build, then run the whole test suite through ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Say up front whether the GPU suite will run or be skipped (and why).
if gpu_msg=$(./build/tests/colt5_gpu_tests --no-run 2>&1); then
  echo "GPU tests: a CUDA device is visible; the GPU suite runs"
else
  echo "$gpu_msg" | grep -i "skipped" || true
fi
ctest --test-dir build --output-on-failure -j"$(nproc 2>/dev/null || echo 2)"
