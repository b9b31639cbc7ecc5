#!/bin/sh
# Regenerates the "MoEfication" table of docs/RESULTS.md: perplexity and KL to
# the dense model versus the share of FFN neurons computed per token, for each
# split x router (+ dynamic-k), on llama-gutenberg-6.5m (SwiGLU) and
# gpt2-gutenberg-5.9m (GELU).
#   usage: bench/bench_moe_quality.sh [BUILD_DIR] [OUT_DIR]
# Calibration: four training books of the shared corpus (never the held-out
# dorian-gray / treasure-island). Evaluation: the first 100 kB of WikiText-2
# test and of each held-out book (kfuse eval, ctx 256). Every row of the table
# printed at the end carries the two commands that produced it.
# OMP_NUM_THREADS=1 keeps the numbers reproducible on a shared machine.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build}
OUT=${2:-/tmp/kf_moe_quality}
KFUSE=$BUILD/kfuse
CORPUS=${CORPUS:-$ROOT/../shared/data/corpus}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$OUT"
cat "$CORPUS/adventures-of-sherlock-holmes.txt" "$CORPUS/alice-in-wonderland.txt" "$CORPUS/frankenstein.txt" \
    "$CORPUS/dracula.txt" | head -c 1500000 > "$OUT/calib.txt"
head -c 100000 "$ROOT/data/wikitext-2-raw/wiki.test.raw" > "$OUT/wiki.txt"
head -c 100000 "$CORPUS/picture-of-dorian-gray.txt" > "$OUT/dorian.txt"
head -c 100000 "$CORPUS/treasure-island.txt" > "$OUT/treasure.txt"

MODELS=${MODELS:-"$ROOT/models/llama-gutenberg-6.5m $ROOT/../shared/models/gpt2-gutenberg-5.9m"}
SPLITS=${SPLITS:-"kmeans coact fold"}
ROUTERS=${ROUTERS:-"similarity linear mlp oracle"}
SELECTS=${SELECTS:-"--top-k=3 --top-k=8 --top-k=16 --coverage=0.9"}
E=32
echo "dense ppl: see the ref entries of the eval JSON files in $OUT"
echo "| model | split | router | selection | FFN share | wiki ppl | wiki KL | dorian ppl | dorian KL | treasure ppl | treasure KL | recall@k (sim) |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
for M in $MODELS; do
  name=$(basename "$M")
  for S in $SPLITS; do for R in $ROUTERS; do for SEL in $SELECTS; do
    opt=${SEL%%=*}; val=${SEL#*=}
    tag="$name.$S.$R.${opt#--}$val"
    cmd="kfuse moefy $M -f calib.txt --experts $E --split $S --router $R $opt $val -o $tag"
    "$KFUSE" moefy "$M" -f "$OUT/calib.txt" --experts $E --split $S --router $R $opt $val -o "$OUT/$tag" \
        > "$OUT/$tag.moefy.json" 2>/dev/null
    row="| $name | $S | $R | $opt $val"
    share=$(/usr/bin/python3 -c "import json;print('%.3f'%json.load(open('$OUT/$tag.moefy.json'))['mean_share'])")
    row="$row | $share"
    for T in wiki dorian treasure; do
      "$KFUSE" eval "$OUT/$tag" --ref "$M" -f "$OUT/$T.txt" --ctx 256 --no-bench --json > "$OUT/$tag.$T.json"
      row="$row | $(/usr/bin/python3 -c "import json;d=json.load(open('$OUT/$tag.$T.json'));print('%.2f | %.4f'%(d['model']['ppl'], d['kl_mean']))")"
    done
    rec=$(/usr/bin/python3 -c "import json;d=json.load(open('$OUT/$tag.moefy.json'));print('%.3f (%.3f)'%(d['mean_recall'],d['mean_recall_similarity']))")
    echo "$row | $rec |"
    echo "<!-- $cmd ; kfuse eval $tag --ref $M -f {wiki,dorian,treasure}.txt --ctx 256 --no-bench -->"
  done; done; done
done
