#!/usr/bin/env bash
# Perplexity of llama-gutenberg-6.5m on WikiText-2 test at --ctx 256 must
# equal the PyTorch reference (tests/ref/model_ref.py ppl, same protocol;
# value in tests/fixtures/models/ppl_ref.json) within 1e-7 relative (observed
# 1.6e-9 to 3.7e-9 with the thread count: float32 logits against float64).
# ctest-labels: slow
set -eu
: "${KFUSE:?}" "${KF_ROOT:?}"
out=$("$KFUSE" perplexity "$KF_ROOT/models/llama-gutenberg-6.5m" -f "$KF_ROOT/data/wikitext-2-raw/wiki.test.raw" --ctx 256 --json)
/usr/bin/python3 - "$KF_ROOT/tests/fixtures/models/ppl_ref.json" "$out" <<'PY'
import json, sys
ref = json.load(open(sys.argv[1]))
got = json.loads(sys.argv[2])
rel = abs(got["ppl"] - ref["ppl"]) / ref["ppl"]
print(f"kfuse ppl {got['ppl']:.4f} ({got['n_scored']} tokens scored), reference {ref['ppl']:.4f}: rel diff {rel:.2e}")
assert got["n_scored"] == ref["n_scored"], f"scored {got['n_scored']} tokens, reference {ref['n_scored']}"
assert rel <= 1e-7, "perplexity differs from the reference by more than 1e-7 (observed up to 3.7e-9)"
PY
# --chunks 8: the first 8 windows only, and the running value the full run printed after its 8th
eight=$("$KFUSE" perplexity "$KF_ROOT/models/llama-gutenberg-6.5m" -f "$KF_ROOT/data/wikitext-2-raw/wiki.test.raw" --ctx 256 --chunks 8 --json)
running=$("$KFUSE" perplexity "$KF_ROOT/models/llama-gutenberg-6.5m" -f "$KF_ROOT/data/wikitext-2-raw/wiki.test.raw" --ctx 256 --chunks 9 2>/dev/null | tr ',' '\n' | grep '^\[8\]' | cut -d']' -f2)
/usr/bin/python3 -c "
import json, sys
g = json.loads('''$eight''')
assert g['n_chunks'] == 8 and g['n_scored'] == 8 * 127, g
assert abs(g['ppl'] - float('$running')) <= 1e-4 * g['ppl'], (g['ppl'], '$running')
print(f\"--chunks 8: ppl {g['ppl']:.4f} = the 9-window run's running value after 8 ($running)\")
"
echo "2 passed, 0 failed"
