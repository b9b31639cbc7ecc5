#!/usr/bin/env bash
# The runs behind docs/FINDINGS.md "Specialisation" and bench/RESULTS.md
# "specialise cost": kfuse specialise on llama-gutenberg-6.5m and
# gpt2-gutenberg-5.9m with five datasets (two authors of the corpus training
# split, tiny-shakespeare, WikiText-2, UPOS of UD English EWT), the random-init
# control, and two MoEfied copies per model (--split kmeans and --split coact)
# for the expert concentration; then the cost runs; then the tables.
#
#   bench/specialise_findings.sh [OUT_DIR]      (default /tmp/kf-specialise)
#
# Environment: KFUSE (default build/kfuse), KF_SHARED (default ../shared).
# Every run is wrapped in /usr/bin/time -v (OUT_DIR/*.time); the tables are
# printed by bench/specialise_tables.py OUT_DIR.
set -euo pipefail
KFUSE=${KFUSE:-build/kfuse}
SHARED=${KF_SHARED:-../shared}
OUT=${1:-/tmp/kf-specialise}
mkdir -p "$OUT"
corpus=$SHARED/data/corpus
ewt=$SHARED/data/ud-english-ewt

# Two authors of the training split, each a concatenation of 60 kB from each
# of three of their books (after the first 20 kB, to skip front matter).
part() { head -c 80000 "$1" | tail -c 60000; }
{ part "$corpus/emma.txt"; part "$corpus/pride-and-prejudice.txt"; part "$corpus/sense-and-sensibility.txt"; } \
  > "$OUT/austen.txt"
{ part "$corpus/adventures-of-sherlock-holmes.txt"; part "$corpus/memoirs-of-sherlock-holmes.txt";
  part "$corpus/return-of-sherlock-holmes.txt"; } > "$OUT/doyle.txt"
data=(--data austen="$OUT/austen.txt" --data doyle="$OUT/doyle.txt"
      --data shakespeare="$corpus/tiny-shakespeare.txt" --data wikitext="$SHARED/data/wikitext-2-raw/wiki.test.raw"
      --data upos="conllu:UPOS:$ewt/en_ewt-ud-train.conllu")
# CPU-light budget (the machine was shared by 7 jobs on 2 cores): 4096
# importance tokens (16 windows of 256, 16 bootstrap chunks), 512 evaluation
# tokens per loss (every removal is scored on the same windows, so the
# differences are paired), UPOS on 3000 + 500 words.
budget=(--tokens 4096 --eval-tokens 512 --task-items 3000 --task-eval-items 500 --frac 0.01,0.02,0.05
        --boot 200 --null 2000 --random 2 --ablate 2)
timed() { # name, command...
  local name=$1; shift
  echo "== $name: $*" | tee "$OUT/$name.cmd"
  /usr/bin/time -v -o "$OUT/$name.time" "$@" > "$OUT/$name.log"
  tail -n 7 "$OUT/$name.log"
}

one_model() {
  local model=$1 m=$SHARED/models/$1 split
  # MoEfied copies for the expert concentration (only the split matters: the
  # similarity router needs no training)
  for split in kmeans coact; do
    [ -d "$OUT/$model-moe-$split" ] ||
      timed "$model-moefy-$split" "$KFUSE" moefy "$m" -f data/calib/calib.txt --experts 16 --split "$split" \
        --router similarity --tokens 16384 -o "$OUT/$model-moe-$split"
  done
  timed "$model" "$KFUSE" specialise "$m" "${data[@]}" "${budget[@]}" \
    --moe "$OUT/$model-moe-kmeans" --moe "$OUT/$model-moe-coact" -o "$OUT/$model"
}
# the two models side by side (each kfuse runs 2 threads)
one_model llama-gutenberg-6.5m & p1=$!
one_model gpt2-gutenberg-5.9m & p2=$!
wait $p1
wait $p2

# cost: one model, two datasets, no control; a text pair, then a text and the task
m=$SHARED/models/llama-gutenberg-6.5m
timed cost-text "$KFUSE" specialise "$m" --data austen="$OUT/austen.txt" --data doyle="$OUT/doyle.txt" \
  "${budget[@]}" --no-control -o "$OUT/cost-text"
timed cost-task "$KFUSE" specialise "$m" --data austen="$OUT/austen.txt" \
  --data upos="conllu:UPOS:$ewt/en_ewt-ud-train.conllu" "${budget[@]}" --no-control \
  -o "$OUT/cost-task"

/usr/bin/python3 "$(dirname "$0")/specialise_tables.py" "$OUT" > "$OUT/tables.md"
echo "tables: $OUT/tables.md"
