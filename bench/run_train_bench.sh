#!/bin/sh
# Training speed side by side: bench_train (kfuse's forward + backward +
# AdamW, src/train) and bench/torch_train_bench.py (the same step in PyTorch
# autograd) on the same model, batch and thread count, run in turn ROUNDS
# times so that both see the same machine load; checks that both start from
# the same loss, then prints each round's tokens/s and the ratio.
#
#   bench/run_train_bench.sh [-t THREADS] [-m MODEL_DIR] [-b 8] [-c 256] [-r 5] [--rounds 3] [--no-build]
#
# Environment: KF_BUILD (build dir, default build-bench), KF_BENCH_OUT (JSON
# rows, default /tmp/kfuse-bench/train).
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${KF_BUILD:-$ROOT/build-bench}
OUT=${KF_BENCH_OUT:-/tmp/kfuse-bench/train}
MODEL=$ROOT/models/llama-gutenberg-6.5m
T=1
B=8
C=256
R=5
ROUNDS=3
BUILD_FIRST=1
while [ $# -gt 0 ]; do
    case $1 in
    -t) T=$2; shift 2 ;;
    -m) MODEL=$2; shift 2 ;;
    -b) B=$2; shift 2 ;;
    -c) C=$2; shift 2 ;;
    -r) R=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --no-build) BUILD_FIRST=; shift ;;
    *) echo "usage: $0 [-t THREADS] [-m MODEL_DIR] [-b 8] [-c 256] [-r 5] [--rounds 3] [--no-build]" >&2; exit 2 ;;
    esac
done
PY=/usr/bin/python3
mkdir -p "$OUT"
if [ -n "$BUILD_FIRST" ]; then
    cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build "$BUILD" -j"$(nproc)" --target bench_train >/dev/null
fi
i=1
while [ "$i" -le "$ROUNDS" ]; do
    OMP_NUM_THREADS=$T "$BUILD/bench/bench_train" "$MODEL" -t "$T" -b "$B" -c "$C" -r "$R" >"$OUT/kfuse.$i.json"
    OMP_NUM_THREADS=$T "$PY" "$ROOT/bench/torch_train_bench.py" "$MODEL" -t "$T" -b "$B" -c "$C" -r "$R" >"$OUT/torch.$i.json"
    i=$((i + 1))
done
"$PY" - "$OUT" "$ROUNDS" "$B" "$C" <<'PY'
import json, sys
out, rounds, B, C = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
def rows(path):
    return {r["test"]: r for r in map(json.loads, open(path)) if r.get("engine") != "info"}
key = f"train_ce_b{B}x{C}"
ok = True
print("| round | kfuse CE step tokens/s (min-max) | torch tokens/s (min-max) | kfuse / torch | kfuse distill step tokens/s | backward share kfuse / torch |")
print("|---|---|---|---|---|---|")
for i in range(1, rounds + 1):
    k, t = rows(f"{out}/kfuse.{i}.json"), rows(f"{out}/torch.{i}.json")
    lk, lt = k["train_ce_first_loss"]["value"], t["train_ce_first_loss"]["value"]
    ok = ok and abs(lk - lt) <= 1e-4 * abs(lt)
    a, b, d = k[key], t[key], k[f"train_distill_b{B}x{C}"]
    print(f"| {i} | {a['median']:.0f} ({a['min']:.0f}-{a['max']:.0f}) | {b['median']:.0f} ({b['min']:.0f}-{b['max']:.0f}) | "
          f"{a['median'] / b['median']:.2f} | {d['median']:.0f} | "
          f"{k['train_ce_share_backward']['median']:.2f} / {t['train_ce_share_backward']['median']:.2f} |")
print(f"\nfirst-step loss kfuse {lk:.6f}, torch {lt:.6f}: {'same' if ok else 'DIFFERENT'} (tolerance 1e-4 relative)")
sys.exit(0 if ok else 1)
PY
