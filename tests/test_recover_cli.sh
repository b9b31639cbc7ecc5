#!/usr/bin/env bash
# kfuse recover: a short LoRA run writes the model (it loads), the PEFT
# adapter folder (PEFT's keys and shapes) and a JSON summary whose curves have
# one entry per step; an evaluation text cut from the training text is
# refused in one line naming both files, and nothing is written; a run
# resumed from its --checkpoint writes the same model as the uninterrupted
# one, and an existing checkpoint is not overwritten without --resume;
# compress --recover writes what compress followed by recover writes; bad
# options are one-line errors.
set -eu
: "${KFUSE:?}" "${KF_ROOT:?}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
m="$KF_ROOT/models/llama-gutenberg-1.4m"
train="$KF_ROOT/data/calib/calib.txt"
head -c 20000 "$KF_ROOT/data/wikitext-2-raw/wiki.test.raw" >"$tmp/eval.txt"
"$KFUSE" recover "$m" --teacher "$m" -f "$train" --steps 3 --batch 2 --ctx 32 --train lora --lora-rank 4 \
    --eval "$tmp/eval.txt" --eval-windows 4 --json -o "$tmp/out" >"$tmp/o.json"
/usr/bin/python3 - "$tmp" <<'PY'
import json, os, struct, sys
d = sys.argv[1]
o = json.load(open(os.path.join(d, "o.json")))
assert o["steps"] == 3 and o["tokens"] == 3 * 2 * 32, o
for k in ("loss", "kl", "ce", "grad_norm", "lr_schedule"):
    assert len(o[k]) == 3, k
assert o["train"] == "lora" and o["lora_rank"] == 4
assert [p["step"] for p in o["eval"]["curve"]] == [0, 3]
assert o["eval"]["kl_before"] < 1e-6  # the student is the teacher
cfg = json.load(open(os.path.join(d, "out-adapter", "adapter_config.json")))
assert cfg["peft_type"] == "LORA" and cfg["r"] == 4 and cfg["fan_in_fan_out"] is False
assert cfg["target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
blob = open(os.path.join(d, "out-adapter", "adapter_model.safetensors"), "rb").read()
(n,) = struct.unpack("<Q", blob[:8])
h = json.loads(blob[8 : 8 + n])
keys = [k for k in h if k != "__metadata__"]
assert len(keys) == 4 * 7 * 2, len(keys)
a = h["base_model.model.model.layers.3.mlp.down_proj.lora_A.weight"]
b = h["base_model.model.model.layers.3.mlp.down_proj.lora_B.weight"]
assert a["shape"] == [4, 384] and b["shape"] == [128, 4], (a, b)
print("lora run ok")
PY
"$KFUSE" info "$tmp/out" >/dev/null
# an evaluation text copied from the training text
head -c 60000 "$train" | tail -c 20000 >"$tmp/leak.txt"
if "$KFUSE" recover "$m" --teacher "$m" -f "$train" --steps 1 --batch 1 --ctx 32 --eval "$tmp/leak.txt" \
    -o "$tmp/leak" 2>"$tmp/err"; then
    echo "FAIL: overlapping evaluation text accepted"; exit 1
fi
grep -q "leak.txt overlaps the training text" "$tmp/err" || { cat "$tmp/err"; exit 1; }
[ "$(wc -l <"$tmp/err")" -eq 1 ] || { echo "FAIL: error is not one line"; exit 1; }
[ ! -e "$tmp/leak" ] || { echo "FAIL: output written after the refusal"; exit 1; }
# checkpoints: 6 steps saved every 2 (latest: step 4); resuming finishes the
# same run, so the model equals the uninterrupted one byte for byte
run6() { OMP_NUM_THREADS=1 "$KFUSE" recover "$m" --teacher "$m" -f "$train" --steps 6 --batch 2 --ctx 32 --train ffn \
    --lr 1e-2 "$@" >/dev/null; }
run6 -o "$tmp/full" 2>/dev/null
run6 --checkpoint "$tmp/ck" --checkpoint-every 2 -o "$tmp/first" 2>/dev/null
[ "$(cat "$tmp/ck/latest")" = 4 ] && [ -s "$tmp/ck/step-4.safetensors" ] && [ ! -e "$tmp/ck/step-2.json" ] ||
    { echo "FAIL: checkpoint folder"; ls "$tmp/ck"; exit 1; }
if run6 --checkpoint "$tmp/ck" -o "$tmp/again" 2>"$tmp/err"; then echo "FAIL: checkpoint overwritten"; exit 1; fi
grep -q "holds a checkpoint at step 4; add --resume" "$tmp/err" || { cat "$tmp/err"; exit 1; }
run6 --checkpoint "$tmp/ck" --resume -o "$tmp/resumed" 2>"$tmp/err"
grep -q "resuming .* at step 4 of 6" "$tmp/err" || { cat "$tmp/err"; exit 1; }
cmp "$tmp/full/model.safetensors" "$tmp/resumed/model.safetensors" || { echo "FAIL: resumed model differs"; exit 1; }
if run6 --lr 2e-2 --checkpoint "$tmp/ck" --resume -o "$tmp/other" 2>"$tmp/err"; then
    echo "FAIL: checkpoint of another run resumed"; exit 1
fi
grep -q "lr differs" "$tmp/err" || { cat "$tmp/err"; exit 1; }
echo "checkpoint ok"
# --max-memory below the kept activations: recomputed layer by layer, to the
# same model byte for byte; below even that, one line saying what is needed
mem() { OMP_NUM_THREADS=1 "$KFUSE" recover "$m" --teacher "$m" -f "$train" --steps 6 --batch 2 --ctx 32 --train ffn \
    --lr 1e-2 --json "$@" 2>/dev/null; }
kept=$(mem -o "$tmp/kept" | /usr/bin/python3 -c "import json, sys; o = json.load(sys.stdin); assert not o['recompute']; print(o['workspace_bytes'])")
cmp "$tmp/full/model.safetensors" "$tmp/kept/model.safetensors" || { echo "FAIL: --json run differs"; exit 1; }
small=$(mem --max-memory $((kept - 1)) -o "$tmp/recomp" | /usr/bin/python3 -c "import json, sys; o = json.load(sys.stdin); assert o['recompute']; print(o['workspace_bytes'])")
[ "$small" -lt "$kept" ] || { echo "FAIL: recomputing workspace $small not below $kept"; exit 1; }
cmp "$tmp/full/model.safetensors" "$tmp/recomp/model.safetensors" || { echo "FAIL: recomputed run differs"; exit 1; }
if mem --max-memory $((small - 1)) -o "$tmp/toosmall" >/dev/null 2>"$tmp/err"; then echo "FAIL: cap accepted"; exit 1; fi
OMP_NUM_THREADS=1 "$KFUSE" recover "$m" --teacher "$m" -f "$train" --steps 6 --batch 2 --ctx 32 --max-memory 1K \
    -o "$tmp/toosmall" 2>"$tmp/err" >/dev/null && { echo "FAIL: 1K accepted"; exit 1; }
grep -q "MiB recomputed layer by layer; the cap is 0.0 MiB" "$tmp/err" || { cat "$tmp/err"; exit 1; }
[ "$(wc -l <"$tmp/err")" -eq 1 ] && [ ! -e "$tmp/toosmall" ] || { echo "FAIL: error not one line, or output written"; exit 1; }
echo "max-memory ok (kept $kept bytes, recomputed $small)"
# compress --recover = compress, then kfuse recover with the same options
# (one thread: the refit's sums depend on the thread count in their last bits)
OMP_NUM_THREADS=1 "$KFUSE" compress "$m" -f "$train" --tokens 4096 --ctx 64 --method fold --ffn-keep 0.5 -o "$tmp/c" \
    2>/dev/null >/dev/null
OMP_NUM_THREADS=1 "$KFUSE" recover "$tmp/c" --teacher "$m" -f "$train" --tokens 256 --batch 2 --ctx 32 --train lora \
    -o "$tmp/c-rec" 2>/dev/null >/dev/null
OMP_NUM_THREADS=1 "$KFUSE" compress "$m" -f "$train" --tokens 4096 --ctx 64 --method fold --ffn-keep 0.5 \
    --recover "$train" --recover-tokens 256 --recover-batch 2 --recover-ctx 32 --recover-train lora \
    --recover-eval "$tmp/eval.txt" --json -o "$tmp/chain" 2>/dev/null >"$tmp/chain.json"
cmp "$tmp/c-rec/model.safetensors" "$tmp/chain/model.safetensors" || { echo "FAIL: compress --recover differs"; exit 1; }
/usr/bin/python3 -c "
import json, sys
r = json.load(open('$tmp/chain.json'))['recover']
assert r['steps'] == 4 and r['tokens'] == 256 and r['train'] == 'lora', r
assert r['eval_kl_before'] > 0 and r['eval_kl_after'] > 0, r
"
if "$KFUSE" compress "$m" -f "$train" --method fold --ffn-keep 0.5 --recover "$train" --recover-eval "$tmp/leak.txt" \
    -o "$tmp/chainleak" 2>"$tmp/err"; then echo "FAIL: compress --recover-eval overlap accepted"; exit 1; fi
grep -q "leak.txt overlaps the training text" "$tmp/err" && [ ! -e "$tmp/chainleak" ] || { cat "$tmp/err"; exit 1; }
echo "compress --recover ok"
# moefy --recover: the routers only are trained (expert weights byte-equal to
# moefy without it, routers changed), the summary says so, and the saved
# model loads and runs; kfuse recover --train router does the same on a
# MoEfied model and refuses a dense one (in the bad options below).
mo="--experts 8 --router linear --top-k 2 --tokens 4096 --ctx 64 --router-tokens 1024 --epochs 1"
# shellcheck disable=SC2086
"$KFUSE" moefy "$m" -f "$train" $mo -o "$tmp/moe0" >/dev/null 2>&1
# shellcheck disable=SC2086
"$KFUSE" moefy "$m" -f "$train" $mo --recover "$train" --recover-tokens 256 --recover-batch 2 --recover-ctx 32 \
    --json -o "$tmp/moe1" >"$tmp/moe1.json" 2>/dev/null
"$KFUSE" recover "$tmp/moe0" --teacher "$m" -f "$train" --steps 4 --batch 2 --ctx 32 --train router --json \
    -o "$tmp/moe2" >"$tmp/moe2.json" 2>/dev/null
/usr/bin/python3 - "$tmp" <<'PY'
import json, struct, sys
d = sys.argv[1]
def tensors(path):
    blob = open(path, "rb").read()
    (n,) = struct.unpack("<Q", blob[:8])
    h = json.loads(blob[8 : 8 + n])
    return {k: blob[8 + n + v["data_offsets"][0] : 8 + n + v["data_offsets"][1]] for k, v in h.items() if k != "__metadata__"}
r = json.load(open(f"{d}/moe1.json"))["recover"]
assert r["train"] == "router" and r["steps"] == 4, r
assert json.load(open(f"{d}/moe2.json"))["train"] == "router"
base = tensors(f"{d}/moe0/model.safetensors")
for out in ("moe1", "moe2"):
    w = tensors(f"{d}/{out}/model.safetensors")
    assert w.keys() == base.keys() and all(w[k] == base[k] for k in w), f"{out}: a non-router weight changed"
    r0, r1 = tensors(f"{d}/moe0/moe_router.safetensors"), tensors(f"{d}/{out}/moe_router.safetensors")
    assert r0.keys() == r1.keys() and all(r0[k] != r1[k] for k in r0 if k.endswith("weight")), f"{out}: routers unchanged"
PY
"$KFUSE" perplexity "$tmp/moe1" -f "$tmp/eval.txt" --ctx 64 --chunks 2 >/dev/null 2>&1 || { echo "FAIL: moefy --recover output does not run"; exit 1; }
echo "moefy --recover, recover --train router ok"
for bad in "--train router" "--resume" "--lr -1" "--batch 0"; do
    # shellcheck disable=SC2086
    if "$KFUSE" recover "$m" --teacher "$m" -f "$train" $bad -o "$tmp/bad" 2>"$tmp/err"; then
        echo "FAIL: $bad accepted"; exit 1
    fi
    [ "$(wc -l <"$tmp/err")" -eq 1 ] || { echo "FAIL: $bad: error is not one line"; cat "$tmp/err"; exit 1; }
done
echo "6 passed, 0 failed"
