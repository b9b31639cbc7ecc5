#!/usr/bin/env bash
# Bad input through the CLI: each case must exit non-zero with exactly one
# line on stderr that names the offending file (or option) and no sanitizer
# report or crash.
set -u
: "${KFUSE:?}" "${KF_ROOT:?}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
model="$KF_ROOT/models/llama-gutenberg-1.4m"
fails=0 passes=0

# expect_error NAME NEEDLE CMD...: CMD fails, prints one stderr line containing NEEDLE.
expect_error() {
  local name=$1 needle=$2
  shift 2
  "$@" >"$tmp/out" 2>"$tmp/err"
  local rc=$? lines
  lines=$(wc -l <"$tmp/err")
  if [ $rc -ne 0 ] && [ $rc -lt 128 ] && [ "$lines" -eq 1 ] && grep -qF -- "$needle" "$tmp/err"; then
    passes=$((passes + 1))
  else
    fails=$((fails + 1))
    echo "FAIL $name: rc=$rc, $lines stderr lines, expected one containing '$needle':"
    head -5 "$tmp/err"
  fi
}

printf 'Hello \xff\xfe world\n' >"$tmp/bad-utf8.txt"
expect_error non-utf8 "$tmp/bad-utf8.txt" "$KFUSE" perplexity "$model" -f "$tmp/bad-utf8.txt" --ctx 8
expect_error missing-text "$tmp/nope.txt" "$KFUSE" perplexity "$model" -f "$tmp/nope.txt"
expect_error missing-model "$tmp/no-model" "$KFUSE" info "$tmp/no-model"

mkdir "$tmp/notok"
cp "$model/config.json" "$model/model.safetensors" "$tmp/notok/"
expect_error missing-tokenizer "$tmp/notok" "$KFUSE" generate "$tmp/notok" -p hi -n 2

mkdir "$tmp/arch"
sed 's/LlamaForCausalLM/FooForCausalLM/' "$model/config.json" >"$tmp/arch/config.json"
cp "$model/model.safetensors" "$tmp/arch/"
expect_error unknown-arch "FooForCausalLM" "$KFUSE" info "$tmp/arch"

head -c 1000 "$model/model.safetensors" >"$tmp/trunc.safetensors"
mkdir "$tmp/trunc" && cp "$model/config.json" "$tmp/trunc/" && mv "$tmp/trunc.safetensors" "$tmp/trunc/model.safetensors"
expect_error truncated-safetensors "model.safetensors" "$KFUSE" info "$tmp/trunc"

printf 'GGUX\3\0\0\0' >"$tmp/bad.gguf"
expect_error gguf-magic "$tmp/bad.gguf" "$KFUSE" info "$tmp/bad.gguf"
printf 'xyz' >"$tmp/weird.model"
expect_error unknown-format "$tmp/weird.model" "$KFUSE" info "$tmp/weird.model"

expect_error ctx-zero "--ctx" "$KFUSE" perplexity "$model" -f "$KF_ROOT/data/wikitext-2-raw/wiki.test.raw" --ctx 0
expect_error n-negative "-n" "$KFUSE" generate "$model" -p hi -n -5
expect_error temp-negative "--temp" "$KFUSE" generate "$model" -p hi --temp -1
expect_error top-p-large "--top-p" "$KFUSE" generate "$model" -p hi --top-p 2
expect_error unknown-option "--frobnicate" "$KFUSE" bench "$model" --frobnicate
expect_error bench-absurd "-p" "$KFUSE" bench "$model" -p 100000000
expect_error bench-kernel-f32 "F32 weights" "$KFUSE" bench "$model" --kernel avx2
bf16="$KF_ROOT/tests/fixtures/models/llama-gqa-bf16"
expect_error bench-kernel-name "--kernel sse9" "$KFUSE" bench "$bf16" --kernel sse9
expect_error bench-kernel-dtype "no BF16 kernel" "$KFUSE" bench "$bf16" --kernel avx512_vnni
expect_error shard-npy "--shard-layers" "$KFUSE" analyze "$model" -f "$KF_ROOT/data/calib/calib.txt" -o "$tmp/an" \
  --shard-layers --dump-npy "$tmp/npy"

echo "$passes passed, $fails failed"
[ $fails -eq 0 ]
