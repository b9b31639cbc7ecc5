#!/usr/bin/env bash
# kfuse specialise end to end on llama-gutenberg-1.4m with two small datasets,
# a MoEfied copy and the random-init control: both outputs exist and
# specialise.json has the documented shape (docs/specialise-json.md); bad
# options give one line and write nothing.
# ctest-timeout: 600
set -euo pipefail
model=models/llama-gutenberg-1.4m
calib=data/calib/calib.txt
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
head -c 60000 "$calib" > "$tmp/a.txt"
tail -c 60000 "$calib" > "$tmp/b.txt"
"$KFUSE" moefy "$model" -f "$calib" --experts 8 --router-tokens 2048 --epochs 1 -o "$tmp/moe" > /dev/null
"$KFUSE" specialise "$model" --data a="$tmp/a.txt" --data b="$tmp/b.txt" --moe "$tmp/moe" --tokens 2048 \
  --eval-tokens 1024 --frac 0.02,0.05 --boot 20 --null 200 --random 2 --ablate 2 -o "$tmp/out" > "$tmp/log"
for f in specialise.json report.html; do [ -s "$tmp/out/$f" ] || { echo "FAIL: $f missing"; exit 1; }; done
/usr/bin/python3 - "$tmp/out/specialise.json" <<'PY'
import json, sys
a = json.load(open(sys.argv[1]))
assert a["schema"] == "kfuse-specialise/1"
L = a["model"]["n_layer"]
assert [r["model"] for r in a["runs"]] == ["trained", "random_init"]
for r in a["runs"]:
    assert len(r["overlap"]) == 2 and len(r["overlap"][0]["layers"]) == L
    for f in r["overlap"]:
        for l in f["layers"]:
            iou = l["iou"]
            assert iou[0][0] == 1 and iou[0][1] == iou[1][0], iou
            assert 0 <= l["null_mean"][0][1] < 0.2 and 0 < l["p"][0][1] <= 1
    for f in r["pruning"]:
        assert f["n_removed"] >= L and len(f["selective"]) == 2
    assert len(r["ablation"]) == 2 and len(r["ablation"][0]["layers"][0]["d_loss"]) == 2
    for ab in r["ablation"]:
        assert -1 <= ab["rank_corr"] <= 1, ab
        for l in ab["layers"]:
            assert len(l["first_order"]) == 2 and l["first_order_max"] >= max(l["first_order"])
            assert -1 <= l["rank_corr_importance"] <= 1
# the trained model predicts its own kind of text far better than a random init
assert all(t < c - 1 for t, c in zip(a["runs"][0]["base_loss"], a["runs"][1]["base_loss"]))
e = a["experts"][0]
assert e["n_expert"] == [8] * L and len(e["concentration"]) == 4
for c in e["concentration"]:
    assert all(0 < s <= 1 for s in c["share"]) and all(0 <= h <= 1 for h in c["entropy"])
PY
fail() { # expected message, args...
  local want=$1; shift
  if "$KFUSE" specialise "$model" "$@" -o "$tmp/bad" > "$tmp/out.txt" 2> "$tmp/err.txt"; then echo "FAIL: $* succeeded"; exit 1; fi
  grep -q "$want" "$tmp/err.txt" || { echo "FAIL: $*: expected '$want', got: $(cat "$tmp/err.txt")"; exit 1; }
  [ "$(wc -l < "$tmp/err.txt")" -eq 1 ] || { echo "FAIL: $*: more than one line"; exit 1; }
  [ ! -e "$tmp/bad" ] || { echo "FAIL: $*: wrote $tmp/bad"; exit 1; }
}
fail "at least two datasets" --data a="$tmp/a.txt"
fail "given twice" --data a="$tmp/a.txt" --data a="$tmp/b.txt"
fail "expected NAME=FILE" --data a --data b="$tmp/b.txt"
fail "not in (0, 0.5]" --data a="$tmp/a.txt" --data b="$tmp/b.txt" --frac 0.7
fail "not a MoEfication" --data a="$tmp/a.txt" --data b="$tmp/b.txt" --moe models/llama-gutenberg-6.5m
fail "no-such.txt" --data a="$tmp/a.txt" --data b="$tmp/no-such.txt"
echo "specialise CLI: ok"
