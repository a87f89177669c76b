#!/usr/bin/env bash
# The main job: set up and build, then train the default CoLT5 model on the
# built-in long-range recall task and its two controls (light-only,
# random-route), printing their accuracies side by side. Pictures, metrics
# and checkpoints go to runs/train (override with COLT5_RUN_OUT).
# Extra arguments go to `colt5 train` (e.g. --device cuda --preset gpu).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
./build/colt5 train --out "${COLT5_RUN_OUT:-runs/train}" "$@"
