#!/usr/bin/env bash
# kfuse compress with refit from fewer calibration tokens than kept neurons
# (issue 15: the 7B-shape model keeps 5504 neurons per layer from 4096 tokens).
# The (k, k) second moment of the kept activations then has rank <= tokens; a
# ridge towards zero shrinks every direction the sample does not see (on the
# 7B shape: KL 1.5), so the refit centres its ridge on the merged down
# projection. Checked on held-out text: the centred refit from 256 tokens is
# closer to the original (KL) than no refit at all, the layer is marked
# refit_centred in the JSON, and a refit from enough tokens is not.
set -eu
: "${KFUSE:?}" "${KF_ROOT:?}"
[ -x /usr/bin/python3 ] || { echo "SKIP: /usr/bin/python3 missing (scripts/install-deps.sh --test)"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
head -c 60000 "$KF_ROOT/data/calib/calib.txt" > "$tmp/calib.txt"
model="$KF_ROOT/models/llama-gutenberg-1.4m"
few=(-f "$tmp/calib.txt" --method fold --widths 300,384,384,384 --tokens 256 --ctx 128)
"$KFUSE" compress "$model" "${few[@]}" --json -o "$tmp/few" > "$tmp/few.json" 2> "$tmp/err" ||
  { echo "FAIL: refit of 300 kept neurons from 256 tokens"; cat "$tmp/err"; exit 1; }
"$KFUSE" compress "$model" "${few[@]}" --no-refit -o "$tmp/norefit" > /dev/null 2>&1 ||
  { echo "FAIL: --no-refit with few tokens"; exit 1; }
"$KFUSE" compress "$model" -f "$tmp/calib.txt" --method fold --widths 300,384,384,384 --tokens 2048 --ctx 128 \
  --json -o "$tmp/enough" > "$tmp/enough.json" 2>/dev/null || { echo "FAIL: refit with 2048 tokens"; exit 1; }
"$KFUSE" eval "$tmp/few" "$tmp/norefit" --ref "$model" -f "$KF_ROOT/data/wikitext-2-raw/wiki.test.raw" \
  --ctx 256 --chunks 16 --no-bench --json > "$tmp/eval.json" 2>/dev/null || { echo "FAIL: eval"; exit 1; }
/usr/bin/python3 - "$tmp" <<'PY' || exit 1
import json, sys
t = sys.argv[1]
few = json.load(open(f"{t}/few.json"))["layers"]
enough = json.load(open(f"{t}/enough.json"))["layers"]
assert few[0].get("refit_centred") is True, few[0]
assert all("refit_centred" not in l for l in enough), enough
ev = json.load(open(f"{t}/eval.json"))
kl = [e["kl_mean"] for e in ev]
print("KL centred refit (256 tokens) %.6f, no refit %.6f" % tuple(kl))
# observed 0.0068 vs 0.0108; a ridge towards zero gave 0.0120
assert kl[0] < 0.85 * kl[1], "centred refit not closer to the original than no refit"
PY
echo PASS
