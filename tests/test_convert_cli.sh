#!/usr/bin/env bash
# kfuse convert and the GGUF exports' round trip in kfuse itself (the
# llama.cpp side is tests/test_llama_cpp.sh; this part needs nothing
# outside kfuse):
#   - per-layer FFN widths (Llama) are written as `deci` and read back with
#     the same widths and perplexity (F32: within 1e-6 relative, observed 0);
#   - GPT-2 with per-layer widths is written zero-padded to the widest layer
#     and computes the unpadded folder's function (within 1e-6, observed ~1e-8);
#   - a MoEfied model's GGUF keeps its routers in X.moe_router.gguf: kfuse
#     reads them back (perplexity with routing equal to the folder's), refuses
#     the file in one line when the companion is missing, and --dense gives
#     the dense model's perplexity;
#   - the tokenizer's space prefix survives GGUF: a tokenizer.json without
#     the Prepend normalizer encodes "Hello world" the same from its GGUF;
#   - --dtype q8_0 stores Q8_0 weights, --dtype bf16 a BF16 folder whose dtype a
#     further convert keeps; bad options fail with nothing written.
# ctest-labels: slow
set -eu
: "${KFUSE:?}" "${KF_ROOT:?}" "${KF_BUILD:?}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
LL=$KF_ROOT/models/llama-gutenberg-1.4m
G2=$KF_ROOT/../shared/models/gpt2-gutenberg-5.9m
[ -d "$G2" ] || { echo "SKIP: $G2 is absent"; exit 77; }
IDS=$KF_BUILD/tests/kf_tok_ids
head -c 6000 "$KF_ROOT/tests/fixtures/llama_cpp/text.txt" > "$tmp/text.txt"
head -c 40000 "$KF_ROOT/data/calib/calib.txt" > "$tmp/calib.txt"
ppl() { "$KFUSE" perplexity "$1" -f "$tmp/text.txt" --ctx 64 --json 2> /dev/null | /usr/bin/python3 -c 'import json,sys; print(repr(json.load(sys.stdin)["ppl"]))'; }
same() { # NAME A B TOL
  /usr/bin/python3 -c "import sys; a, b, t = $2, $3, $4; r = abs(a - b) / b; print(f'$1: {a!r} vs {b!r}, rel {r:.1e}'); sys.exit(0 if r <= t else 1)" ||
    { echo "FAIL $1"; exit 1; }
}
arch_of() { /usr/bin/python3 - "$1" <<'PY'
import struct, sys
f = open(sys.argv[1], "rb")
f.read(24)
n = struct.unpack("<Q", f.read(8))[0]; assert f.read(n) == b"general.architecture"
f.read(4); n = struct.unpack("<Q", f.read(8))[0]
print(f.read(n).decode())
PY
}
widths() { "$KFUSE" info "$1" --json | /usr/bin/python3 -c 'import json,sys; print(",".join(str(l["n_ff"]) for l in json.load(sys.stdin)["layers"]))'; }

# Llama with per-layer widths -> deci, and back.
"$KFUSE" compress "$LL" --method prune-magnitude --no-refit --widths 300,200,150,250 -o "$tmp/pl" > /dev/null 2>&1
"$KFUSE" convert "$tmp/pl" -o "$tmp/pl.gguf" 2> /dev/null
[ "$(arch_of "$tmp/pl.gguf")" = deci ] || { echo "FAIL: per-layer widths written as $(arch_of "$tmp/pl.gguf"), not deci"; exit 1; }
[ "$(widths "$tmp/pl.gguf")" = 300,200,150,250 ] || { echo "FAIL: deci widths read back as $(widths "$tmp/pl.gguf")"; exit 1; }
same "deci round trip" "$(ppl "$tmp/pl.gguf")" "$(ppl "$tmp/pl")" 1e-6
"$KFUSE" convert "$LL" -o "$tmp/uniform.gguf" 2> /dev/null
[ "$(arch_of "$tmp/uniform.gguf")" = llama ] || { echo "FAIL: one width written as $(arch_of "$tmp/uniform.gguf")"; exit 1; }

# GPT-2 with per-layer widths: padded, same function.
"$KFUSE" compress "$G2" --method prune-magnitude --no-refit --widths 704,512,768,640,576,704 -o "$tmp/g2" > /dev/null 2>&1
"$KFUSE" convert "$tmp/g2" -o "$tmp/g2.gguf" 2> /dev/null
[ "$(widths "$tmp/g2.gguf")" = 768,768,768,768,768,768 ] || { echo "FAIL: GPT-2 widths in the GGUF: $(widths "$tmp/g2.gguf")"; exit 1; }
same "gpt2 padded" "$(ppl "$tmp/g2.gguf")" "$(ppl "$tmp/g2")" 1e-6

# MoE: routers in the companion file.
"$KFUSE" moefy "$LL" -f "$tmp/calib.txt" --experts 4 --tokens 2048 --ctx 64 --router similarity --top-k 2 -o "$tmp/moe" > /dev/null 2>&1
"$KFUSE" convert "$tmp/moe" -o "$tmp/moe.gguf" 2> /dev/null
[ -f "$tmp/moe.moe_router.gguf" ] || { echo "FAIL: no $tmp/moe.moe_router.gguf"; exit 1; }
same "moe routers read back" "$(ppl "$tmp/moe.gguf")" "$(ppl "$tmp/moe")" 1e-6
"$KFUSE" convert "$tmp/moe.gguf" --dense -o "$tmp/moe-dense.gguf" 2> /dev/null
[ ! -e "$tmp/moe-dense.moe_router.gguf" ] || { echo "FAIL: --dense wrote routers"; exit 1; }
same "moe --dense = the dense model" "$(ppl "$tmp/moe-dense.gguf")" "$(ppl "$LL")" 1e-5
mv "$tmp/moe.moe_router.gguf" "$tmp/elsewhere.gguf"
if msg=$("$KFUSE" info "$tmp/moe.gguf" 2>&1); then echo "FAIL: loaded without its routers"; exit 1; fi
echo "$msg" | grep -q "moe.moe_router.gguf (kfuse.moe.router_file) is missing" || { echo "FAIL: message: $msg"; exit 1; }
[ "$(echo "$msg" | wc -l)" -eq 1 ] || { echo "FAIL: more than one line: $msg"; exit 1; }

# The space prefix.
mkdir "$tmp/np"
ln -s "$LL/model.safetensors" "$LL/config.json" "$tmp/np/"
/usr/bin/python3 - "$LL/tokenizer.json" "$tmp/np/tokenizer.json" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))
t["normalizer"]["normalizers"] = [n for n in t["normalizer"]["normalizers"] if n["type"] != "Prepend"]
json.dump(t, open(sys.argv[2], "w"), ensure_ascii=False)
PY
"$KFUSE" convert "$tmp/np" -o "$tmp/np.gguf" 2> /dev/null
a=$("$IDS" "$tmp/np" --text "Hello world") b=$("$IDS" "$tmp/np.gguf" --text "Hello world")
c=$("$IDS" "$LL" --text "Hello world") d=$("$IDS" "$tmp/uniform.gguf" --text "Hello world")
echo "no prefix: folder [$a], GGUF [$b]; prefix: folder [$c], GGUF [$d]"
[ "$a" = "$b" ] && [ "$c" = "$d" ] && [ "$a" != "$c" ] || { echo "FAIL: the space prefix did not survive GGUF"; exit 1; }

# Typed weights, and refusals with nothing written.
"$KFUSE" convert "$LL" -o "$tmp/q8.gguf" --dtype q8_0 2> /dev/null
"$KFUSE" info "$tmp/q8.gguf" --json | /usr/bin/python3 -c 'import json,sys; d=json.load(sys.stdin)["dtypes"]; assert d.get("Q8_0", 0) > 0, d' ||
  { echo "FAIL: no Q8_0 tensors"; exit 1; }
# BF16 safetensors, and the dtype kept by default when converted on to GGUF
"$KFUSE" convert "$LL" -o "$tmp/bf16" --dtype bf16 2> /dev/null
"$KFUSE" convert "$tmp/bf16" -o "$tmp/bf16.gguf" 2> /dev/null
for f in "$tmp/bf16" "$tmp/bf16.gguf"; do
  "$KFUSE" info "$f" --json | /usr/bin/python3 -c 'import json,sys; d=json.load(sys.stdin)["dtypes"]; assert d.get("BF16", 0) > 0 and "F16" not in d, d' ||
    { echo "FAIL: $f does not hold BF16 weights"; exit 1; }
done
# convert reads BF16 weights as they are: the GGUF computes what the folder does
same "bf16 folder -> gguf" "$(ppl "$tmp/bf16.gguf")" "$(ppl "$tmp/bf16")" 1e-6
"$KFUSE" convert "$tmp/bf16" -o "$tmp/bf16-q8.gguf" --dtype q8_0 2> /dev/null
same "bf16 folder -> q8_0" "$(ppl "$tmp/bf16-q8.gguf")" "$(ppl "$tmp/q8.gguf")" 1e-3
for bad in "--dtype q8_0 --format hf" "--dtype bf16 --format llama2c" "--dtype q4" "--format onnx"; do
  # shellcheck disable=SC2086
  if msg=$("$KFUSE" convert "$LL" -o "$tmp/bad" $bad 2>&1); then echo "FAIL: convert $bad succeeded"; exit 1; fi
  [ ! -e "$tmp/bad" ] && [ "$(echo "$msg" | wc -l)" -eq 1 ] || { echo "FAIL: convert $bad: $msg"; exit 1; }
done
echo "all passed"
