#!/usr/bin/env bash
# Test-only: fetches real llama.cpp for tests/test_llama_cpp.sh into a cache
# folder outside the repository (never vendored):
#   npm pack @node-llama-cpp/linux-x64@3.22.1  prebuilt libllama/libggml (x86-64, CPU)
#   npm pack node-llama-cpp@3.22.1             llama/gitRelease.bundle: the llama.cpp
#                                              source of that build (its headers)
# Cache: $KF_LLAMA_CPP_DIR, default ~/.cache/kfuse/llama.cpp-3.22.1, holding
# lib/ (the .so files), include/ (llama.h, ggml*.h, gguf.h) and VERSION (the
# header's llama.cpp version). The ABI is checked before the cache is
# accepted: every function llama.h declares is exported by libllama, and the
# library's version string (llama_version(), also checked by the driver at
# run time) is the header's. Idempotent: an accepted cache is kept.
set -euo pipefail
V=3.22.1
dest=${KF_LLAMA_CPP_DIR:-${HOME}/.cache/kfuse/llama.cpp-$V}
[ -f "$dest/VERSION" ] && exit 0
[ "$(uname -m)" = x86_64 ] || { echo "fetch-llama-cpp: prebuilt llama.cpp is for x86-64 only" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "@node-llama-cpp/linux-x64@$V" "node-llama-cpp@$V" >/dev/null)
mkdir -p "$tmp/bin" "$tmp/pkg" "$tmp/out/lib" "$tmp/out/include"
tar xzf "$tmp/node-llama-cpp-linux-x64-$V.tgz" -C "$tmp/bin"
tar xzf "$tmp/node-llama-cpp-$V.tgz" -C "$tmp/pkg" package/llama/gitRelease.bundle
cp "$tmp"/bin/package/bins/linux-x64/*.so "$tmp/out/lib/"
git clone -q "$tmp/pkg/package/llama/gitRelease.bundle" "$tmp/src" 2>/dev/null
cp "$tmp/src/include/llama.h" "$tmp/src"/ggml/include/*.h "$tmp/out/include/"
ver=$(sed -n 's/^set(LLAMA_VERSION_\(MAJOR\|MINOR\|PATCH\) \([0-9]*\)).*/\2/p' "$tmp/src/CMakeLists.txt" | paste -sd.)
[ -n "$ver" ] || { echo "fetch-llama-cpp: no version in the bundle's CMakeLists.txt" >&2; exit 1; }
lib=$(ls "$tmp"/out/lib/libllama*.so | grep -v common | head -1)
exported=$(nm -D --defined-only "$lib" | awk '{print $3}' | sort -u)
declared=$(grep -v '^ *\(//\|#\)' "$tmp/out/include/llama.h" | grep -o 'LLAMA_API[^(]*(' | sed 's/ *($//; s/.*[ *]//' | grep -vx DEPRECATED | sort -u)
missing=$(comm -23 <(echo "$declared") <(echo "$exported"))
if [ -n "$missing" ]; then
  echo "fetch-llama-cpp: llama.h declares functions $lib lacks (ABI mismatch):" $missing >&2
  exit 1
fi
[ "$(strings "$lib" | grep -cx "$ver\(-dev\)\?")" -gt 0 ] ||
  { echo "fetch-llama-cpp: $lib does not carry version $ver" >&2; exit 1; }
echo "$ver" > "$tmp/out/VERSION"
mkdir -p "$(dirname "$dest")"
rm -rf "$dest"
mv "$tmp/out" "$dest"
echo "fetch-llama-cpp: llama.cpp $ver (node-llama-cpp $V) in $dest"
