#!/usr/bin/env bash
# Regenerates the compression table of docs/RESULTS.md: every method with and
# without the least-squares refit at FFN widths 75/50/25%, and dropping 1/2/3
# blocks, on llama-gutenberg-6.5m. Calibration: the start of six training
# books of ../shared/data/corpus (never the held-out picture-of-dorian-gray.txt
# or treasure-island.txt); evaluation: the start of WikiText-2 test and of the
# two held-out books (half each). Prints a markdown table; every model and JSON
# is kept in $OUT_DIR.
#
# Two phases: (1) build every compressed model (a model already in $OUT_DIR is
# reused, so an interrupted run resumes); (2) one `kfuse eval` per text scores
# all models against the original, which is computed once per window.
# Sizes are environment variables (defaults in brackets):
#   CALIB_TOKENS [32768], CALIB_BYTES per book [16000], EVAL_BYTES per text [300000], CTX [256]
# and what to run: METHODS [fold fold-corr prune-magnitude prune-wanda
# prune-act random], KEEPS [0.75 0.5 0.25], DROPS [1 2 3] (each also with --merge).
# "fold" is --group corr-energy (the default), "fold-corr" is --group corr.
# usage: bench/compress_table.sh [KFUSE] [MODEL]
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
kfuse=${1:-$root/build/kfuse}
model=${2:-$root/models/llama-gutenberg-6.5m}
corpus=${CORPUS:-$root/../shared/data/corpus}
out=${OUT_DIR:-/tmp/kfuse_compress_table}
ct=${CALIB_TOKENS:-32768}
cb=${CALIB_BYTES:-16000}
eb=${EVAL_BYTES:-300000}
ctx=${CTX:-256}
mkdir -p "$out"
: >"$out/calib.txt"
for b in emma dracula frankenstein moby-dick pride-and-prejudice great-expectations; do
    head -c "$cb" "$corpus/$b.txt" >>"$out/calib.txt"
done
head -c "$eb" "$root/data/wikitext-2-raw/wiki.test.raw" >"$out/wiki.txt"
{ head -c "$((eb / 2))" "$corpus/picture-of-dorian-gray.txt"; head -c "$((eb / 2))" "$corpus/treasure-island.txt"; } >"$out/books.txt"

# Phase 1: models. rows.txt keeps "name|method|refit|kept" in table order.
: >"$out/rows.txt"
build() { # name, then compress options
    local name=$1
    shift
    # the JSON summary is printed last: a model without one was interrupted
    if [ ! -s "$out/$name.compress.json" ]; then
        "$kfuse" compress "$model" -f "$out/calib.txt" --tokens "$ct" --ctx "$ctx" "$@" \
            -o "$out/$name" >"$out/$name.compress.json" 2>/dev/null
    fi
}
for keep in ${KEEPS:-0.75 0.5 0.25}; do
    for method in ${METHODS:-fold fold-corr prune-magnitude prune-wanda prune-act random}; do
        for refit in yes no; do
            name=$method-$keep-$refit
            args=(--method "$method")
            [ "$method" = fold-corr ] && args=(--method fold --group corr)
            [ "$refit" = no ] && args+=(--no-refit)
            build "$name" "${args[@]}" --ffn-keep "$keep"
            echo "$name|$method|$refit|$(/usr/bin/python3 -c "print(f'{float($keep):.0%}')")" >>"$out/rows.txt"
        done
    done
done
for n in ${DROPS:-1 2 3}; do
    build "drop-$n" --method drop-layers --drop "$n"
    dropped=$(/usr/bin/python3 -c "import json; print(json.load(open('$out/drop-$n.compress.json'))['dropped'])")
    echo "drop-$n|drop $n blocks $dropped|-|100%" >>"$out/rows.txt"
done
for n in ${DROPS:-1 2 3}; do # --merge: the dropped blocks' FFNs move into the next kept block
    build "drop-$n-merge" --method drop-layers --drop "$n" --merge
    into=$(/usr/bin/python3 -c "import json; d=json.load(open('$out/drop-$n-merge.compress.json')); print(d['dropped'], '->', d['merged_into'])")
    echo "drop-$n-merge|drop $n blocks $into, FFN merged|-|100%" >>"$out/rows.txt"
done

# Phase 2: one eval per text, all models against the original.
models=("$model")
while IFS='|' read -r name _; do models+=("$out/$name"); done <"$out/rows.txt"
for t in wiki books; do
    "$kfuse" eval "${models[@]}" --ref "$model" -f "$out/$t.txt" --ctx "$ctx" --no-bench --json >"$out/$t.json"
done
/usr/bin/python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
w, b = (json.load(open(f"{out}/{t}.json")) for t in ("wiki", "books"))
rows = [("original", "original", "-", "100%")] + [tuple(l.rstrip("\n").split("|")) for l in open(f"{out}/rows.txt")]
print(f"wiki: {w[0]['n_scored']} scored tokens, books: {b[0]['n_scored']} scored tokens (ctx {w[0]['ctx']})\n")
print("| method | refit | FFN kept | wiki ppl | wiki KL | wiki KL p99 | books ppl | books KL | books KL p99 | books top-1 | params |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for (name, method, refit, kept), x, y in zip(rows, w, b):
    print(f"| {method} | {refit} | {kept} | {x['model']['ppl']:.2f} | {x['kl_mean']:.4f} | {x['kl_p99']:.3f} | "
          f"{y['model']['ppl']:.2f} | {y['kl_mean']:.4f} | {y['kl_p99']:.3f} | {y['top1_agreement']:.3f} | {x['model']['params']} |")
PY
