#!/usr/bin/env bash
# BLiMP column of docs/RESULTS.md: rebuilds the main rows of the Compression
# table (fold with allocated widths at 50% average, prune-wanda + refit at 50%,
# drop 1 block) with bench/compress_table.sh's calibration and options, and one
# MoEfied model with bench/bench_moe_quality.sh's (kmeans split, linear router,
# 32 experts, top-8), then scores them and the original on BLiMP in one
# `kfuse eval` (every model on the same token ids).
#
#   bench/blimp_compress.sh OUT_DIR [PAIRS]
#
# PAIRS = pairs per paradigm (--task-pairs; 0 = all 1,000). Then:
#   /usr/bin/python3 bench/blimp_table.py original=OUT_DIR/blimp.json#0 fold-tp=OUT_DIR/blimp.json#1 ...
set -euo pipefail
out=${1:?usage: bench/blimp_compress.sh OUT_DIR [PAIRS]}
pairs=${2:-0}
root=$(cd "$(dirname "$0")/.." && pwd)
kfuse=${KFUSE:-$root/build/kfuse}
shared=${SHARED:-$root/../shared}
corpus=$shared/data/corpus
model=$shared/models/llama-gutenberg-6.5m
mkdir -p "$out"
: >"$out/calib.txt"
for b in emma dracula frankenstein moby-dick pride-and-prejudice great-expectations; do
    head -c 16000 "$corpus/$b.txt" >>"$out/calib.txt"
done
cat "$corpus/adventures-of-sherlock-holmes.txt" "$corpus/alice-in-wonderland.txt" "$corpus/frankenstein.txt" \
    "$corpus/dracula.txt" | head -c 1500000 >"$out/moe-calib.txt" ||
    [ "$(stat -c %s "$out/moe-calib.txt")" -eq 1500000 ] # cat stopped by head: SIGPIPE under pipefail
build() { # name, then compress options; the JSON summary is printed last
    local name=$1
    shift
    [ -s "$out/$name.compress.json" ] ||
        "$kfuse" compress "$model" -f "$out/calib.txt" --tokens 32768 --ctx 256 "$@" -o "$out/$name" \
            >"$out/$name.compress.json" 2>/dev/null
}
build fold-tp-0.5 --method fold --target-params 0.693358769
build prune-wanda-0.5-yes --method prune-wanda --ffn-keep 0.5
build drop-1 --method drop-layers --drop 1
[ -s "$out/moe.kmeans.linear.moefy.json" ] ||
    "$kfuse" moefy "$model" -f "$out/moe-calib.txt" --experts 32 --split kmeans --router linear --top-k 8 \
        -o "$out/moe.kmeans.linear" >"$out/moe.kmeans.linear.moefy.json" 2>/dev/null
"$kfuse" eval "$model" "$out/fold-tp-0.5" "$out/prune-wanda-0.5-yes" "$out/drop-1" "$out/moe.kmeans.linear" \
    --task "blimp=$shared/data/blimp" --task-pairs "$pairs" --json >"$out/blimp.json"
