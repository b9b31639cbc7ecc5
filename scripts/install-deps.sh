#!/usr/bin/env bash
# Installs kfuse's dependencies from Debian packages.
#   scripts/install-deps.sh          what building and running kfuse needs
#   scripts/install-deps.sh --test   that plus the test references and tools
#                                    (PyTorch, numpy, ..., chromium, clang for the fuzzers)
# Run as root (or with sudo). Idempotent: skips apt when all are present.
set -euo pipefail
PKGS=(build-essential cmake pkg-config
      libopenblas-openmp-dev liblapacke-dev libcjson-dev libcmocka-dev libmetis-dev
      libopenmpi-dev openmpi-bin libdnnl-dev)
TEST_PKGS=(chromium clang libclang-rt-14-dev libomp-14-dev jq
           python3-torch python3-numpy python3-scipy python3-sklearn python3-sentencepiece python3-regex)
case "${1:-}" in
  "") ;;
  --test) PKGS+=("${TEST_PKGS[@]}") ;;
  *) echo "usage: scripts/install-deps.sh [--test]" >&2; exit 2 ;;
esac
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  echo "install-deps: installing ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# Test-only: real llama.cpp for tests/test_llama_cpp.sh, from the npm registry
# into ~/.cache/kfuse (outside the repository); run as the user who runs the tests.
if [ "${1:-}" = --test ]; then "$(dirname "$0")/fetch-llama-cpp.sh"; fi
