#!/usr/bin/env bash
# kfuse eval --perturb and --task from the command line: a model against
# itself on typo'd text has KL 0 and the same gap on both sides, a higher
# perplexity than on the clean text at 10% typos, and the same numbers on a
# second run (seeded); BLiMP without -f scores the model alone and --json
# carries the per-field and per-paradigm counts; bad JSONL, a bad --task or
# --perturb are one error line (file and line number for the JSONL), exit 1,
# nothing on stdout and no --task-scores file.
set -eu
: "${KFUSE:?}" "${KF_ROOT:?}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
head -c 12000 "$KF_ROOT/data/wikitext-2-raw/wiki.test.raw" >"$tmp/t.txt"
m="$KF_ROOT/models/llama-gutenberg-1.4m"
for run in 1 2; do
    "$KFUSE" eval "$m" --ref "$m" -f "$tmp/t.txt" --ctx 64 --no-bench --json --perturb typo:0.1,seed:5 >"$tmp/p$run.json"
done
cmp -s "$tmp/p1.json" "$tmp/p2.json" || { echo "FAIL: two runs with the same seed differ"; exit 1; }
"$KFUSE" eval "$m" --ref "$m" -f "$tmp/t.txt" --ctx 64 --no-bench --json --perturb typo:0.1,seed:6 >"$tmp/p3.json"
"$KFUSE" eval "$m" --task blimp="$KF_ROOT/tests/fixtures/blimp" --task-pairs 3 --no-bench --json >"$tmp/b.json"
/usr/bin/python3 - "$tmp/p1.json" "$tmp/p3.json" "$tmp/b.json" <<'PY'
import json, sys
o, o3, b = (json.load(open(p)) for p in sys.argv[1:4])
p = o["perturbed"]
assert p["perturb"] == "typo:0.1,seed:5", p
e = p["edits"]
edits = e["swap"] + e["drop"] + e["insert"] + e["substitute"]
assert 0.07 < edits / e["considered"] < 0.13, e
assert p["kl_mean"] == 0 and p["top1_agreement"] == 1, p
assert p["model"]["ppl"] == p["ref"]["ppl"] and p["gap"]["model"] == p["gap"]["ref"], p
assert p["model"]["ppl"] > o["model"]["ppl"] and p["gap"]["model"] > 0, (p, o["model"])
assert abs(p["gap"]["model"] - (p["model"]["ppl"] / o["model"]["ppl"] - 1)) < 1e-12
assert o3["perturbed"]["model"]["ppl"] != p["model"]["ppl"], "another seed gave the same text"
assert "ref" not in b and "ppl" not in b["model"], b
bl = b["model"]["blimp"]
assert bl["n_pairs"] == 15 and len(bl["paradigms"]) == 5 and len(bl["fields"]) == 4, bl
assert sum(f["correct"] for f in bl["fields"]) == bl["correct"] == sum(q["correct"] for q in bl["paradigms"])
assert all(q["n_pairs"] == 3 for q in bl["paradigms"])
print(f"perturbed ppl {p['model']['ppl']:.2f} vs clean {o['model']['ppl']:.2f} (gap {p['gap']['model']:+.3f}), "
      f"{edits} edits; blimp {bl['correct']}/{bl['n_pairs']}")
PY
fail_one() { # expected text, then the eval arguments
    local want=$1
    shift
    if "$KFUSE" eval "$@" >"$tmp/out" 2>"$tmp/err"; then echo "FAIL: accepted: $*"; exit 1; fi
    grep -qF -- "$want" "$tmp/err" || { echo "FAIL: '$want' not in: $(cat "$tmp/err")"; exit 1; }
    [ "$(wc -l <"$tmp/err")" -eq 1 ] || { echo "FAIL: error is not one line: $(cat "$tmp/err")"; exit 1; }
    [ ! -s "$tmp/out" ] || { echo "FAIL: output written for: $*"; exit 1; }
}
mkdir "$tmp/bad"
cp "$KF_ROOT/tests/fixtures/blimp/adjunct_island.jsonl" "$tmp/bad/a.jsonl"
printf '{"sentence_good": "A cat runs.", "field": "morphology", "linguistics_term": "t", "UID": "u"}\n' >"$tmp/bad/b.jsonl"
fail_one "$tmp/bad/b.jsonl:1: no string \"sentence_bad\"" "$m" --task blimp="$tmp/bad" --task-scores "$tmp/s.tsv" --no-bench
[ ! -e "$tmp/s.tsv" ] || { echo "FAIL: --task-scores written on bad input"; exit 1; }
printf 'not json\n' >"$tmp/c.jsonl"
fail_one "$tmp/c.jsonl:1: not a JSON object" "$m" --task blimp="$tmp/c.jsonl" --no-bench --json
fail_one "expected blimp=PATH" "$m" --task sst2=x --no-bench
fail_one "RATE must be a number in [0, 1]" "$m" --ref "$m" -f "$tmp/t.txt" --perturb typo:3 --no-bench
fail_one "--perturb needs -f TEXT" "$m" --task blimp="$tmp/c.jsonl" --perturb typo:0.1 --no-bench
mkdir "$tmp/empty"
fail_one "no .jsonl files" "$m" --task blimp="$tmp/empty" --no-bench
echo "1 passed, 0 failed"
