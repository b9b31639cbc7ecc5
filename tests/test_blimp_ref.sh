#!/usr/bin/env bash
# kfuse eval --task blimp=tests/fixtures/blimp scores every pair as the
# PyTorch reference does (tests/ref/blimp_ref.py: Python sentencepiece ids,
# BOS prepended, float64 forward; values in tests/fixtures/blimp/ref_*.json)
# for llama-gutenberg-1.4m and gpt2-gutenberg-5.9m in one multi-model run:
# each sentence's log-probability within 1e-4 (observed up to 1.5e-5), and the
# accuracy per paradigm, per field and overall exactly (the reference's
# smallest margin between a good and a bad sentence is 0.016, far above the
# tolerance). The reference column of the run is checked the same way.
set -eu
: "${KFUSE:?}" "${KF_ROOT:?}"
gpt2=$KF_ROOT/../shared/models/gpt2-gutenberg-5.9m
if [ ! -d "$gpt2" ]; then
    echo "SKIP: $gpt2 not found (the shared data folder sits beside the repository)"
    exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$KFUSE" eval "$KF_ROOT/models/llama-gutenberg-1.4m" --ref "$gpt2" --task blimp="$KF_ROOT/tests/fixtures/blimp" \
    --task-scores "$tmp/scores.tsv" --no-bench --json >"$tmp/out.json"
/usr/bin/python3 - "$KF_ROOT/tests/fixtures/blimp" "$tmp/scores.tsv" "$tmp/out.json" <<'PY'
import json, sys
fix, tsv, out = sys.argv[1:]
rows = [l.rstrip("\n").split("\t") for l in open(tsv) if not l.startswith("#")][1:]
res = json.load(open(out))
fails = 0
for col, (name, side) in enumerate([("llama-gutenberg-1.4m", "model"), ("gpt2-gutenberg-5.9m", "ref")]):
    ref = json.load(open(f"{fix}/ref_{name}.json"))
    assert len(rows) == len(ref["pairs"]), (len(rows), len(ref["pairs"]))
    worst = 0.0
    for r, p in zip(rows, ref["pairs"]):
        assert r[0] == p["uid"], (r[0], p["uid"])
        g, b = float(r[2 + 2 * col]), float(r[3 + 2 * col])
        worst = max(worst, abs(g - p["good"]), abs(b - p["bad"]))
    bl = res[side]["blimp"]
    got = {"overall": (bl["n_pairs"], bl["correct"])}
    got.update({"field " + f["field"]: (f["n_pairs"], f["correct"]) for f in bl["fields"]})
    got.update({"paradigm " + p["uid"]: (p["n_pairs"], p["correct"]) for p in bl["paradigms"]})
    want = {k: (v["n_pairs"], v["correct"]) for k, v in ref["accuracy"].items()}
    ok = worst <= 1e-4 and got == want
    fails += not ok
    print(f"{name}: max |log p - reference| {worst:.2e} over {2 * len(rows)} sentences; "
          f"accuracy {bl['accuracy']:.4f} ({bl['correct']}/{bl['n_pairs']}), {'matches' if got == want else 'DIFFERS'}")
    if got != want:
        print("  got ", sorted(got.items()), "\n  want", sorted(want.items()))
print(f"{2 - fails} passed, {fails} failed")
sys.exit(1 if fails else 0)
PY
