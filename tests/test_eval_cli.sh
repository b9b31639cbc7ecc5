#!/usr/bin/env bash
# kfuse eval: a model against itself reports KL 0, agreement 1, equal
# perplexities, sizes and both speeds in one JSON; a reference with another
# vocabulary is one clear error line.
set -eu
: "${KFUSE:?}" "${KF_ROOT:?}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
head -c 12000 "$KF_ROOT/data/wikitext-2-raw/wiki.test.raw" >"$tmp/t.txt"
m="$KF_ROOT/models/llama-gutenberg-1.4m"
"$KFUSE" eval "$m" --ref "$m" -f "$tmp/t.txt" --ctx 64 --json --bench-p 16 --bench-n 4 --bench-r 1 >"$tmp/o.json"
/usr/bin/python3 - "$tmp/o.json" <<'PY'
import json, sys
o = json.load(open(sys.argv[1]))
assert o["n_scored"] > 0
assert o["kl_mean"] == 0 and o["kl_p99"] == 0 and o["top1_agreement"] == 1, o
assert o["model"]["ppl"] == o["ref"]["ppl"]
for side in ("model", "ref"):
    s = o[side]
    assert s["params"] == 1377408 and s["weight_bytes"] > 0
    assert s["prefill_tps"] > 0 and s["decode_tps"] > 0
print("self-compare ok")
PY
if "$KFUSE" eval "$m" --ref "$KF_ROOT/tests/fixtures/models/gpt2-tiny" -f "$tmp/t.txt" 2>"$tmp/err"; then
    echo "FAIL: vocabulary mismatch accepted"; exit 1
fi
grep -q "vocabularies differ" "$tmp/err" || { cat "$tmp/err"; exit 1; }
[ "$(wc -l <"$tmp/err")" -eq 1 ] || { echo "FAIL: error is not one line"; exit 1; }
echo "2 passed, 0 failed"
