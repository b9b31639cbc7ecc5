#!/usr/bin/env bash
# kfuse analyze end to end on llama-gutenberg-1.4m with 4096 calibration
# tokens of the repository's calibration text: the three outputs exist; analysis.json has
# the expected shapes and invariants (CKA (L+1)x(L+1), symmetric, 1 on the
# diagonal, in [0,1]; Block Influence in [0,2]; redundancy in [0,1] and
# non-decreasing in t; per-layer threshold widths <= n_ff with the error at
# the chosen t <= epsilon; cluster sizes summing to n_ff); stats.kfs has the
# statsfile magic; the .npy dump loads in numpy with the right shapes; the
# report renders in headless Chromium without console errors and contains
# the plots.
set -eu
: "${KFUSE:?}" "${KF_ROOT:?}"
corpus="$KF_ROOT/data/calib/calib.txt" # starts with alice-in-wonderland.txt
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
head -c 120000 "$corpus" > "$tmp/calib.txt"
"$KFUSE" analyze "$KF_ROOT/models/llama-gutenberg-1.4m" -f "$tmp/calib.txt" --tokens 4096 --ctx 128 \
  --sample 512 --k 8 --context-tokens 1024 --dump-npy "$tmp/npy" -o "$tmp/out" > /dev/null
for f in report.html analysis.json stats.kfs; do
  [ -s "$tmp/out/$f" ] || { echo "FAIL: $f missing"; exit 1; }
done
head -c 8 "$tmp/out/stats.kfs" | grep -q KFSTATS || { echo "FAIL: stats.kfs lacks the KFSTATS magic"; exit 1; }

/usr/bin/python3 - "$tmp/out/analysis.json" "$tmp/npy" <<'PY'
import json, sys, math
import numpy as np
a = json.load(open(sys.argv[1]))
L = a["model"]["n_layer"]; C = a["model"]["n_embd"]; F = a["model"]["n_ff"]
assert a["calibration"]["n_tokens"] == 4096, a["calibration"]
assert a["calibration"]["bos_id"] == 1, a["calibration"]  # the tokenizer's <s>: every window starts with BOS
cka = np.array(a["layers"]["cka"])
assert cka.shape == (L + 1, L + 1), cka.shape
assert np.allclose(np.diag(cka), 1, atol=1e-9), np.diag(cka)
assert np.allclose(cka, cka.T, atol=1e-12)
assert (cka >= -1e-12).all() and (cka <= 1 + 1e-9).all()
bi = np.array(a["layers"]["block_influence"])
assert bi.shape == (L,) and (bi >= 0).all() and (bi <= 2).all(), bi
red = a["redundancy"]
t = np.array(red["t"])
assert np.allclose(t, np.arange(1, 10) / 10)
for name, rows in (("ffn", L), ("resid", L + 1)):
    r = np.array(red[name])
    assert r.shape == (rows, 9), (name, r.shape)
    assert (r >= 0).all() and (r <= 1).all()
    assert (np.diff(r, axis=1) >= -1e-12).all(), f"{name} redundancy decreases in t: {r}"
ra = np.array(red["resid_all"])
assert ra.shape == (9,) and (np.diff(ra) >= -1e-12).all()
assert red["resid_all_n"] == (L + 1) * C
thr = a["thresholds"]
eps = thr["epsilon"]
assert len(thr["layers"]) == L
for e in thr["layers"]:
    assert 1 <= e["width"] <= e["n_ff"], e
    if e["t"] is not None:
        assert e["rel_err"] <= eps + 1e-12, e
        curve = e["err_curve"]
        assert len(curve) == 101 and curve[0] <= 1e-9, curve[:3]  # t = 0 merges nothing
        j = round(e["t"] * 100)
        assert all(c <= eps + 1e-12 for c in curve[: j + 1])
        assert j == 100 or curve[j + 1] > eps
cl = a["clusters"]["layers"]
assert len(cl) == L
for l, e in enumerate(cl):
    for kind in ("activation", "weight"):
        k = e[kind]
        assert k["k"] == 8, k["k"]
        assert sum(k["sizes"]) == F[l] and len(k["labels"]) == F[l]
        assert -1 <= k["silhouette"] <= 1
        ctx = k["contexts"]
        assert len(ctx) == 8
        assert any(len(c) > 0 for c in ctx)
        for c in ctx:
            scores = [x["score"] for x in c]
            assert scores == sorted(scores, reverse=True)
            for x in c:
                assert isinstance(x["token"], str) and len(x["ids"]) <= 9
S = a["calibration"]["sample_tokens"]
for l in range(L):
    x = np.load(f"{sys.argv[2]}/ffn_act.{l}.npy")
    assert x.shape == (S, F[l]) and x.dtype == np.float32, x.shape
    assert np.abs(x).sum(axis=1).min() > 0, "a sampled token has no activations recorded"
r = np.load(f"{sys.argv[2]}/resid.{L}.npy")
assert r.shape == (S, C)
pos = np.load(f"{sys.argv[2]}/sample_pos.npy")
assert pos.shape == (S,) and (np.diff(pos) > 0).all() and pos.max() < 4096
print("analysis.json and .npy dump: ok")
PY

if ! command -v chromium > /dev/null; then
  echo "SKIP (chromium part): chromium is not installed (scripts/install-deps.sh installs it)"
  exit 77
fi
profile=$(mktemp -d)
timeout 120 chromium --headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update \
  --disable-sync --no-first-run --user-data-dir="$profile" --enable-logging=stderr --v=0 \
  --dump-dom "file://$tmp/out/report.html" > "$tmp/dom.html" 2> "$tmp/chromium.log" || true
rm -rf "$profile"
n_svg=$(grep -o '<svg' "$tmp/dom.html" | wc -l)
L=$(/usr/bin/python3 -c "import json;print(json.load(open('$tmp/out/analysis.json'))['model']['n_layer'])")
# CKA heatmap, BI bars, 2 redundancy plots, threshold errors, 2 size plots per layer
want=$((5 + 2 * L))
echo "report: $n_svg <svg> elements in the rendered DOM (want $want)"
[ "$n_svg" -eq "$want" ] || { echo "FAIL: expected $want plots"; exit 1; }
grep -q 'Linear CKA' "$tmp/dom.html" || { echo "FAIL: no CKA heatmap title"; exit 1; }
if grep -E 'CONSOLE|Uncaught' "$tmp/chromium.log"; then echo "FAIL: console messages"; exit 1; fi
echo "1 passed, 0 failed"
