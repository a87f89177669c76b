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

# Optional: the cudnn-frontend C++ headers (header-only, MIT) that the cuDNN
# attention backend needs (CMake option COLT5_CUDNN), unpacked from the
# nvidia-cudnn-frontend wheel into .deps/cudnn_frontend/include. Only tried
# when cuDNN itself is installed and pip works; any failure just leaves that
# backend off.
fe=.deps/cudnn_frontend
if [ ! -f "$fe/include/cudnn_frontend.h" ] &&
  { command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; } &&
  { [ -f /usr/local/cuda/include/cudnn.h ] || [ -f /usr/include/cudnn.h ]; } &&
  python3 -m pip --version >/dev/null 2>&1; then
  tmp=$(mktemp -d)
  if timeout 120 python3 -m pip download -q --no-deps --only-binary=:all: nvidia-cudnn-frontend -d "$tmp" >/dev/null 2>&1 &&
    python3 - "$tmp" "$fe" <<'PY'
import glob, os, sys, zipfile
wheels = glob.glob(os.path.join(sys.argv[1], "*.whl"))
with zipfile.ZipFile(wheels[0]) as z:
    names = [n for n in z.namelist() if n.startswith("include/")]
    if "include/cudnn_frontend.h" not in names:
        sys.exit(1)
    for n in names:
        z.extract(n, sys.argv[2])
PY
  then
    echo "setup: cudnn-frontend headers in $fe/include (cuDNN attention backend available)"
  else
    echo "setup: could not fetch the cudnn-frontend headers; the cuDNN attention backend stays off"
  fi
  rm -rf "$tmp"
fi

jobs=$(nproc 2>/dev/null || echo 2)
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release ${COLT5_CMAKE_ARGS:-}
cmake --build build -j"$jobs"
