#!/usr/bin/env bash
# kfuse probe --export + kfuse classify: the exported classifier, run on the
# model truncated after LayerSelector's last block, reproduces the probe's
# final test predictions exactly: the same accuracy as probe.json, the same
# confusion matrix, and the same predictions as a numpy reference that
# applies classifier.json to the probe's own feature file (full model). The
# exported model has exactly the layers the kept blocks need
# (residual: blocks_kept - 1, at least 1). --compare MODEL predicts the same
# on the full model's features; for a --random-init probe, --compare
# re-initialises MODEL with the classifier's seed and still predicts the same
# (without it the stored model's features give other predictions). Then bad input: a classifier file that is not
# one, a test label the classifier does not know: one line, nothing written.
# ctest-labels: slow
# ctest-timeout: 900
set -u
: "${KFUSE:?}" "${KF_ROOT:?}"
PY=/usr/bin/python3
model="$KF_ROOT/../shared/models/llama-gutenberg-1.4m"
ud="$KF_ROOT/../shared/data/ud-english-ewt"
[ -d "$model" ] && [ -d "$ud" ] || { echo "SKIP: shared model or UD EWT not found"; exit 77; }
$PY -c 'import numpy' 2>/dev/null || { echo "SKIP: numpy missing"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$KFUSE" probe "$model" --task conllu:UPOS --train "$ud/en_ewt-ud-train.conllu" --dev "$ud/en_ewt-ud-dev.conllu" \
  --test "$ud/en_ewt-ud-test.conllu" --max-train 8000 --max-eval 300 --no-control --grid 10,50,100 --max-iter 60 \
  -t 2 -o "$tmp/p" --export "$tmp/e" > "$tmp/probe.out" 2> "$tmp/probe.err" || { cat "$tmp/probe.err"; exit 1; }
"$KFUSE" classify "$tmp/e" -f "$ud/en_ewt-ud-test.conllu" --max-eval 300 --predictions "$tmp/pred.tsv" \
  --compare "$model" --repeats 1 -t 2 --json > "$tmp/classify.json" 2> "$tmp/classify.err" ||
  { cat "$tmp/classify.err"; exit 1; }
$PY - "$tmp" <<'PYEOF' || exit 1
import json, sys
import numpy as np
tmp = sys.argv[1]
probe = json.load(open(f"{tmp}/p/probe.json"))["result"]
cl = json.load(open(f"{tmp}/e/classifier.json"))
out = json.load(open(f"{tmp}/classify.json"))
cfg = json.load(open(f"{tmp}/e/model/config.json"))
labels = cl["task"]["labels"]
fail = []
kept = probe["layer_selector"]["blocks_kept"]
want_layers = max(1, kept - 1)
if cfg["num_hidden_layers"] != want_layers or cl["model"]["n_layer_kept"] != want_layers:
    fail.append(f"exported {cfg['num_hidden_layers']} layers, LayerSelector kept blocks 0-{kept-1}: want {want_layers}")
if max(c for c in cl["columns"]) < (kept - 1) * 128:
    fail.append("no selected neuron in the last kept block: the off-by-one truncation would go unseen")
# numpy reference on the probe's full-model features
X = np.load(f"{tmp}/p/features/test.npy", mmap_mode="r")
Z = (np.asarray(X[:, cl["columns"]], np.float64) - np.array(cl["mean"])) * np.array(cl["inv_std"])
Z = Z.astype(np.float32)
W = np.array(cl["weights"], np.float32); b = np.array(cl["bias"], np.float32)
ref = np.argmax(Z.astype(np.float64) @ W.T.astype(np.float64) + b, axis=1)
rows = [l.rstrip("\n").split("\t") for l in open(f"{tmp}/pred.tsv")]
got = np.array([labels.index(r[2]) for r in rows]); gold = np.array([labels.index(r[1]) for r in rows])
ylab = np.load(f"{tmp}/p/features/test_labels.npy")
if len(got) != len(ref) or not np.array_equal(gold, ylab):
    fail.append(f"{len(got)} predictions for {len(ref)} rows, or other gold labels")
else:
    nd = int((got != ref).sum())
    if nd: fail.append(f"{nd} of {len(ref)} predictions differ from the numpy reference")
    conf = np.zeros((len(labels), len(labels)), int)
    for g, p in zip(gold, got): conf[g, p] += 1
    if conf.tolist() != probe["final"]["confusion"]: fail.append("confusion matrix differs from probe.json")
if out["accuracy"] != probe["final"]["test"]:
    fail.append(f"accuracy {out['accuracy']!r} != probe.json final test {probe['final']['test']!r}")
if out["compare"]["same_predictions"] != out["items"]:
    fail.append(f"full model: {out['compare']['same_predictions']} of {out['items']} predictions the same")
print(f"layers {want_layers} of {cl['model']['n_layer_full']}, {len(cl['columns'])} neurons, accuracy {out['accuracy']:.6f}"
      f" = probe {probe['final']['test']:.6f}, numpy reference agrees on {len(ref)} rows, "
      f"speedup {out['compare']['speedup']:.2f}x")
if fail:
    print("FAIL: " + "; ".join(fail)); sys.exit(1)
PYEOF
# --random-init: the classifier records the seed; --compare MODEL re-initialises MODEL with it.
"$KFUSE" probe "$model" --task conllu:UPOS --train "$ud/en_ewt-ud-train.conllu" --dev "$ud/en_ewt-ud-dev.conllu" \
  --test "$ud/en_ewt-ud-test.conllu" --max-train 8000 --max-eval 300 --no-control --grid 10,100 --max-iter 20 \
  --random-init 7 -t 2 -o "$tmp/rp" --export "$tmp/re" > /dev/null 2> "$tmp/rprobe.err" || { cat "$tmp/rprobe.err"; exit 1; }
"$KFUSE" classify "$tmp/re" -f "$ud/en_ewt-ud-test.conllu" --max-eval 300 --compare "$model" --repeats 1 -t 2 --json \
  > "$tmp/rclassify.json" 2> "$tmp/rclassify.err" || { cat "$tmp/rclassify.err"; exit 1; }
$PY - "$tmp" <<'PYEOF' || exit 1
import json, sys
tmp = sys.argv[1]
probe = json.load(open(f"{tmp}/rp/probe.json"))["result"]
cl = json.load(open(f"{tmp}/re/classifier.json"))
out = json.load(open(f"{tmp}/rclassify.json"))
fail = []
if cl["model"]["random_init"] != 7: fail.append(f"classifier.json random_init {cl['model']['random_init']!r}, want 7")
if out["compare"]["full_random_init"] != 7: fail.append(f"classify full_random_init {out['compare']['full_random_init']!r}")
if out["accuracy"] != probe["final"]["test"]:
    fail.append(f"accuracy {out['accuracy']!r} != probe.json final test {probe['final']['test']!r}")
if out["compare"]["same_predictions"] != out["items"]:
    fail.append(f"random-init full model: {out['compare']['same_predictions']} of {out['items']} predictions the same")
print(f"random init 7: {cl['model']['n_layer_kept']} of {cl['model']['n_layer_full']} layers, accuracy {out['accuracy']:.6f}, "
      f"same predictions {out['compare']['same_predictions']} of {out['items']}")
if fail:
    print("FAIL: " + "; ".join(fail)); sys.exit(1)
PYEOF
fail=0
# bad input: one line, nothing written
expect() {
  local name=$1 pattern=$2; shift 2
  "$KFUSE" classify "$@" --predictions "$tmp/bad.tsv" > /dev/null 2> "$tmp/err"
  local rc=$? lines; lines=$(wc -l < "$tmp/err")
  if [ $rc -eq 0 ] || [ "$lines" -ne 1 ] || ! grep -qE -- "$pattern" "$tmp/err" || [ -e "$tmp/bad.tsv" ]; then
    echo "FAIL $name: rc=$rc lines=$lines, expected /$pattern/:"; cat "$tmp/err"; fail=1
  else
    echo "ok   $name: $(cat "$tmp/err")"
  fi
}
mkdir "$tmp/b"; cp -r "$tmp/e/model" "$tmp/b/model"; echo '{"schema": "other"}' > "$tmp/b/classifier.json"
expect not-classifier "classifier.json: not a kfuse-classifier/1 file" "$tmp/b" -f "$ud/en_ewt-ud-test.conllu"
$PY -c "
import json,sys; c=json.load(open('$tmp/e/classifier.json')); c['weights']=c['weights'][:-1]
json.dump(c, open('$tmp/b/classifier.json','w'))"
expect short-weights "classifier.json: \"weights\" is not [0-9]+ rows" "$tmp/b" -f "$ud/en_ewt-ud-test.conllu"
printf '1\tHi\thi\tNOTATAG\t_\t_\t0\troot\t_\t_\n\n' > "$tmp/unk.conllu"
expect unknown-label "unk.conllu:1: label 'NOTATAG'" "$tmp/e" -f "$tmp/unk.conllu"
exit $fail
