#!/usr/bin/env bash
# `kfuse compress --method fold --thresholds analysis.json` on the shipped
# 1.4m model with the repository's calibration text: each layer is cut at
# exactly the t that `kfuse analyze` wrote for it; an analysis.json with a t
# out of [0, 1], without thresholds, or of a model with another layer count
# is refused with one line naming the file.
set -eu
: "${KFUSE:?}" "${KF_ROOT:?}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
calib="$KF_ROOT/data/calib/calib.txt"
m="$KF_ROOT/models/llama-gutenberg-1.4m"
"$KFUSE" analyze "$m" -f "$calib" --tokens 2048 --ctx 128 --sample 128 --context-tokens 256 -o "$tmp/a" > /dev/null 2>&1
fold() { "$KFUSE" compress "$1" -f "$calib" --method fold --thresholds "$2" --tokens 2048 --ctx 128 -o "$tmp/out" --json; }
fold "$m" "$tmp/a/analysis.json" > "$tmp/c.json" 2> /dev/null
/usr/bin/python3 - "$tmp/a/analysis.json" "$tmp/c.json" <<'PY'
import json, sys
a, c = (json.load(open(p)) for p in sys.argv[1:3])
t = [e["t"] for e in a["thresholds"]["layers"]]
cut = [e["threshold"] for e in c["layers"]]
assert len(t) == 4 and all(x is not None for x in t), t
assert cut == t, (cut, t)
print("cuts = analysis t:", t)
PY

# refused(NAME EDIT WANT [MODEL]): the analysis edited by the Python EDIT
# (on dict a) makes compress fail with one line holding the file and WANT.
refused() {
  /usr/bin/python3 -c "import json,sys; a=json.load(open(sys.argv[1])); $2; json.dump(a, open(sys.argv[2], 'w'))" \
    "$tmp/a/analysis.json" "$tmp/$1.json"
  if fold "${4:-$m}" "$tmp/$1.json" > /dev/null 2> "$tmp/err"; then echo "FAIL: $1 accepted"; exit 1; fi
  [ "$(wc -l < "$tmp/err")" -eq 1 ] || { echo "FAIL: $1: not one line:"; cat "$tmp/err"; exit 1; }
  grep -qF "$tmp/$1.json: $3" "$tmp/err" || { echo "FAIL: $1: want '$3', got:"; cat "$tmp/err"; exit 1; }
  echo "$1 refused: $(cat "$tmp/err")"
}
refused t_out 'a["thresholds"]["layers"][1]["t"] = 1.5' 'thresholds.layers[1].t: 1.5 is outside [0, 1]'
refused no_thresholds 'del a["thresholds"]' 'thresholds: missing'
refused t_null 'a["thresholds"]["layers"][2]["t"] = None' 'layer 2 has no threshold t'
refused other_model 'pass' 'thresholds of 4 layers, the model has 6' "$KF_ROOT/models/llama-gutenberg-6.5m"
echo "1 passed, 0 failed"
