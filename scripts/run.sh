#!/usr/bin/env bash
# The main job: set up and build, then run it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
./build/colt5 info
