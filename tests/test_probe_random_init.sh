#!/usr/bin/env bash
# kfuse probe --random-init SEED probes the same architecture and shape
# re-initialised at random (the untrained control of Dalvi-style findings):
# probe.json records the seed (null for the trained model), the shape and the
# tokenizer's items are the same, and the per-block accuracies differ from the
# trained model's (a run that ignored --random-init would match them exactly).
# kfuse convert --random-init SEED writes that control as a model folder: its
# probe gives the --random-init probe's per-block accuracies exactly.
# ctest-timeout: 600
set -u
: "${KFUSE:?}" "${KF_ROOT:?}"
model="$KF_ROOT/../shared/models/llama-gutenberg-1.4m"
ud="$KF_ROOT/../shared/data/ud-english-ewt/en_ewt-ud-train.conllu"
[ -d "$model" ] && [ -f "$ud" ] || { echo "SKIP: $model or $ud not found"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# dev and test are the first sentences of the training file, so every label
# they hold is in the training split
run() {
  "$KFUSE" probe "${model}" --task conllu:UPOS --train "$ud" --dev "$ud" --test "$ud" --max-train 2000 \
    --max-eval 500 --blocks-only --no-control --max-iter 30 --json "$@" > "$tmp/out.json" 2> "$tmp/err" \
    || { echo "FAIL: kfuse probe $*"; cat "$tmp/err"; exit 1; }
}
run -o "$tmp/trained"
mv "$tmp/out.json" "$tmp/trained.json"
run -o "$tmp/random" --random-init 7
mv "$tmp/out.json" "$tmp/random.json"
"$KFUSE" convert "$model" --random-init 7 -o "$tmp/ri7" 2> "$tmp/err" || { echo "FAIL: convert --random-init"; cat "$tmp/err"; exit 1; }
model="$tmp/ri7" run -o "$tmp/saved"
mv "$tmp/out.json" "$tmp/saved.json"
/usr/bin/python3 - "$tmp/trained.json" "$tmp/random.json" "$tmp/trained/probe.json" "$tmp/random/probe.json" "$tmp/saved.json" <<'PY'
import json, sys
t, r, tf, rf, sv = (json.load(open(p)) for p in sys.argv[1:])
ok = True
def check(cond, what):
    global ok
    print(("ok   " if cond else "FAIL ") + what)
    ok &= bool(cond)
check(t == tf and r == rf, "--json prints what probe.json holds")
check(t["model"]["random_init"] is None, "trained: model.random_init is null")
check(r["model"]["random_init"] == 7, "random: model.random_init is the seed")
check(all(t["model"][k] == r["model"][k] for k in ("arch", "n_layer", "n_embd")), "same architecture and shape")
check(all(t["task"]["splits"][s]["tokens"] == r["task"]["splits"][s]["tokens"] for s in ("train", "dev", "test")),
      "same tokenizer: same token counts per split")
tb, rb = t["result"]["blocks"]["test"], r["result"]["blocks"]["test"]
print("trained", [round(x, 4) for x in tb]); print("random ", [round(x, 4) for x in rb])
check(all(a != b for a, b in zip(tb, rb)), "every block's accuracy differs from the trained model's")
check(max(tb[1:]) > max(rb[1:]), "the trained model's best block above the random one's")
check(sv["result"]["blocks"]["test"] == rb, "convert --random-init 7 saved the model probe --random-init 7 probes")
sys.exit(0 if ok else 1)
PY
