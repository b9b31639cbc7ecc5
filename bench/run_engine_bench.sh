#!/bin/sh
# Engine benchmark, one command: builds, creates the bench model if absent,
# runs bench_engine (STREAM, sgemm, kfuse) and bench/torch_bench.py with the
# same thread count, checks that both compute the same logits, and prints
# kfuse vs torch side by side, then the shipped small models.
#
#   bench/run_engine_bench.sh [-t THREADS] [-m MODEL_DIR] [-p 512] [-n 32] [-r 3] [--breakdown]
#                             [--no-build]
#
# Environment: KF_BUILD (build dir, default build-bench), KF_BENCH_OUT (where
# the JSON rows are kept, default /tmp/kfuse-bench/results).
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${KF_BUILD:-$ROOT/build-bench}
OUT=${KF_BENCH_OUT:-/tmp/kfuse-bench/results}
MODEL=/tmp/kfuse-bench/llama-2048x16
T=$(nproc)
P=512
N=32
R=3
BREAKDOWN=
BUILD_FIRST=1
while [ $# -gt 0 ]; do
    case $1 in
    -t) T=$2; shift 2 ;;
    -m) MODEL=$2; shift 2 ;;
    -p) P=$2; shift 2 ;;
    -n) N=$2; shift 2 ;;
    -r) R=$2; shift 2 ;;
    --breakdown) BREAKDOWN=--breakdown; shift ;;
    --no-build) BUILD_FIRST=; shift ;;
    *) echo "usage: $0 [-t THREADS] [-m MODEL_DIR] [-p N] [-n N] [-r N] [--breakdown] [--no-build]" >&2; exit 2 ;;
    esac
done
PY=/usr/bin/python3
mkdir -p "$OUT"

if [ -n "$BUILD_FIRST" ]; then
    cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build "$BUILD" -j"$(nproc)" --target bench_engine make_bench_model kfuse_cli >/dev/null
fi
"$BUILD/bench/make_bench_model" "$MODEL"

echo "== machine"
lscpu | grep -E "^(Model name|CPU\(s\)|Thread|Core)" | sed 's/  */ /g'
free -g | awk '/^Mem/ {print "memory: " $2 " GiB"}'
echo "load before: $(uptime | sed 's/.*load average: //')"

echo "== logits check (8 tokens, prefill and decode, kfuse vs torch)"
"$BUILD/bench/bench_engine" "$MODEL" -t "$T" --dump-logits "$OUT/kfuse_logits.bin"
$PY "$ROOT/bench/torch_bench.py" "$MODEL" -t "$T" --check "$OUT/kfuse_logits.bin" | tee "$OUT/check.jsonl"

echo "== kfuse: bench_engine -t $T -p $P -n $N -r $R --no-mmap $BREAKDOWN"
"$BUILD/bench/bench_engine" "$MODEL" -t "$T" -p "$P" -n "$N" -r "$R" --no-mmap $BREAKDOWN | tee "$OUT/kfuse.txt"
echo "== torch: torch_bench.py -t $T -p $P -n $N -r $R"
$PY "$ROOT/bench/torch_bench.py" "$MODEL" -t "$T" -p "$P" -n "$N" -r "$R" | tee "$OUT/torch.jsonl"

echo "== shipped models (cache-resident: per-token overheads show)"
: >"$OUT/small.jsonl"
for m in llama-gutenberg-6.5m llama-gutenberg-1.4m; do
    "$BUILD/kfuse" bench "$ROOT/models/$m" -t "$T" -p 256 -n 128 -r 5 --json |
        sed "s|\"model\": \"[^\"]*\"|\"model\": \"$m\", \"engine\": \"kfuse\"|" >>"$OUT/small.jsonl"
    $PY "$ROOT/bench/torch_bench.py" "$ROOT/models/$m" -t "$T" -p 256 -n 128 -r 5 |
        sed "s|^{|{\"model\": \"$m\", |" >>"$OUT/small.jsonl"
done
echo "load after: $(uptime | sed 's/.*load average: //')"

echo "== summary"
$PY - "$OUT" <<'EOF'
import json, sys, os
out = sys.argv[1]
def rows(name):
    with open(os.path.join(out, name)) as f:
        return [json.loads(l) for l in f if l.startswith("{")]
k, t = rows("kfuse.txt"), rows("torch.jsonl")
def get(rs, engine, prefix):
    return next(r for r in rs if r["engine"] == engine and r["test"].startswith(prefix))
print(f"{'test':<12} {'kfuse t/s':>10} {'torch t/s':>10} {'kfuse/torch':>12} {'target':>8}")
for prefix, target in (("pp", 1.0), ("tg", 1.2)):
    a, b = get(k, "kfuse", prefix), get(t, "torch", prefix)
    ratio = a["median"] / b["median"]
    print(f"{a['test']:<12} {a['median']:>10.2f} {b['median']:>10.2f} {ratio:>11.2f}x {target:>7.1f}x"
          f"  {'met' if ratio >= target else 'MISSED'}")
for name in ("decode_bw_fraction", "prefill_gemm_fraction"):
    r = get(k, "kfuse", name)
    print(f"{name:<22} {100 * r['value']:6.1f}%  target >= {100 * r['target']:.0f}%"
          f"  {'met' if r['value'] >= r['target'] else 'MISSED'}")
ks, ts = get(k, "info", "cpu_share"), get(t, "info", "cpu_share")
print(f"CPU share of the {ks['threads']} cores (1.0 = machine to itself): stream {ks['stream']:.2f}, "
      f"sgemm {ks['sgemm']:.2f}, kfuse {ks['kfuse']:.2f}, torch {ts['torch']:.2f}")
print(f"\n{'small model':<22} {'test':<7} {'kfuse t/s':>10} {'torch t/s':>10} {'kfuse/torch':>12}")
s = rows("small.jsonl")
for m in ("llama-gutenberg-6.5m", "llama-gutenberg-1.4m"):
    for test in ("pp256", "tg128"):
        a = next(r for r in s if r["model"] == m and r["engine"] == "kfuse" and r["test"] == test)
        b = next(r for r in s if r["model"] == m and r["engine"] == "torch" and r["test"] == test)
        print(f"{m:<22} {test:<7} {a['tokens_per_s_median']:>10.1f} {b['median']:>10.1f} "
              f"{a['tokens_per_s_median'] / b['median']:>11.1f}x")
EOF
