#!/usr/bin/env bash
# Installs what is missing (Debian 12: apt, with sudo when not root), then
# configures and builds colt5 in ./build. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(g++ cmake make libopenblas-dev doctest-dev nlohmann-json3-dev libcli11-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

jobs=$(nproc 2>/dev/null || echo 2)
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release ${COLT5_CMAKE_ARGS:-}
cmake --build build -j"$jobs"
