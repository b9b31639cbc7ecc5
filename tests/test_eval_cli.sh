#!/usr/bin/env bash
# kfuse eval: a model against itself reports KL 0, agreement 1, equal
# perplexities, sizes and both speeds in one JSON; a reference with another
# vocabulary is one clear error line; several models in one run match the
# one-model runs; --top-k on a dense model is an error.
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
# Two models in one run: an array of the one-model objects, each as alone.
"$KFUSE" eval "$m" "$m" --ref "$m" -f "$tmp/t.txt" --ctx 64 --json --no-bench >"$tmp/two.json"
/usr/bin/python3 - "$tmp/o.json" "$tmp/two.json" <<'PY'
import json, sys
one, two = (json.load(open(p)) for p in sys.argv[1:3])
assert isinstance(two, list) and len(two) == 2, two
for o in two:
    assert o["n_scored"] == one["n_scored"] and o["kl_mean"] == 0 and o["ffn_share"] == 1
    assert o["model"]["ppl"] == one["model"]["ppl"] and o["ref"]["ppl"] == one["ref"]["ppl"]
print("two-model eval ok")
PY
if "$KFUSE" eval "$m" --ref "$m" -f "$tmp/t.txt" --top-k 2 2>"$tmp/err"; then
    echo "FAIL: --top-k accepted for a dense model"; exit 1
fi
grep -q "no mixture-of-experts layer" "$tmp/err" || { cat "$tmp/err"; exit 1; }
echo "4 passed, 0 failed"
