#!/usr/bin/env bash
# Regenerates the compression table of docs/RESULTS.md: every method with and
# without the least-squares refit at FFN widths 75/50/25%, and dropping 1/2/3
# blocks, on llama-gutenberg-6.5m. Calibration: the start of several training
# books of ../shared/data/corpus (never the held-out picture-of-dorian-gray.txt
# or treasure-island.txt); evaluation: the start of WikiText-2 test and of the
# two held-out books. Prints a markdown table; every model and JSON is kept
# in $OUT_DIR. Sizes are environment variables (defaults in brackets):
#   CALIB_TOKENS [8192], CALIB_BYTES per book [12000], EVAL_BYTES per text [40000], CTX [256]
# and what to run: ROWS_ORIGINAL [1], METHODS [fold fold-corr prune-magnitude
# prune-wanda prune-act random], KEEPS [0.75 0.5 0.25], DROPS [1 2 3].
# "fold" is --group corr-energy (the default), "fold-corr" is --group corr.
# usage: bench/compress_table.sh [KFUSE] [MODEL]
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
kfuse=${1:-$root/build/kfuse}
model=${2:-$root/models/llama-gutenberg-6.5m}
corpus=${CORPUS:-$root/../shared/data/corpus}
out=${OUT_DIR:-/tmp/kfuse_compress_table}
ct=${CALIB_TOKENS:-8192}
cb=${CALIB_BYTES:-12000}
eb=${EVAL_BYTES:-40000}
ctx=${CTX:-256}
mkdir -p "$out"
: >"$out/calib.txt"
for b in emma dracula frankenstein moby-dick pride-and-prejudice great-expectations; do
    head -c "$cb" "$corpus/$b.txt" >>"$out/calib.txt"
done
head -c "$eb" "$root/data/wikitext-2-raw/wiki.test.raw" >"$out/wiki.txt"
{ head -c "$((eb / 2))" "$corpus/picture-of-dorian-gray.txt"; head -c "$((eb / 2))" "$corpus/treasure-island.txt"; } >"$out/books.txt"

ev() { # model name -> "ppl_wiki kl_wiki p99_wiki ppl_books kl_books p99_books top1_books params"
    local m=$1 name=$2
    "$kfuse" eval "$m" --ref "$model" -f "$out/wiki.txt" --ctx "$ctx" --no-bench --json >"$out/$name.wiki.json"
    "$kfuse" eval "$m" --ref "$model" -f "$out/books.txt" --ctx "$ctx" --no-bench --json >"$out/$name.books.json"
    /usr/bin/python3 - "$out/$name.wiki.json" "$out/$name.books.json" <<'PY'
import json, sys
w, b = (json.load(open(p)) for p in sys.argv[1:3])
print(f"{w['model']['ppl']:.2f} | {w['kl_mean']:.4f} | {w['kl_p99']:.3f} | {b['model']['ppl']:.2f} | {b['kl_mean']:.4f} | {b['kl_p99']:.3f} | {b['top1_agreement']:.3f} | {w['model']['params']}")
PY
}

echo "| method | refit | FFN kept | wiki ppl | wiki KL | wiki KL p99 | books ppl | books KL | books KL p99 | books top-1 | params |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
[ "${ROWS_ORIGINAL:-1}" = 1 ] && echo "| original | - | 100% | $(ev "$model" original) |"
for keep in ${KEEPS:-0.75 0.5 0.25}; do
    for method in ${METHODS:-fold fold-corr prune-magnitude prune-wanda prune-act random}; do
        for refit in yes no; do
            name=$method-$keep-$refit
            args=(--method "$method")
            [ "$method" = fold-corr ] && args=(--method fold --group corr)
            [ "$refit" = no ] && args+=(--no-refit)
            "$kfuse" compress "$model" -f "$out/calib.txt" --tokens "$ct" --ctx "$ctx" "${args[@]}" \
                --ffn-keep "$keep" -o "$out/$name" >"$out/$name.compress.json" 2>/dev/null
            echo "| $method | $refit | $(/usr/bin/python3 -c "print(f'{float($keep):.0%}')") | $(ev "$out/$name" "$name") |"
        done
    done
done
for n in ${DROPS:-1 2 3}; do
    name=drop-$n
    "$kfuse" compress "$model" -f "$out/calib.txt" --tokens "$ct" --ctx "$ctx" --method drop-layers --drop "$n" \
        -o "$out/$name" >"$out/$name.compress.json" 2>/dev/null
    dropped=$(/usr/bin/python3 -c "import json; print(json.load(open('$out/$name.compress.json'))['dropped'])")
    echo "| drop $n blocks $dropped | - | 100% | $(ev "$out/$name" "$name") |"
done
