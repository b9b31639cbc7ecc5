#!/usr/bin/env bash
# Feature extraction of `kfuse probe` (one forward pass per split, rows
# written to the .npy feature file) against `kfuse perplexity`, tokens/s on
# the same model and threads, side by side (issue 13: extraction >= 70%).
#   bench/probe_extract_bench.sh [-t THREADS] [-r REPEATS] [-n WORDS] [MODEL ...]
# defaults: -t 2, -r 5, -n 20000 UD English EWT training words, the models
# llama-gutenberg-6.5m and gpt2-gutenberg-5.9m of ../shared.
# Per model: one warm-up of each command, then REPEATS rounds, each running
# perplexity, extraction (f32) and extraction (--f16) in turn, so that a change
# in the machine's load hits all three alike. Extraction tokens/s is the
# training split's (real tokens, BOS included, padding not counted; timed
# inside kfuse: forward passes, row copies, f16 conversion and writes; dev
# and test are the first 500 training words, only to satisfy the command);
# perplexity's is kfuse's own (windows x ctx / seconds of the forward passes
# and the scoring), on as many tokens of treasure-island.txt (ctx 512).
# Output: one JSON row per run, then one summary row per model and command
# (median, min, max) and one ratio row per model, on stdout and in
# $KF_BENCH_OUT/probe_extract.jsonl (default /tmp/kfuse-bench/results).
set -euo pipefail
cd "$(dirname "$0")/.."
threads=2 repeats=5 words=20000
while getopts "t:r:n:" o; do
    case $o in
    t) threads=$OPTARG ;;
    r) repeats=$OPTARG ;;
    n) words=$OPTARG ;;
    *) echo "usage: bench/probe_extract_bench.sh [-t THREADS] [-r REPEATS] [-n WORDS] [MODEL ...]" >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
shared=$(cd .. && pwd)/shared
[ $# -gt 0 ] || set -- "$shared/models/llama-gutenberg-6.5m" "$shared/models/gpt2-gutenberg-5.9m"
ud=$shared/data/ud-english-ewt
text=$shared/data/corpus/treasure-island.txt
kfuse=${KFUSE:-build/kfuse}
[ -x "$kfuse" ] || { echo "probe_extract_bench: $kfuse not built (cmake --build build)" >&2; exit 1; }
out_dir=${KF_BENCH_OUT:-/tmp/kfuse-bench/results}
mkdir -p "$out_dir"
rows=$out_dir/probe_extract.jsonl
: > "$rows"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export OMP_NUM_THREADS=$threads OMP_WAIT_POLICY=PASSIVE
row() { echo "$1" | tee -a "$rows"; }
for model in "$@"; do
    name=$(basename "$model")
    extract() { # f32|f16 -> tokens/s of the training split
        local flag=""
        [ "$1" = f16 ] && flag=--f16
        "$kfuse" probe "$model" --task conllu:UPOS --train "$ud/en_ewt-ud-train.conllu" --dev "$ud/en_ewt-ud-train.conllu" \
            --test "$ud/en_ewt-ud-train.conllu" --max-train "$words" --max-eval 500 --blocks-only --no-control \
            --max-iter 1 $flag -o "$tmp/p" --json > "$tmp/probe.json" 2> "$tmp/err" || { cat "$tmp/err" >&2; exit 1; }
        /usr/bin/python3 -c 'import json,sys; s=json.load(open(sys.argv[1]))["task"]["splits"]["train"]; print(s["tokens"], s["extract_tokens_per_s"])' "$tmp/probe.json"
    }
    warm=$(extract f32) # warm-up; its token count sizes the perplexity run
    chunks=$(( (${warm% *} + 511) / 512 ))
    ppl() {
        "$kfuse" perplexity "$model" -f "$text" --ctx 512 --chunks "$chunks" --json > "$tmp/ppl.json" 2> "$tmp/err" ||
            { cat "$tmp/err" >&2; exit 1; }
        /usr/bin/python3 -c 'import json,sys; o=json.load(open(sys.argv[1])); print(o["n_chunks"] * o["ctx"], o["tokens_per_s"])' "$tmp/ppl.json"
    }
    ppl > /dev/null # warm-up
    for r in $(seq 1 "$repeats"); do
        for what in perplexity extract_f32 extract_f16; do
            load=$(cut -d' ' -f1 /proc/loadavg)
            if [ $what = perplexity ]; then res=$(ppl); else res=$(extract "${what#extract_}"); fi
            n=${res% *} tps=${res#* }
            row "{\"bench\": \"probe_extract\", \"model\": \"$name\", \"threads\": $threads, \"what\": \"$what\", \"repeat\": $r, \"tokens\": $n, \"tokens_per_s\": $tps, \"load1\": $load}"
        done
    done
done
/usr/bin/python3 - "$rows" <<'PY'

import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
out = []
for model in dict.fromkeys(r["model"] for r in runs):
    med = {}
    for what in ("perplexity", "extract_f32", "extract_f16"):
        v = sorted(r["tokens_per_s"] for r in runs if r["model"] == model and r["what"] == what)
        med[what] = statistics.median(v)
        out.append({"bench": "probe_extract_summary", "model": model, "what": what, "runs": len(v),
                    "median_tokens_per_s": round(med[what], 1), "min": round(v[0], 1), "max": round(v[-1], 1)})
    for what in ("extract_f32", "extract_f16"):
        # per-round ratios too: a round's three runs saw nearly the same load
        rr = sorted(a["tokens_per_s"] / b["tokens_per_s"] for a in runs for b in runs
                    if a["model"] == b["model"] == model and a["what"] == what and b["what"] == "perplexity"
                    and a["repeat"] == b["repeat"])
        out.append({"bench": "probe_extract_ratio", "model": model, "what": f"{what} / perplexity",
                    "ratio_of_medians": round(med[what] / med["perplexity"], 3),
                    "per_round_median": round(statistics.median(rr), 3), "per_round_min": round(rr[0], 3),
                    "per_round_max": round(rr[-1], 3), "target": 0.7})
with open(sys.argv[1], "a") as f:
    for o in out:
        print(json.dumps(o))
        f.write(json.dumps(o) + "\n")
PY
