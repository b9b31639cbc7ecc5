#!/usr/bin/env bash
# Builds the seed corpora of the harnesses into OUT/<harness>/ from the tiny
# models (fuzz_seedgen) and the repository's own small models and fixtures.
# Nothing here is committed: scripts/fuzz.sh runs this into its build folder.
# Usage: fuzz/make_seeds.sh BUILD_DIR OUT   (BUILD_DIR holds fuzz/fuzz_seedgen and kfuse)
set -euo pipefail
cd "$(dirname "$0")/.."
build=$1
out=$2
kfuse=$build/kfuse
sep=$'\n#KF-NEXT-FILE#\n' # KF_FUZZ_SEP (fuzz/fuzz_common.h)
rm -rf "$out"
mkdir -p "$out"
"$build/fuzz/fuzz_seedgen" "$out"

# join OUTFILE FILE... : the files separated by KF_FUZZ_SEP
join() {
    local dst=$1 first=1
    shift
    : >"$dst"
    for f in "$@"; do
        [ $first = 1 ] || printf '%s' "$sep" >>"$dst"
        cat "$f" >>"$dst"
        first=0
    done
}

gut=models/llama-gutenberg-1.4m
for d in tests/fixtures/models/gpt2-tiny tests/fixtures/models/llama-gqa-bf16 $gut; do
    name=$(basename "$d")
    cp "$d/config.json" "$out/config/$name"
    # The safetensors header (the data is cut by -max_len anyway).
    head -c 16384 "$d/model.safetensors" >"$out/safetensors/$name"
done
for d in tests/fixtures/models/gpt2-tiny tests/fixtures/models/llama-gqa-bf16; do
    join "$out/hf/$(basename "$d")" "$d/config.json" "$d/model.safetensors"
done

# llama2.c: the tiny checkpoint with the repository's tokenizer.bin, whose
# 4096 pieces the 16-token model cuts.
join "$out/llama2c/tiny-gutenberg-tokenizer" "$out/tiny-llama.bin" "$gut/tokenizer.bin"

# tokenizer.json: the repository's tokenizers with a tricky text.
mkdir -p "$out/tokenizer_json"
text=tests/fixtures/tokenizer/tricky.txt
join "$out/tokenizer_json/gutenberg" "$gut/tokenizer.json" "$text" "$gut/tokenizer_config.json"
# A tiny valid one: the bad_merge fixture without its bad merge.
sed 's/, "b c"//' tests/fixtures/tokenizer/bad_merge/tokenizer.json >"$out/tiny-tokenizer.json"
join "$out/tokenizer_json/tiny-spm" "$out/tiny-tokenizer.json" "$text"
rm "$out/tiny-tokenizer.json"
for t in tests/fixtures/tokenizer/*/tokenizer.json; do
    join "$out/tokenizer_json/$(basename "$(dirname "$t")")" "$t" "$text"
done

# Statistics file and MoE models made by kfuse itself from the tiny model.
calib=$out/calib.txt
head -c 4000 data/calib/calib.txt >"$calib"
export OMP_NUM_THREADS=1
"$kfuse" analyze "$out/tiny-llama.gguf" -f "$calib" --tokens 256 --ctx 8 -o "$out/analyze" >/dev/null
mkdir -p "$out/statsfile"
cp "$out/analyze/stats.kfs" "$out/statsfile/tiny-llama"
"$kfuse" moefy "$out/tiny-llama.gguf" -f "$calib" --experts 2 --tokens 256 --router-tokens 64 --ctx 8 \
    --router mlp --hidden 4 --epochs 2 --coverage 0.6 -o "$out/moefy.gguf" >/dev/null
"$kfuse" moefy "$out/tiny-llama.gguf" -f "$calib" --experts 4 --tokens 256 --router-tokens 64 --ctx 8 \
    --router linear --top-k 2 --format hf -o "$out/moefy-hf" >/dev/null
cp "$out/moefy.gguf" "$out/moe/moefy-mlp-coverage"
cp "$out/moefy.gguf" "$out/gguf/moefy-mlp-coverage"
h=$out/moefy-hf
join "$out/hf/moefy-linear-top2" "$h/config.json" "$h/model.safetensors" "$h/moe_router.safetensors"
jq -c .kfuse_moe "$h/config.json" >"$out/moe-linear.json"
join "$out/moe/moefy-linear-top2" "$out/moe-linear.json" "$h/moe_router.safetensors"
# BLiMP JSONL: the test fixture's files (tests/fixtures/blimp)
mkdir -p "$out/blimp"
for f in tests/fixtures/blimp/*.jsonl; do cp "$f" "$out/blimp/$(basename "$f" .jsonl)"; done
rm -rf "$out/analyze" "$out/moefy-hf" "$out/moefy.gguf" "$out/moe-linear.json" "$calib" "$out"/tiny-llama.*
for d in "$out"/*/; do echo "$(basename "$d"): $(ls "$d" | wc -l) seeds"; done
