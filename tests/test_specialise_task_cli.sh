#!/usr/bin/env bash
# kfuse specialise with a task file as a dataset (--data NAME=conllu:upos:FILE):
# a CoNLL-U fixture (60 EWT sentences) beside a text on llama-gutenberg-1.4m.
# The probe is trained on the first sentences and evaluated on the rest, its
# cross-entropy is the task's loss: far lower on the trained model than on
# the random init, and changed by every removal (the removed neurons are
# zeroed in the task's passes too). Bad task specs and files give one line
# and write nothing.
# ctest-timeout: 600
set -euo pipefail
model=models/llama-gutenberg-1.4m
conllu=tests/fixtures/specialise/ewt-train-head.conllu
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
head -c 60000 data/calib/calib.txt > "$tmp/a.txt"
"$KFUSE" specialise "$model" --data a="$tmp/a.txt" --data upos="conllu:UPOS:$conllu" --task-items 900 \
  --task-loss xent --tokens 2048 --eval-tokens 1024 --frac 0.05 --boot 10 --null 100 --random 2 --ablate 1 \
  -o "$tmp/out" > "$tmp/log"
grep -q "upos *probe xent" "$tmp/log" || { echo "FAIL: no probe line in: $(cat "$tmp/log")"; exit 1; }
/usr/bin/python3 - "$tmp/out/specialise.json" "$conllu" <<'PY'
import json, re, sys
a = json.load(open(sys.argv[1]))
words = sum(1 for l in open(sys.argv[2]) if re.match(r"^\d+\t", l))
d = a["datasets"]
assert [x["kind"] for x in d] == ["text", "task"], d
t = d[1]["task"]
assert t["loss"] == "xent" and t["n_labels"] >= 12, t
assert 0 < t["train_items"] <= 900 and t["train_items"] + t["eval_items"] == words, (t, words)
trained, rnd = a["runs"]
# trained features predict UPOS far better than a random init's
assert trained["base_loss"][1] < rnd["base_loss"][1] - 0.5, (trained["base_loss"], rnd["base_loss"])
for r in a["runs"]:
    p = r["pruning"][0]
    sel = {(s["focus"], s["retain"]): s for s in p["selective"]}
    assert sel[("upos", "a")]["d_focus"] != 0 and sel[("a", "upos")]["d_retain"] != 0, sel
    assert p["random"]["loss_mean"][1] != r["base_loss"][1]
    assert r["ablation"][1]["layers"][0]["d_loss"][0] != 0
    # no first-order estimate for a task (its loss is not the LM's); the text has one
    assert "first_order" not in r["ablation"][1]["layers"][0] and "rank_corr" in r["ablation"][0]
PY
fail() { # expected message, args...
  local want=$1; shift
  if "$KFUSE" specialise "$model" --data a="$tmp/a.txt" "$@" -o "$tmp/bad" > "$tmp/o.txt" 2> "$tmp/err.txt"; then
    echo "FAIL: $* succeeded"; exit 1
  fi
  grep -q -- "$want" "$tmp/err.txt" || { echo "FAIL: $*: expected '$want', got: $(cat "$tmp/err.txt")"; exit 1; }
  [ "$(wc -l < "$tmp/err.txt")" -eq 1 ] || { echo "FAIL: $*: more than one line: $(cat "$tmp/err.txt")"; exit 1; }
  [ ! -e "$tmp/bad" ] || { echo "FAIL: $*: wrote $tmp/bad"; exit 1; }
}
fail "a task is conllu:COLUMN:TRAIN" --data upos=conllu:upos
fail "no such CoNLL-U label column 'NOPE'" --data upos="conllu:NOPE:$conllu"
fail "no-such.conllu" --data upos="conllu:upos:$tmp/no-such.conllu"
{ head -n 20 "$conllu"; printf '1\tShort\tshort\tADJ\n\n'; } > "$tmp/cols.conllu"
fail "cols.conllu:21: 4 columns" --data upos="conllu:upos:$tmp/cols.conllu"
fail "cannot give both training and evaluation" --data upos="conllu:upos:$conllu" --task-items 100000
{ sed -n 1,28p "$conllu"; printf '1\tWow\twow\tNOSUCH\tUH\t_\t0\troot\t_\t_\n\n'; } > "$tmp/test.conllu"
fail "test.conllu:29: label 'NOSUCH' does not occur in the training split" \
  --data upos="conllu:upos:$conllu:$tmp/test.conllu"
fail "expected error or xent" --data upos="conllu:upos:$conllu" --task-loss mse
echo "specialise task CLI: ok"
