#!/usr/bin/env bash
# Throughput of `kfuse analyze`'s recording pass against plain
# `kfuse perplexity`, same model, same text, same context length and thread
# count, measured side by side: one warm-up run of each, then R repeats
# interleaved A B / B A (so slow drift of the machine's load falls on both).
#
# usage: bench/analyze_vs_perplexity.sh [-m MODEL] [-t THREADS] [-r REPEATS]
#                                       [-c CTX] [-b BYTES_PER_BOOK]
#   defaults: models/llama-gutenberg-6.5m, 2 threads, 5 repeats, ctx 256,
#   7000 bytes from each of the 8 default books of scripts/make_calib.sh
#   (about 17k tokens, 67 windows of 256).
# env: KFUSE (default build/kfuse), KF_BENCH_OUT (default /tmp/kfuse-bench-analyze)
#
# Both programs read the whole calibration file and run every full window of
# CTX tokens through the model: perplexity with logits (batch of windows as
# kf_eval_perplexity chooses), analyze with its hooks recording the
# statistics (batch 4). Compared: perplexity's tokens_per_s (--json) and
# analyze's calibration.tokens_per_s (analysis.json: tokens recorded / wall
# time of the recording pass, statistics included). analyze's end-to-end
# rate (tokens / whole process wall time, clustering and report included) is
# printed as well.
#
# Output: one JSON line per run on stdout, then a summary JSON line
# ({"summary": ...}) with medians, min/max, the ratio of the medians and the
# median of the per-repeat ratios (the two runs of a repeat are adjacent in
# time, so their ratio is the least disturbed by load). Each row carries the
# 1-minute load average before the run and the CPU share the process got
# ((user+sys) / (wall x threads)).
set -euo pipefail
cd "$(dirname "$0")/.."
model=models/llama-gutenberg-6.5m threads=2 reps=5 ctx=256 bytes=7000
while getopts m:t:r:c:b: o; do
    case $o in
    m) model=$OPTARG ;; t) threads=$OPTARG ;; r) reps=$OPTARG ;; c) ctx=$OPTARG ;; b) bytes=$OPTARG ;;
    *) sed -n '6,9p' "$0" >&2; exit 2 ;;
    esac
done
kfuse=${KFUSE:-build/kfuse}
out=${KF_BENCH_OUT:-/tmp/kfuse-bench-analyze}
[ -x "$kfuse" ] || { echo "$0: $kfuse not built (set KFUSE=)" >&2; exit 2; }
mkdir -p "$out"
calib=$out/calib.txt
scripts/make_calib.sh "$calib" "$bytes" 2>/dev/null
export OMP_NUM_THREADS=$threads OMP_WAIT_POLICY=passive

load1() { cut -d' ' -f1 /proc/loadavg; }

# run_one KIND REP: one run, one JSON line
run_one() {
    local kind=$1 rep=$2 l0 tf=$out/time.txt
    l0=$(load1)
    if [ "$kind" = perplexity ]; then
        /usr/bin/time -f '%e %U %S' -o "$tf" "$kfuse" perplexity "$model" -f "$calib" --ctx "$ctx" --json \
            > "$out/ppl.json" 2>/dev/null
    else
        rm -rf "$out/an"
        /usr/bin/time -f '%e %U %S' -o "$tf" "$kfuse" analyze "$model" -f "$calib" --tokens 1000000 --ctx "$ctx" \
            -o "$out/an" > /dev/null 2>&1
    fi
    /usr/bin/python3 - "$kind" "$rep" "$l0" "$(load1)" "$threads" "$tf" "$out" "$model" "$ctx" <<'EOF'
import json, sys
kind, rep, l0, l1, threads, tf, out, model, ctx = sys.argv[1:]
wall, user, sys_ = map(float, open(tf).read().split()[-3:])
row = {"bench": "analyze_vs_perplexity", "kind": kind, "rep": int(rep), "model": model, "ctx": int(ctx),
       "threads": int(threads), "load1_before": float(l0), "load1_after": float(l1), "wall_s": wall,
       "cpu_share": round((user + sys_) / (wall * int(threads)), 3)}
if kind == "perplexity":
    j = json.load(open(out + "/ppl.json"))
    row.update(n_tokens=j["n_chunks"] * j["ctx"], seconds=j["seconds"], tokens_per_s=j["tokens_per_s"])
else:
    j = json.load(open(out + "/an/analysis.json"))
    c = j["calibration"]
    row.update(n_tokens=c["n_tokens"], seconds=c["record_seconds"], tokens_per_s=c["tokens_per_s"],
               end_to_end_tokens_per_s=c["n_tokens"] / wall, analysis_seconds=j["timing"]["analysis_seconds"],
               resid_stride=j["options"]["resid_stride"])
print(json.dumps(row), flush=True)
EOF
}

rows=$out/rows.jsonl
: > "$rows"
echo "# $(uname -srm), $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), git $(git rev-parse --short HEAD)" >&2
run_one perplexity 0 | tee -a "$rows"  # warm-up (rep 0, not in the summary)
run_one analyze 0 | tee -a "$rows"
for ((i = 1; i <= reps; i++)); do
    if ((i % 2)); then order="perplexity analyze"; else order="analyze perplexity"; fi
    for k in $order; do run_one "$k" "$i" | tee -a "$rows"; done
done
/usr/bin/python3 - "$rows" <<'EOF'
import json, statistics as st, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
rows = [r for r in rows if r["rep"] > 0]
def summ(v, d=1): return {"median": round(st.median(v), d), "min": round(min(v), d), "max": round(max(v), d)}
p = {r["rep"]: r for r in rows if r["kind"] == "perplexity"}
a = {r["rep"]: r for r in rows if r["kind"] == "analyze"}
pt = [r["tokens_per_s"] for r in p.values()]
at = [r["tokens_per_s"] for r in a.values()]
pair = [a[i]["tokens_per_s"] / p[i]["tokens_per_s"] for i in sorted(p) if i in a]
s = {"repeats": len(pair), "perplexity_tokens_per_s": summ(pt), "analyze_record_tokens_per_s": summ(at),
     "analyze_end_to_end_tokens_per_s": summ([r["end_to_end_tokens_per_s"] for r in a.values()]),
     "ratio_of_medians": round(st.median(at) / st.median(pt), 3),
     "paired_ratio": {"median": round(st.median(pair), 3), "min": round(min(pair), 3), "max": round(max(pair), 3)},
     "load1": summ([r["load1_before"] for r in rows]),
     "cpu_share": {"perplexity": summ([r["cpu_share"] for r in p.values()], 3),
                   "analyze": summ([r["cpu_share"] for r in a.values()], 3)},
     "target": ">= 0.70"}
print(json.dumps({"summary": s}))
EOF
