#!/usr/bin/env bash
# Installs what kfuse needs, builds it, and runs the main job on the model
# shipped in the repository (models/llama-gutenberg-6.5m):
# its description, its perplexity on WikiText-2 test, a short generation, and
# its redundancy analysis (build/analyze-6.5m/report.html).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
model=models/llama-gutenberg-6.5m
set -x
build/kfuse info "$model"
build/kfuse perplexity "$model" -f data/wikitext-2-raw/wiki.test.raw --ctx 256
build/kfuse generate "$model" -p "It was a dark and stormy night" -n 48 --seed 1
calib=../shared/data/corpus/dracula.txt # calibration: the shared corpus when present, else WikiText-2
[ -f "$calib" ] || calib=data/wikitext-2-raw/wiki.test.raw
build/kfuse analyze "$model" -f "$calib" --tokens 16384 -o build/analyze-6.5m
