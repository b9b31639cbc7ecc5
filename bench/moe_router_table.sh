#!/usr/bin/env bash
# Routers trained end to end (moefy --recover, --recover-train router) against
# moefy's MLP router at 25% of FFN neurons per token: llama-gutenberg-6.5m,
# 32 experts, k-means split, top-8, the calibration and evaluation texts of
# bench/bench_moe_quality.sh (first 100 kB of WikiText-2 test; first 50 kB of
# each held-out book). Recovery text: three other training books.
# Environment: OUT [/tmp/kfuse_moe_router], TOKENS [262144], LR [1e-3], THREADS [1],
# MODES [router]: --recover-train modes, one moefy --recover each (e.g. "router all").
# usage: bench/moe_router_table.sh [KFUSE]
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
kfuse=${1:-$root/build/kfuse}
corpus=$root/../shared/data/corpus
out=${OUT:-/tmp/kfuse_moe_router}
model=$root/models/llama-gutenberg-6.5m
mkdir -p "$out"
export OMP_NUM_THREADS=${THREADS:-1}
cat "$corpus/adventures-of-sherlock-holmes.txt" "$corpus/alice-in-wonderland.txt" "$corpus/frankenstein.txt" \
    "$corpus/dracula.txt" | head -c 1500000 >"$out/calib.txt"
cat "$corpus/war-and-peace.txt" "$corpus/anna-karenina.txt" "$corpus/middlemarch.txt" >"$out/train.txt"
head -c 100000 "$root/data/wikitext-2-raw/wiki.test.raw" >"$out/wiki.txt"
{ head -c 50000 "$corpus/picture-of-dorian-gray.txt"; head -c 50000 "$corpus/treasure-island.txt"; } >"$out/books.txt"
moe="--experts 32 --split kmeans --router mlp --top-k 8"
# shellcheck disable=SC2086
[ -s "$out/mlp.json" ] || /usr/bin/time -f '%U %S %e %M' -o "$out/mlp.time" \
    "$kfuse" moefy "$model" -f "$out/calib.txt" $moe --json -o "$out/mlp" >"$out/mlp.json"
names=mlp
for mode in ${MODES:-router}; do
    name=e2e; [ "$mode" = router ] || name=e2e-$mode
    names="$names $name"
    # shellcheck disable=SC2086
    [ -s "$out/$name.json" ] || /usr/bin/time -f '%U %S %e %M' -o "$out/$name.time" \
        "$kfuse" moefy "$model" -f "$out/calib.txt" $moe --recover "$out/train.txt" --recover-train "$mode" \
        --recover-tokens "${TOKENS:-262144}" --recover-lr "${LR:-1e-3}" --json -o "$out/$name" >"$out/$name.json"
done
for t in wiki books; do
    # shellcheck disable=SC2086
    "$kfuse" eval $(for n in $names; do echo "$out/$n"; done) --ref "$model" -f "$out/$t.txt" --ctx 256 --no-bench \
        --json >"$out/eval-$t.json"
done
/usr/bin/python3 - "$out" $names <<'PY'
import json, sys
out, names = sys.argv[1], sys.argv[2:]
ev = {t: json.load(open(f"{out}/eval-{t}.json")) for t in ("wiki", "books")}
print("| router | training | CPU-min (moefy total) | FFN share | wiki ppl | wiki KL | books ppl | books KL | books top-1 |")
print("|---|---|---|---|---|---|---|---|---|")
for i, name in enumerate(names):
    j = json.load(open(f"{out}/{name}.json"))
    u, s = map(float, open(f"{out}/{name}.time").read().split()[:2])
    r = j.get("recover")
    how = (f"{r['train']}: end to end, {r['tokens']:,} tokens, lr {r['lr']:g}" if r
           else "MLP regression on expert norms (moefy)")
    w, b = ev["wiki"][i], ev["books"][i]
    print(f"| {'mlp + e2e' if r else 'mlp'} | {how} | {(u + s) / 60:.1f} | {w['ffn_share']:.3f} | {w['model']['ppl']:.2f} | "
          f"{w['kl_mean']:.4f} | {b['model']['ppl']:.2f} | {b['kl_mean']:.4f} | {b['top1_agreement']:.3f} |")
PY
