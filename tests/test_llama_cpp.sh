#!/usr/bin/env bash
# Real llama.cpp (libllama 0.5.0 from node-llama-cpp 3.22.1, cached by
# scripts/fetch-llama-cpp.sh) loads kfuse's GGUF exports and computes what
# kfuse computes. For each export: llama.cpp loads it, its token ids of
# tests/fixtures/llama_cpp/text.txt equal kfuse's, and its perplexity (the
# driver tests/llamacpp_ppl.c, kfuse perplexity's protocol, ctx 256) equals
# `kfuse perplexity` on the same file within 1e-4 relative (F32/F16/BF16)
# or 1e-3 (Q8_0). Observed: at most 1.6e-6 (GPT-2) and 2e-7 (Llama); the
# rows are printed. Exports:
#   dense       kfuse convert of llama-gutenberg-6.5m (F32), and its F16, BF16, Q8_0
#   fold        compress --method fold --target-params 0.8: per-layer widths (`deci`)
#   drop-merge  compress --method drop-layers --drop 2 --merge (`deci`)
#   gpt2-widths gpt2-gutenberg-5.9m pruned to per-layer widths (zero-padded)
#   moe         moefy's GGUF (routers in the companion file); kfuse's side is
#               the dense equivalent (convert --dense), what llama.cpp computes
#   no-prefix   a tokenizer.json without the Prepend normalizer: "Hello world"
#               encodes the same from the folder (kfuse), from its GGUF (kfuse),
#               and in llama.cpp, and differently from the prefixed tokenizer
# Skips (77) without the cache; CI=true makes scripts/test.sh fail on that.
# KF_LLAMA_CPP_ONLY="fold moe" runs only those parts (for mutation checks).
# ctest-labels: slow
# ctest-timeout: 900
set -eu
: "${KFUSE:?}" "${KF_ROOT:?}" "${KF_BUILD:?}"
C=${KF_LLAMA_CPP_DIR:-$HOME/.cache/kfuse/llama.cpp-3.22.1}
[ -f "$C/VERSION" ] || { echo "SKIP: llama.cpp is not cached in $C (run scripts/fetch-llama-cpp.sh)"; exit 77; }
command -v cc > /dev/null || { echo "SKIP: no C compiler"; exit 77; }
IDS=$KF_BUILD/tests/kf_tok_ids
[ -x "$IDS" ] || { echo "FAIL: $IDS not built"; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
DRV=$tmp/llamacpp_ppl
cc -O2 -std=c11 -DKF_LLAMA_VERSION="\"$(cat "$C/VERSION")\"" -DKF_LLAMA_LIB_DIR="\"$C/lib\"" -I"$C/include" \
  "$KF_ROOT/tests/llamacpp_ppl.c" -o "$DRV" "$C"/lib/libllama.v*.so "$C"/lib/libggml.v*.so "$C/lib/libggml-base.so" \
  -Wl,-rpath,"$C/lib" -lm
LL=$KF_ROOT/models/llama-gutenberg-6.5m
G2=$KF_ROOT/../shared/models/gpt2-gutenberg-5.9m
[ -d "$G2" ] || { echo "SKIP: $G2 is absent"; exit 77; }
TEXT=$KF_ROOT/tests/fixtures/llama_cpp/text.txt
CALIB=$KF_ROOT/data/calib/calib.txt
fails=0
want() { [ -z "${KF_LLAMA_CPP_ONLY:-}" ] || [[ " $KF_LLAMA_CPP_ONLY " == *" $1 "* ]]; }

# check NAME GGUF TOL [KFUSE_MODEL]: llama.cpp on GGUF against kfuse on KFUSE_MODEL (default GGUF).
check() {
  local name=$1 gguf=$2 tol=$3 kf=${4:-$2}
  if ! "$DRV" "$gguf" -f "$TEXT" --ctx 256 --ids "$tmp/$name.ll.ids" > "$tmp/$name.ll.json" 2> "$tmp/$name.ll.err"; then
    echo "FAIL $name: llama.cpp did not load or run $gguf: $(tail -3 "$tmp/$name.ll.err" | tr '\n' ' ')"
    fails=$((fails + 1))
    return
  fi
  "$IDS" "$kf" -f "$TEXT" > "$tmp/$name.kf.ids"
  "$KFUSE" perplexity "$kf" -f "$TEXT" --ctx 256 --json > "$tmp/$name.kf.json"
  if ! cmp -s "$tmp/$name.ll.ids" "$tmp/$name.kf.ids"; then
    echo "FAIL $name: llama.cpp's token ids differ from kfuse's (first difference: $(cmp "$tmp/$name.ll.ids" "$tmp/$name.kf.ids" | head -1))"
    fails=$((fails + 1))
    return
  fi
  /usr/bin/python3 - "$name" "$tmp/$name.ll.json" "$tmp/$name.kf.json" "$tol" <<'PY' || fails=$((fails + 1))
import json, sys
name, ll, kf, tol = sys.argv[1], json.load(open(sys.argv[2])), json.load(open(sys.argv[3])), float(sys.argv[4])
rel = abs(ll["ppl"] - kf["ppl"]) / kf["ppl"]
ok = rel <= tol and ll["n_scored"] == kf["n_scored"]
print(f"{'ok  ' if ok else 'FAIL'} {name:12s} llama.cpp ppl {ll['ppl']:.6f}  kfuse {kf['ppl']:.6f}  rel {rel:.1e} (tol {tol:g})"
      f"  {ll['n_tokens']} ids equal, {ll['n_scored']} scored")
sys.exit(0 if ok else 1)
PY
}

arch_of() { /usr/bin/python3 - "$1" <<'PY'
import struct, sys
f = open(sys.argv[1], "rb")
f.read(4 + 4 + 8 + 8)
n = struct.unpack("<Q", f.read(8))[0]; key = f.read(n).decode()
assert key == "general.architecture", key
f.read(4); n = struct.unpack("<Q", f.read(8))[0]
print(f.read(n).decode())
PY
}

# Dense, and the typed conversions.
"$KFUSE" convert "$LL" -o "$tmp/dense.gguf" 2> /dev/null
if want dense; then
  check dense "$tmp/dense.gguf" 1e-4
  for dt in f16 bf16 q8_0; do
    "$KFUSE" convert "$LL" -o "$tmp/$dt.gguf" --dtype "$dt" 2> /dev/null
    check "dense-$dt" "$tmp/$dt.gguf" "$([ $dt = q8_0 ] && echo 1e-3 || echo 1e-4)"
  done
fi

# Per-layer widths: a fold to 80% of the parameters, and a merged layer drop.
if want fold; then
  "$KFUSE" compress "$LL" -f "$CALIB" --tokens 4096 --method fold --target-params 0.8 --format gguf \
    -o "$tmp/fold.gguf" > /dev/null 2>&1
  a=$(arch_of "$tmp/fold.gguf"); [ "$a" = deci ] || echo "note: fold written as '$a', not deci"
  check fold "$tmp/fold.gguf" 1e-4
fi
if want drop-merge; then
  "$KFUSE" compress "$LL" -f "$CALIB" --tokens 2048 --method drop-layers --drop 2 --merge --format gguf \
    -o "$tmp/drop.gguf" > /dev/null 2>&1
  check drop-merge "$tmp/drop.gguf" 1e-4
fi

# GPT-2 with per-layer widths: llama.cpp's gpt2 has one width, so kfuse pads
# (kfuse's side is the unpadded Hugging Face folder: the same function).
if want gpt2-widths; then
  "$KFUSE" compress "$G2" --method prune-magnitude --no-refit --widths 704,512,768,640,576,704 -o "$tmp/g2" \
    > /dev/null 2>&1
  "$KFUSE" convert "$tmp/g2" -o "$tmp/g2.gguf" 2> /dev/null
  check gpt2-widths "$tmp/g2.gguf" 1e-4 "$tmp/g2"
fi

# A MoEfied model: llama.cpp loads the model file as the dense model.
if want moe; then
  "$KFUSE" moefy "$LL" -f "$CALIB" --experts 4 --tokens 2048 --router similarity --top-k 2 -o "$tmp/moe.gguf" \
    > /dev/null 2>&1
  "$KFUSE" convert "$tmp/moe.gguf" --dense -o "$tmp/moe-dense.gguf" 2> /dev/null
  check moe "$tmp/moe.gguf" 1e-4 "$tmp/moe-dense.gguf"
fi

# The space prefix: a tokenizer.json without Prepend.
want no-prefix || { [ "$fails" -eq 0 ] && echo "all passed" && exit 0; echo "$fails failed"; exit 1; }
mkdir -p "$tmp/np"
ln -s "$LL/model.safetensors" "$LL/config.json" "$tmp/np/"
/usr/bin/python3 - "$LL/tokenizer.json" "$tmp/np/tokenizer.json" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))
t["normalizer"]["normalizers"] = [n for n in t["normalizer"]["normalizers"] if n["type"] != "Prepend"]
json.dump(t, open(sys.argv[2], "w"), ensure_ascii=False)
PY
"$KFUSE" convert "$tmp/np" -o "$tmp/np.gguf" 2> /dev/null
folder=$("$IDS" "$tmp/np" --text "Hello world")
from_gguf=$("$IDS" "$tmp/np.gguf" --text "Hello world")
llama=$("$DRV" "$tmp/np.gguf" --tokenize "Hello world")
prefixed=$("$IDS" "$tmp/dense.gguf" --text "Hello world")
prefixed_ll=$("$DRV" "$tmp/dense.gguf" --tokenize "Hello world")
echo "no-prefix    \"Hello world\": tokenizer.json [$folder], its GGUF in kfuse [$from_gguf], in llama.cpp [$llama];" \
  "with the prefix [$prefixed] / [$prefixed_ll]"
if [ "$folder" != "$from_gguf" ] || [ "$folder" != "$llama" ] || [ "$folder" = "$prefixed" ] || [ "$prefixed" != "$prefixed_ll" ]; then
  echo "FAIL no-prefix: the ids differ between readers (or the prefix changes nothing)"
  fails=$((fails + 1))
fi

[ "$fails" -eq 0 ] || { echo "$fails failed"; exit 1; }
echo "all passed"
