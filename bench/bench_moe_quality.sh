#!/usr/bin/env bash
# Regenerates the "MoEfication" quality table of docs/RESULTS.md: perplexity
# and KL to the dense model versus the share of FFN neurons computed per
# token, for each split x router, at top-k 3, 8, 16 of 32 experts (9.4%, 25%,
# 50%) and dynamic-k (coverage 0.9), on llama-gutenberg-6.5m (SwiGLU) and
# gpt2-gutenberg-5.9m (GELU).
#   usage: bench/bench_moe_quality.sh [BUILD_DIR] [OUT_DIR]
# Calibration: four training books of the shared corpus (never the held-out
# dorian-gray / treasure-island). Evaluation (kfuse eval, ctx 256): the start
# of WikiText-2 test (WIKI_BYTES [100000]) and of the two held-out books
# (BOOK_BYTES [50000] each, together "books").
# Three phases: (1) one `kfuse moefy` per model x split x router (an existing
# output is reused, so an interrupted run resumes); (2) per model, selection
# and text, one `kfuse eval` of all its MoE models with the selection
# overridden (--top-k / --coverage), the dense model computed once per window;
# (3) the table. The FFN share column is measured by eval on the wiki text.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build}
OUT=${2:-/tmp/kf_moe_quality}
KFUSE=$BUILD/kfuse
CORPUS=${CORPUS:-$ROOT/../shared/data/corpus}
mkdir -p "$OUT"
cat "$CORPUS/adventures-of-sherlock-holmes.txt" "$CORPUS/alice-in-wonderland.txt" "$CORPUS/frankenstein.txt" \
    "$CORPUS/dracula.txt" | head -c 1500000 >"$OUT/calib.txt"
head -c "${WIKI_BYTES:-100000}" "$ROOT/data/wikitext-2-raw/wiki.test.raw" >"$OUT/wiki.txt"
{ head -c "${BOOK_BYTES:-50000}" "$CORPUS/picture-of-dorian-gray.txt"
  head -c "${BOOK_BYTES:-50000}" "$CORPUS/treasure-island.txt"; } >"$OUT/books.txt"

MODELS=${MODELS:-"$ROOT/models/llama-gutenberg-6.5m $ROOT/../shared/models/gpt2-gutenberg-5.9m"}
SPLITS=${SPLITS:-"kmeans coact fold"}
ROUTERS=${ROUTERS:-"similarity linear mlp oracle"}
SELECTS=${SELECTS:-"--top-k=3 --top-k=8 --top-k=16 --coverage=0.9"}
E=32
for M in $MODELS; do
    name=$(basename "$M")
    tags=()
    for S in $SPLITS; do for R in $ROUTERS; do
        tag="$name.$S.$R"
        tags+=("$OUT/$tag")
        [ -s "$OUT/$tag.moefy.json" ] || # printed last: absent if interrupted
            "$KFUSE" moefy "$M" -f "$OUT/calib.txt" --experts $E --split $S --router $R --top-k 8 -o "$OUT/$tag" \
                >"$OUT/$tag.moefy.json" 2>/dev/null
    done; done
    for SEL in $SELECTS; do
        opt=${SEL%%=*} val=${SEL#*=}
        for T in wiki books; do
            "$KFUSE" eval "${tags[@]}" --ref "$M" -f "$OUT/$T.txt" --ctx 256 --no-bench --json "$opt" "$val" \
                >"$OUT/$name.${opt#--}$val.$T.json"
        done
    done
done
/usr/bin/python3 - "$OUT" "$E" "$SELECTS" $MODELS <<'PY'
import json, os, sys
out, E, selects, models = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(), sys.argv[4:]
print("| model | split | router | selection | FFN share | wiki ppl | wiki KL | books ppl | books KL | books top-1 | recall@8 (similarity) |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for m in models:
    name = os.path.basename(m)
    for sel in selects:
        opt, val = sel.split("=")
        w, b = (json.load(open(f"{out}/{name}.{opt[2:]}{val}.{t}.json")) for t in ("wiki", "books"))
        if sel == selects[0]:
            print(f"| {name} | dense | - | - | 1.000 | {w[0]['ref']['ppl']:.2f} | 0 | {b[0]['ref']['ppl']:.2f} | 0 | 1 | - |")
        for x, y in zip(w, b):
            split, router = os.path.basename(x["model"]["path"]).split(".")[-2:]
            mj = json.load(open(x["model"]["path"] + ".moefy.json"))
            rec = f"{mj['mean_recall']:.3f} ({mj['mean_recall_similarity']:.3f})" if router in ("linear", "mlp") else "-"
            print(f"| {name} | {split} | {router} | {opt} {val} | {x['ffn_share']:.3f} | {x['model']['ppl']:.2f} | "
                  f"{x['kl_mean']:.4f} | {y['model']['ppl']:.2f} | {y['kl_mean']:.4f} | {y['top1_agreement']:.3f} | {rec} |")
print(f"\nscored tokens: wiki {w[0]['n_scored']}, books {b[0]['n_scored']} (last model); E = {E} experts per layer")
PY
