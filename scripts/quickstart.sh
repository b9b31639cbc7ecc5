#!/usr/bin/env bash
# Installs what kfuse needs, builds it, and runs the main job on the model
# shipped in the repository (models/llama-gutenberg-6.5m):
#   1. its description, its perplexity on WikiText-2 test, a short generation;
#   2. where it repeats itself: out/analyze/report.html (+ analysis.json);
#   3. a compressed copy with the parameters of half-width FFNs (4.50 M of
#      6.49 M): FFN neurons folded with least-squares refit, each layer's
#      width allocated by its measured error (out/fold, a Hugging Face
#      folder), and what that cost and gained against the original:
#      perplexity, KL, top-1 agreement, speed.
# Calibration text: data/calib/calib.txt (training-split books, not the
# evaluation texts).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
model=models/llama-gutenberg-6.5m
calib=data/calib/calib.txt
wiki=data/wikitext-2-raw/wiki.test.raw
mkdir -p out
set -x
build/kfuse info "$model"
build/kfuse perplexity "$model" -f "$wiki" --ctx 256
build/kfuse generate "$model" -p "It was a dark and stormy night" -n 48 --seed 1
build/kfuse analyze "$model" -f "$calib" --tokens 16384 -o out/analyze
build/kfuse compress "$model" -f "$calib" --method fold --target-params 0.6934 --tokens 16384 -o out/fold
build/kfuse eval out/fold --ref "$model" -f "$wiki" --ctx 256
