#!/usr/bin/env bash
# Regenerates the compression table of docs/RESULTS.md: every method with and
# without the least-squares refit at FFN widths 75/50/25%, fold with widths
# allocated per layer at the same parameter counts, and dropping 1/2/3 blocks
# (plain and --merge), on llama-gutenberg-6.5m. Calibration: the start
# of six training books of ../shared/data/corpus (never the held-out
# picture-of-dorian-gray.txt or treasure-island.txt); evaluation: WikiText-2
# test and the two held-out books, whole. Prints a markdown table; every
# model and JSON is kept in $OUT_DIR.
#
# Two phases, both resumable: (1) build every compressed model (a model with
# its summary in $OUT_DIR is reused); (2) for each text, one `kfuse eval`
# scores all models that have no result for it yet against the original
# (computed once per window) and the results are kept one file per model
# ($OUT_DIR/eval/TEXT/NAME.json); the two texts are scored concurrently, each
# on half of the cores. A row added later is thus scored alone. An OUT_DIR
# made with other sizes is refused.
# Sizes are environment variables (defaults in brackets):
#   CALIB_TOKENS [32768], CALIB_BYTES per book [16000], CTX [256],
#   EVAL_BYTES per text [whole texts; books: half each]
# and what to run: METHODS [fold fold-energy fold-corr prune-magnitude
# prune-wanda prune-act random], KEEPS [0.75 0.5 0.25], DROPS [1 2 3].
# "fold" is the default grouping (--group ls), "fold-energy" --group
# corr-energy, "fold-corr" --group corr.
# usage: bench/compress_table.sh [KFUSE] [MODEL]
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
kfuse=${1:-$root/build/kfuse}
model=${2:-$root/models/llama-gutenberg-6.5m}
corpus=${CORPUS:-$root/../shared/data/corpus}
out=${OUT_DIR:-/tmp/kfuse_compress_table}
ct=${CALIB_TOKENS:-32768}
cb=${CALIB_BYTES:-16000}
eb=${EVAL_BYTES:-}
ctx=${CTX:-256}
mkdir -p "$out/eval/wiki" "$out/eval/books"
# models and results are reused, so one OUT_DIR holds one set of sizes
settings="CALIB_TOKENS=$ct CALIB_BYTES=$cb CTX=$ctx EVAL_BYTES=${eb:-whole}"
if [ -s "$out/settings" ] && [ "$(cat "$out/settings")" != "$settings" ]; then
    echo "compress_table: $out holds a run with $(cat "$out/settings"), not $settings; use another OUT_DIR" >&2
    exit 1
fi
echo "$settings" >"$out/settings"
: >"$out/calib.txt"
for b in emma dracula frankenstein moby-dick pride-and-prejudice great-expectations; do
    head -c "$cb" "$corpus/$b.txt" >>"$out/calib.txt"
done
part() { if [ -n "$eb" ]; then head -c "$2" "$1"; else cat "$1"; fi; }
part "$root/data/wikitext-2-raw/wiki.test.raw" "${eb:-0}" >"$out/wiki.txt"
{ part "$corpus/picture-of-dorian-gray.txt" "$((${eb:-0} / 2))"; part "$corpus/treasure-island.txt" "$((${eb:-0} / 2))"; } >"$out/books.txt"

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
    for method in ${METHODS:-fold fold-energy fold-corr prune-magnitude prune-wanda prune-act random}; do
        for refit in yes no; do
            name=$method-$keep-$refit
            case $method in
            fold-energy) args=(--method fold --group corr-energy) ;;
            fold-corr) args=(--method fold --group corr) ;;
            *) args=(--method "$method") ;;
            esac
            [ "$refit" = no ] && args+=(--no-refit)
            build "$name" "${args[@]}" --ffn-keep "$keep"
            echo "$name|$method|$refit|$(/usr/bin/python3 -c "print(f'{float($keep):.0%}')")" >>"$out/rows.txt"
        done
    done
done
# fold with per-layer widths allocated by --target-params at the parameter
# count of each uniform fold row (needs those rows)
for keep in ${KEEPS:-0.75 0.5 0.25}; do
    [ -s "$out/fold-$keep-yes.compress.json" ] || continue
    frac=$(/usr/bin/python3 -c "import json; d=json.load(open('$out/fold-$keep-yes.compress.json')); print(f\"{d['params_after']/d['params_before'] + 1e-9:.9f}\")")
    build "fold-alloc-$keep" --method fold --target-params "$frac"
    widths=$(/usr/bin/python3 -c "import json; print(','.join(str(l['n_ff_after']) for l in json.load(open('$out/fold-alloc-$keep.compress.json'))['layers']))")
    echo "fold-alloc-$keep|fold, --target-params $frac (widths $widths)|yes|$(/usr/bin/python3 -c "print(f'{float($keep):.0%}')") avg" >>"$out/rows.txt"
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

# Phase 2: per text, one eval of the models not scored yet (the original is
# scored as a model too: its row is the reference's own perplexity).
score() { # text
    local t=$1 names=() paths=()
    for name in original $(cut -d'|' -f1 "$out/rows.txt"); do
        [ -s "$out/eval/$t/$name.json" ] && continue
        names+=("$name")
        if [ "$name" = original ]; then paths+=("$model"); else paths+=("$out/$name"); fi
    done
    [ ${#names[@]} -gt 0 ] || return 0
    OMP_NUM_THREADS=$threads "$kfuse" eval "${paths[@]}" --ref "$model" -f "$out/$t.txt" --ctx "$ctx" \
        --no-bench --json >"$out/eval/$t.pass.json"
    /usr/bin/python3 - "$out/eval/$t" "$out/eval/$t.pass.json" "${names[@]}" <<'PY'
import json, sys
d, res, names = sys.argv[1], json.load(open(sys.argv[2])), sys.argv[3:]
res = res if isinstance(res, list) else [res]
assert len(res) == len(names), (len(res), len(names))
for name, r in zip(names, res):
    json.dump(r, open(f"{d}/{name}.json", "w"), indent=1)
PY
    rm "$out/eval/$t.pass.json"
}
threads=$(($(nproc) / 2))
[ "$threads" -ge 1 ] || threads=1
score wiki &
p1=$!
score books &
p2=$!
wait "$p1"
wait "$p2"

/usr/bin/python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
rows = [("original", "original", "-", "100%")] + [tuple(l.rstrip("\n").split("|")) for l in open(f"{out}/rows.txt")]
res = {t: {r[0]: json.load(open(f"{out}/eval/{t}/{r[0]}.json")) for r in rows} for t in ("wiki", "books")}
w0, b0 = res["wiki"]["original"], res["books"]["original"]
print(f"wiki: {w0['n_scored']} scored tokens, books: {b0['n_scored']} scored tokens (ctx {w0['ctx']})\n")
print("| method | refit | FFN kept | wiki ppl | wiki KL | wiki KL p99 | books ppl | books KL | books KL p99 | books top-1 | params |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for name, method, refit, kept in rows:
    x, y = res["wiki"][name], res["books"][name]
    print(f"| {method} | {refit} | {kept} | {x['model']['ppl']:.2f} | {x['kl_mean']:.4f} | {x['kl_p99']:.3f} | "
          f"{y['model']['ppl']:.2f} | {y['kl_mean']:.4f} | {y['kl_p99']:.3f} | {y['top1_agreement']:.3f} | {x['model']['params']} |")
PY
