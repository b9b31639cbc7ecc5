#!/usr/bin/env bash
# kfuse on a model of Llama-2-7B's shape (random init, BF16, sharded
# safetensors, Llama 2's 32000-piece tokenizer): each command of the scale
# issue run under /usr/bin/time -v, one row per command with wall time, CPU
# time and peak RSS, plus the command's own JSON where it has one.
#
#   bench/scale_7b.sh [KFUSE_BUILD_DIR] [STEPS...]
#   STEPS (default all, in this order): make info perplexity bench engine gguf eval analyze compress evalc
#
# make        make_bench_model --shape llama2-7b --dtype bf16 (13.5 GB; kept if present)
# info        kfuse info
# perplexity  kfuse perplexity --ctx 256 --chunks 8 on WikiText-2 test
# bench       kfuse bench -p 64 -n 16 -r 3
# engine      bench_engine -p 32 -n 8 -r 2: decode bytes/s against the same run's STREAM triad
# gguf        kfuse convert to GGUF BF16 and Q8_0 (the files llama.cpp would read)
# eval        kfuse eval Q8_0 GGUF --ref the BF16 folder --chunks 8 --no-bench
# analyze     kfuse analyze --tokens 4096 --max-memory $MAXMEM (default 5G) on the calibration text
# compress    kfuse compress --method fold --ffn-keep 0.5 --tokens 4096 --max-memory $CMAXMEM (default 7G), written in BF16
#             (fewer tokens than the 5504 kept neurons: the refit's ridge is centred on the merge)
# evalc       kfuse eval the compressed model --ref the BF16 folder --chunks 8 --no-bench
#
# Environment: OUT (rows and logs, default /tmp/kfuse-bench/scale), MODEL
# (default /tmp/kfuse-bench/llama2-7b-bf16), THREADS (default all cores).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
shift || true
steps=${*:-make info perplexity bench engine gguf eval analyze compress evalc}
out=${OUT:-/tmp/kfuse-bench/scale}
model=${MODEL:-/tmp/kfuse-bench/llama2-7b-bf16}
threads=${THREADS:-$(nproc)}
maxmem=${MAXMEM:-5G}
cmaxmem=${CMAXMEM:-7G} # compress: layer 0 of the 7B shape needs 6.04 GiB
calib=$root/data/calib/calib.txt
kfuse=$build/kfuse
tok=$root/../shared/models/llama2c-tokenizer-32k/tokenizer.bin
wiki=$root/data/wikitext-2-raw/wiki.test.raw
mkdir -p "$out"
export OMP_NUM_THREADS=$threads

# run NAME CMD...: stdout to $out/NAME.out, time -v to $out/NAME.time, one row to $out/rows.jsonl
# (a failing command, e.g. killed for memory, gets its row with rc and the next step runs)
run() {
    local name=$1
    shift
    echo "scale_7b: $name: $*" >&2
    local rc=0
    /usr/bin/time -v -o "$out/$name.time" "$@" >"$out/$name.out" 2>"$out/$name.err" || rc=$?
    /usr/bin/python3 - "$out" "$name" "$threads" "$*" "$rc" <<'PY'
import json, re, sys
out, name, threads, cmd, rc = sys.argv[1:]
t = open(f"{out}/{name}.time").read()
def field(key):
    return re.search(re.escape(key) + r": (.*)", t).group(1).strip()
wall = field("Elapsed (wall clock) time (h:mm:ss or m:ss)").split(":")
wall_s = sum(float(x) * 60 ** i for i, x in enumerate(reversed(wall)))
row = {"step": name, "rc": int(rc), "threads": int(threads), "wall_s": round(wall_s, 1),
       "cpu_s": round(float(field("User time (seconds)")) + float(field("System time (seconds)")), 1),
       "peak_rss_gb": round(int(field("Maximum resident set size (kbytes)")) / 1e6, 2), "command": cmd}
print(json.dumps(row))
open(f"{out}/rows.jsonl", "a").write(json.dumps(row) + "\n")
PY
}

for step in $steps; do
    case $step in
    make)
        run make "$build/bench/make_bench_model" "$model" --shape llama2-7b --dtype bf16
        cp "$tok" "$model/tokenizer.bin" ;;
    info) run info "$kfuse" info "$model" ;;
    perplexity) run perplexity "$kfuse" perplexity "$model" -f "$wiki" --ctx 256 --chunks 8 --json ;;
    bench) run bench "$kfuse" bench "$model" -p 64 -n 16 -r 3 -t "$threads" --json ;;
    engine) run engine "$build/bench/bench_engine" "$model" -t "$threads" -p 32 -n 8 -r 2 ;;
    gguf)
        run gguf-bf16 "$kfuse" convert "$model" -o "$out/llama2-7b-bf16.gguf"
        run gguf-q8_0 "$kfuse" convert "$model" -o "$out/llama2-7b-q8_0.gguf" --dtype q8_0 ;;
    eval) run eval "$kfuse" eval "$out/llama2-7b-q8_0.gguf" --ref "$model" -f "$wiki" --ctx 256 --chunks 8 --no-bench --json ;;
    analyze) run analyze "$kfuse" analyze "$model" -f "$calib" --tokens 4096 --max-memory "$maxmem" -o "$out/analyze" ;;
    compress)
        run compress "$kfuse" compress "$model" -f "$calib" --method fold --ffn-keep 0.5 --tokens 4096 --max-memory "$cmaxmem" \
            --dtype bf16 --json -o "$out/llama2-7b-bf16-keep50" ;;
    evalc)
        run evalc "$kfuse" eval "$out/llama2-7b-bf16-keep50" --ref "$model" -f "$wiki" --ctx 256 --chunks 8 --no-bench --json ;;
    *) echo "scale_7b: unknown step $step" >&2; exit 2 ;;
    esac
done
