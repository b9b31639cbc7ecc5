#!/usr/bin/env bash
# kfuse compress --task PROBE_DIR (method prune-task): the FFN neurons a
# per-layer probe on FFN features (kfuse probe --features ffn --blocks-only)
# weights most are kept, at the widths given, and refitted. Checked against a
# numpy reference: per layer, score_j = sum_k |W_kj| of block_weights.npy,
# the top w_l (ties: lower index) in increasing order; the compressed model's
# gate/up rows must be the original's rows of exactly those neurons, and every
# layer must have its width. --task-score ablation (probe --ablation, here on
# residual features) keeps the top w_l of ablation_scores.npy the same way.
# Bad task folders (no probe.json, a probe on
# residual features, a probe of another model) fail with one line and write
# nothing.
# ctest-labels: slow
set -u
: "${KFUSE:?}" "${KF_ROOT:?}"
PY=/usr/bin/python3
model="$KF_ROOT/../shared/models/llama-gutenberg-1.4m"
other="$KF_ROOT/../shared/models/gpt2-gutenberg-5.9m"
ud="$KF_ROOT/../shared/data/ud-english-ewt"
corpus="$KF_ROOT/../shared/data/corpus"
[ -d "$model" ] && [ -d "$ud" ] && [ -d "$corpus" ] || { echo "SKIP: shared model or data not found"; exit 77; }
$PY -c 'import numpy' 2>/dev/null || { echo "SKIP: numpy missing"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
tr="$ud/en_ewt-ud-train.conllu"
probe() { # OUT MODEL FEATURES [OPTIONS]
  "$KFUSE" probe "$2" --task conllu:UPOS --train "$tr" --dev "$tr" --test "$tr" --max-train 1500 --max-eval 300 \
    --no-control --blocks-only --max-iter 40 --features "$3" "${@:4}" -t 2 -o "$1" > /dev/null 2> "$tmp/probe.err" ||
    { cat "$tmp/probe.err"; exit 1; }
}
probe "$tmp/pf" "$model" ffn
probe "$tmp/pr" "$model" residual --ablation
head -c 20000 "$corpus/emma.txt" > "$tmp/calib.txt"
"$KFUSE" compress "$model" -f "$tmp/calib.txt" --tokens 4096 --ctx 128 --task "$tmp/pf" --widths 40,90,150,300 \
  -o "$tmp/c" --json > "$tmp/c.json" 2> "$tmp/c.err" || { cat "$tmp/c.err"; exit 1; }
"$KFUSE" compress "$model" -f "$tmp/calib.txt" --tokens 4096 --ctx 128 --task "$tmp/pr" --task-score ablation \
  --widths 40,90,150,300 -o "$tmp/ca" --json > "$tmp/ca.json" 2> "$tmp/ca.err" || { cat "$tmp/ca.err"; exit 1; }
for kind in weight ablation; do
$PY - "$tmp" "$model" "$kind" <<'PYEOF' || exit 1
import json, struct, sys
import numpy as np
tmp, model, kind = sys.argv[1:]
def tensors(path):
    f = open(path, "rb"); n = struct.unpack("<Q", f.read(8))[0]; h = json.loads(f.read(n)); base = 8 + n
    def get(name):
        e = h[name]; a, b = e["data_offsets"]; f.seek(base + a)
        return np.frombuffer(f.read(b - a), np.float32).reshape(e["shape"])
    return get
out = "c" if kind == "weight" else "ca"
orig, comp = tensors(f"{model}/model.safetensors"), tensors(f"{tmp}/{out}/model.safetensors")
if kind == "weight":
    W = np.abs(np.load(f"{tmp}/pf/block_weights.npy").astype(np.float64)).sum(axis=0)
else:
    W = np.load(f"{tmp}/pr/ablation_scores.npy").astype(np.float64)[0]
widths, F, fail = [40, 90, 150, 300], 384, []
rep = json.load(open(f"{tmp}/{out}.json"))
if rep["method"] != "prune-task" or rep["task_score"] != kind or [l["n_ff_after"] for l in rep["layers"]] != widths:
    fail.append(f"method {rep['method']} ({rep['task_score']}), widths {[l['n_ff_after'] for l in rep['layers']]}")
for l, w in enumerate(widths):
    score = W[l * F:(l + 1) * F]
    keep = sorted(sorted(range(F), key=lambda j: (-score[j], j))[:w])
    for t in ("gate_proj", "up_proj"):
        a, b = orig(f"model.layers.{l}.mlp.{t}.weight"), comp(f"model.layers.{l}.mlp.{t}.weight")
        if b.shape != (w, a.shape[1]): fail.append(f"layer {l} {t} shape {b.shape}, want ({w}, {a.shape[1]})")
        elif not np.array_equal(a[keep], b): fail.append(f"layer {l} {t}: rows are not the top-{w} task neurons")
    d = comp(f"model.layers.{l}.mlp.down_proj.weight")
    if d.shape[1] != w: fail.append(f"layer {l} down_proj shape {d.shape}")
src = "block_weights.npy" if kind == "weight" else "ablation_scores.npy"
print(f"prune-task ({kind}): widths {widths} honoured, kept neurons = numpy top-w of {src} in every layer")
if fail:
    print("FAIL: " + "; ".join(fail)); sys.exit(1)
PYEOF
done
fail=0
expect() {
  local name=$1 pattern=$2; shift 2
  "$KFUSE" compress "$model" -f "$tmp/calib.txt" --tokens 4096 --ctx 128 --widths 40,90,150,300 "$@" -o "$tmp/bad" \
    > /dev/null 2> "$tmp/err"
  local rc=$? lines; lines=$(wc -l < "$tmp/err")
  if [ $rc -eq 0 ] || [ "$lines" -ne 1 ] || ! grep -qE -- "$pattern" "$tmp/err" || [ -e "$tmp/bad" ]; then
    echo "FAIL $name: rc=$rc lines=$lines, expected /$pattern/:"; cat "$tmp/err"; fail=1
  else
    echo "ok   $name: $(cat "$tmp/err")"
  fi
}
mkdir "$tmp/empty"
expect no-probe "empty/probe.json" --task "$tmp/empty"
expect residual "pr/probe.json: a probe on residual features; the task ranking needs --features ffn" --task "$tmp/pr"
cp "$tmp/pf/probe.json" "$tmp/empty/probe.json"
expect no-weights "empty/block_weights.npy" --task "$tmp/empty"
$PY -c "
import json; d=json.load(open('$tmp/pf/probe.json')); d['model']['n_layer']=6; json.dump(d, open('$tmp/empty/probe.json','w'))"
expect other-model "a probe of a model of 6 layers, this one has 4" --task "$tmp/empty"
expect method "--task PROBE_DIR goes with --method prune-task" --task "$tmp/pf" --method fold
expect no-ablation "pf/ablation_scores.npy" --task "$tmp/pf" --task-score ablation
expect score-kind "--task-score wants weight\|ablation, not 'probe'" --task "$tmp/pf" --task-score probe
exit $fail
