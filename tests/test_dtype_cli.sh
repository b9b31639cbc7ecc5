#!/usr/bin/env bash
# Writers keep the dtype the model was loaded from: kfuse compress of the
# BF16 fixture writes BF16 2-D weights (norms F32) and, at half FFN width,
# a smaller file than its input; --dtype f32 writes F32; --dtype q8_0 with
# --format hf and an unknown --dtype are refused with one line before any
# work, nothing written. info reports the kept dtypes.
set -eu
: "${KFUSE:?}" "${KF_ROOT:?}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
m="$KF_ROOT/tests/fixtures/models/llama-gqa-bf16"
common=(--method prune-magnitude --ffn-keep 0.5 --no-refit)

"$KFUSE" compress "$m" "${common[@]}" -o "$tmp/half" >/dev/null
"$KFUSE" compress "$m" "${common[@]}" --dtype f32 -o "$tmp/f32" >/dev/null
"$KFUSE" info "$tmp/half" --json >"$tmp/half.info.json"
for bad in q8_0 f8; do
    if "$KFUSE" compress "$m" "${common[@]}" --dtype "$bad" -o "$tmp/bad" 2>"$tmp/err"; then
        echo "FAIL: --dtype $bad accepted"; exit 1
    fi
    [ "$(wc -l <"$tmp/err")" -eq 1 ] || { echo "FAIL: not one line: $(cat "$tmp/err")"; exit 1; }
    grep -q -- "--dtype" "$tmp/err" || { echo "FAIL: error does not name --dtype: $(cat "$tmp/err")"; exit 1; }
    [ ! -e "$tmp/bad" ] || { echo "FAIL: output written for --dtype $bad"; exit 1; }
done
/usr/bin/python3 - "$m" "$tmp" <<'PY'
import json, os, struct, sys
src, d = sys.argv[1], sys.argv[2]

def header(folder):
    with open(folder + "/model.safetensors", "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n))

for name, want in (("half", "BF16"), ("f32", "F32")):
    h = header(d + "/" + name)
    for k, v in h.items():
        if k == "__metadata__":
            continue
        expect = want if len(v["shape"]) == 2 else "F32"
        assert v["dtype"] == expect, (name, k, v["dtype"], expect)
    cfg = json.load(open(d + "/" + name + "/config.json"))
    assert cfg["torch_dtype"] == {"BF16": "bfloat16", "F32": "float32"}[want], cfg["torch_dtype"]
assert os.path.getsize(d + "/half/model.safetensors") < os.path.getsize(src + "/model.safetensors")
info = json.load(open(d + "/half.info.json"))
assert info["dtypes"].get("BF16", 0) > 0 and info["layers"][0]["n_ff"] == 48, info
PY
echo "ok"
