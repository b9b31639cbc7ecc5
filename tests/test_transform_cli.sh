#!/usr/bin/env bash
# kfuse compress: a JSON summary with the chosen per-layer widths and
# thresholds, an HF output (with tokenizer) that kfuse eval loads; a model of
# per-layer widths through perplexity (equal to eval's) and generation; a greedy
# --target-params allocation that meets its target; a --max-ppl-increase
# search whose result stays within the increase on its validation windows;
# and the refusals (widths
# larger than a layer, an impossible target, a wrong number of widths), each
# one line with no output written.
set -eu
: "${KFUSE:?}" "${KF_ROOT:?}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
m="$KF_ROOT/models/llama-gutenberg-1.4m"
# calibration: the repository's training-split books; evaluation: WikiText-2
# test, a disjoint text
head -c 40000 "$KF_ROOT/data/calib/calib.txt" >"$tmp/calib.txt"
head -c 8000 "$KF_ROOT/data/wikitext-2-raw/wiki.test.raw" >"$tmp/eval.txt"
common=(-f "$tmp/calib.txt" --tokens 4096 --ctx 64)

"$KFUSE" compress "$m" "${common[@]}" --method fold --ffn-keep 0.5 -o "$tmp/fold" --json >"$tmp/fold.json"
for f in config.json model.safetensors tokenizer.json; do [ -f "$tmp/fold/$f" ] || { echo "FAIL: $f missing"; exit 1; }; done
"$KFUSE" eval "$tmp/fold" --ref "$m" -f "$tmp/eval.txt" --ctx 64 --no-bench --json >"$tmp/eval.json"

"$KFUSE" compress "$m" "${common[@]}" --method prune-act --target-params 0.8 -o "$tmp/alloc" --json >"$tmp/alloc.json"
# per-layer widths: perplexity (the same value eval reports) and generation
"$KFUSE" compress "$m" "${common[@]}" --method fold --widths 300,200,150,250 -o "$tmp/perlayer" --json >"$tmp/perlayer.json"
"$KFUSE" perplexity "$tmp/perlayer" -f "$tmp/eval.txt" --ctx 64 --json 2>/dev/null >"$tmp/perlayer.ppl.json"
"$KFUSE" eval "$tmp/perlayer" --ref "$m" -f "$tmp/eval.txt" --ctx 64 --no-bench --json >"$tmp/perlayer.eval.json"
"$KFUSE" generate "$tmp/perlayer" -p "The old man" -n 16 --temp 0 2>/dev/null >"$tmp/perlayer.txt"
[ "$(wc -c <"$tmp/perlayer.txt")" -gt 20 ] || { echo "FAIL: no text generated: $(cat "$tmp/perlayer.txt")"; exit 1; }
"$KFUSE" compress "$m" -f "$tmp/calib.txt" --tokens 2048 --ctx 64 --method prune-wanda --max-ppl-increase 10 \
    -o "$tmp/ppl" --json 2>/dev/null >"$tmp/ppl.json"
/usr/bin/python3 - "$tmp" <<'PY'
import json, sys
d = sys.argv[1]
p = json.load(open(d + "/ppl.json"))
assert p["validation_ppl_after"] <= 1.10 * p["validation_ppl_before"], p
assert p["params_after"] < p["params_before"] and p["params_after"] <= p["kept_fraction"] * p["params_before"], p
f = json.load(open(d + "/fold.json"))
assert [l["n_ff_after"] for l in f["layers"]] == [192] * 4, f["layers"]
assert all(0 <= l["threshold"] <= 1 and 0 <= l["rel_err"] < 1 for l in f["layers"])
assert f["params_after"] == f["params_before"] - 4 * 192 * 3 * 128
e = json.load(open(d + "/eval.json"))
assert e["model"]["params"] == f["params_after"] and e["kl_mean"] > 0 and 0 < e["top1_agreement"] < 1
w = json.load(open(d + "/perlayer.json"))
assert [l["n_ff_after"] for l in w["layers"]] == [300, 200, 150, 250], w["layers"]
pp, pe = json.load(open(d + "/perlayer.ppl.json")), json.load(open(d + "/perlayer.eval.json"))
assert 1 < pp["ppl"] < 1e4 and abs(pp["ppl"] - pe["model"]["ppl"]) <= 1e-9 * pp["ppl"], (pp["ppl"], pe["model"]["ppl"])
a = json.load(open(d + "/alloc.json"))
assert a["params_after"] <= 0.8 * a["params_before"], a
assert a["params_after"] > 0.75 * a["params_before"], "allocation removed far more than asked"
print("fold widths", [l["n_ff_after"] for l in f["layers"]], "KL", round(e["kl_mean"], 4),
      "| allocated widths", [l["n_ff_after"] for l in a["layers"]])
PY

refuse() { # expected-message, args...
    local want=$1; shift
    if "$KFUSE" compress "$m" "${common[@]}" "$@" -o "$tmp/bad" 2>"$tmp/err" >/dev/null; then
        echo "FAIL: accepted: $*"; exit 1
    fi
    grep -q "$want" "$tmp/err" || { echo "FAIL: '$want' not in: $(cat "$tmp/err")"; exit 1; }
    [ "$(wc -l <"$tmp/err")" -eq 1 ] || { echo "FAIL: not one line: $(cat "$tmp/err")"; exit 1; }
    [ ! -e "$tmp/bad" ] || { echo "FAIL: output written for: $*"; exit 1; }
}
refuse "larger than the layer" --method fold --widths 384,385,100,100
refuse "cannot be met" --method prune-magnitude --target-params 0.05
refuse "lists 2 widths" --method random --widths 10,10
refuse "cannot drop" --method drop-layers --drop 4
echo "9 passed, 0 failed"
