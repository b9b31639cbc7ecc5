#!/usr/bin/env bash
# Issue 13 item 5, "make the selection pay", for one model and one task:
#  A. the truncated model + classifier (kfuse probe --export) and its
#     feature-extraction speed against the full model's, in one run
#     (kfuse classify --compare: 1 warm-up each, REPEATS alternating runs, median);
#  B. task-aware FFN compression (kfuse compress --task: the FFN neurons a
#     per-layer probe on FFN features weights most, refitted) against
#     task-agnostic fold (--group ls, refitted) at equal widths, on the task's
#     probe accuracy (residual probe per block of the compressed model) and
#     on WikiText-2 perplexity.
# usage: bench/task_compress_table.sh MODEL TASK [OUT]   TASK = upos | xpos | deprel | sst2
# (SST-2's test split is GLUE's labelled dev set, test.tsv, as in the Dalvi tables.)
# env: MAX_TRAIN (items, default 10000; sst2 3000), MAX_EVAL (2000; sst2 872), MAX_ITER (100),
#      WIDTHS ("0.25 0.5" of each layer's n_ff), EVAL_BYTES (WikiText-2 bytes, 300000), REPEATS (5), THREADS (2),
#      COMMON (folder for what does not depend on the task: the calibration and
#        WikiText-2 slices, the fold models and their perplexities, the
#        original's perplexity; default OUT; one per model, shared by its tasks),
#      ABLATION (1: B also compresses with the ablation ranking, `probe --ablation` on
#        residual features + `compress --task DIR --task-score ablation`: model abl-W),
#      RANDOM_INIT (SEED: part A only, on MODEL re-initialised, `probe --random-init SEED`;
#        classify --compare re-initialises the full model with the same seed); parts A and B on the
#        control: MODEL = the folder `kfuse convert MODEL --random-init SEED -o DIR` writes).
# The original's per-block task accuracy in B is the export probe's own
# (probe_resid/probe.json: the same per-block probes on the same features).
# Writes OUT/summary.tsv and prints it; every step's command is in OUT/commands.txt,
# its user/system/wall seconds in OUT/times.tsv.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
kfuse=${KFUSE:-$root/build/kfuse}
model=$1 task=$2
out=${3:-/tmp/kfuse_task_$(basename "$model")_$task}
shared=$root/../shared
# SST-2 defaults: the Dalvi tables' 3,000 training sentences and the 872 of test.tsv
if [ "$task" = sst2 ]; then mt=${MAX_TRAIN:-3000} me=${MAX_EVAL:-872}; else mt=${MAX_TRAIN:-10000} me=${MAX_EVAL:-2000}; fi
mi=${MAX_ITER:-100} th=${THREADS:-2} rep=${REPEATS:-5}
eb=${EVAL_BYTES:-300000}
case $task in
upos|xpos|deprel) ud=$shared/data/ud-english-ewt col=$(echo "$task" | tr a-z A-Z)
      targs=(--task conllu:$col --train "$ud/en_ewt-ud-train.conllu" --dev "$ud/en_ewt-ud-dev.conllu" --test "$ud/en_ewt-ud-test.conllu")
      test_file=$ud/en_ewt-ud-test.conllu ;;
sst2) sd=$shared/data/sst2
      targs=(--task tsv:label --train "$sd/train.tsv" --dev "$sd/dev.tsv" --test "$sd/test.tsv")
      test_file=$sd/test.tsv ;;
*) echo "task_compress_table: TASK is upos, xpos, deprel or sst2" >&2; exit 1 ;;
esac
common=(--max-train "$mt" --max-eval "$me" --max-iter "$mi" --no-control -t "$th")
com=${COMMON:-$out}
mkdir -p "$out" "$com"
: >"$out/commands.txt"
# Each command and its CPU and wall seconds (OUT/times.tsv: user sys wall command).
run() { echo "$*" >>"$out/commands.txt"; /usr/bin/time -f "%U\t%S\t%e\t$2" -a -o "$out/times.tsv" "$@"; }
: >"$com/calib.txt"
for b in emma dracula frankenstein moby-dick pride-and-prejudice great-expectations; do
    head -c 16000 "$shared/data/corpus/$b.txt" >>"$com/calib.txt"
done
head -c "$eb" "$shared/data/wikitext-2-raw/wiki.test.raw" >"$com/wiki.txt"
init=()
[ -z "${RANDOM_INIT:-}" ] || init=(--random-init "$RANDOM_INIT")

# A. export + speed
[ -s "$out/export/classifier.json" ] ||
    run "$kfuse" probe "$model" "${targs[@]}" "${common[@]}" "${init[@]}" -o "$out/probe_resid" --export "$out/export" --json \
        >/dev/null 2>"$out/probe_resid.err"
[ -s "$out/classify.json" ] ||
    run "$kfuse" classify "$out/export" -f "$test_file" --max-eval "$me" --compare "$model" --repeats "$rep" -t "$th" --json \
    >"$out/classify.json" 2>"$out/classify.err"

summary_a() {
    /usr/bin/python3 - "$out" <<'PY'
import json, sys
c = json.load(open(f"{sys.argv[1]}/classify.json")); b = c["compare"]
ri = "" if b.get("full_random_init") is None else f", random init {b['full_random_init']}"
print(f"# export{ri}: {c['n_layer_kept']} of {c['n_layer_full']} layers, {c['neurons']} neurons, accuracy {c['accuracy']:.4f} "
      f"(probe {c['probe_test_accuracy']:.4f}); extraction median of {b['repeats']}: truncated {b['truncated_tokens_per_s']:.0f} "
      f"tok/s ({b['truncated_rows_per_s']:.0f} rows/s), full {b['full_tokens_per_s']:.0f} tok/s ({b['full_rows_per_s']:.0f} rows/s), "
      f"speedup {b['speedup']:.2f}x, same predictions {b['same_predictions']}/{c['items']}, {c['threads']} threads")
PY
}
if [ -n "${RANDOM_INIT:-}" ]; then summary_a; exit 0; fi

# B. task ranking (FFN features, per-layer probes), then the compressed models
[ -s "$out/probe_ffn/block_weights.npy" ] ||
    run "$kfuse" probe "$model" "${targs[@]}" "${common[@]}" --features ffn --blocks-only -o "$out/probe_ffn" --json \
        >/dev/null 2>"$out/probe_ffn.err"
if [ "${ABLATION:-0}" = 1 ] && [ ! -s "$out/probe_abl/ablation_scores.npy" ]; then
    run "$kfuse" probe "$model" "${targs[@]}" "${common[@]}" --blocks-only --ablation -o "$out/probe_abl" --json \
        >/dev/null 2>"$out/probe_abl.err"
fi
meths="fold task"
[ "${ABLATION:-0}" = 1 ] && meths="fold task abl"
nff=$(/usr/bin/python3 -c "import json,sys; c=json.load(open(sys.argv[1])); print(c['intermediate_size'] if 'intermediate_size' in c else c.get('n_inner') or 4*c['n_embd'])" "$model/config.json")
nl=$(/usr/bin/python3 -c "import json,sys; c=json.load(open(sys.argv[1])); print(c.get('num_hidden_layers') or c['n_layer'])" "$model/config.json")
models="orig:$model"
for f in ${WIDTHS:-0.25 0.5}; do
    w=$(/usr/bin/python3 -c "print(round($f*$nff))")
    ws=$(/usr/bin/python3 -c "print(','.join(['$w']*$nl))")
    for meth in $meths; do
        name=$meth-$w
        case $meth in
        fold) dir=$com extra=(--method fold --group ls) ;;
        task) dir=$out extra=(--task "$out/probe_ffn") ;;
        abl) dir=$out extra=(--task "$out/probe_abl" --task-score ablation) ;;
        esac
        [ -s "$dir/$name.compress.json" ] ||
            run "$kfuse" compress "$model" -f "$com/calib.txt" --tokens 32768 --ctx 256 "${extra[@]}" --widths "$ws" \
                -o "$dir/$name" --json >"$dir/$name.compress.json" 2>/dev/null
        models="$models $name:$dir/$name"
    done
done
# Evaluation: WikiText-2 perplexity and the residual probe per block (test accuracy).
printf 'model\tffn_width\twiki_ppl\tprobe_best_block\tprobe_best_test\tprobe_last_test\n' >"$out/summary.tsv"
[ -e "$out/orig.probe" ] || ln -s probe_resid "$out/orig.probe"
for mm in $models; do
    name=${mm%%:*} path=${mm#*:}
    case $name in task-* | abl-*) pdir=$out ;; *) pdir=$com ;; esac
    [ -s "$pdir/$name.ppl.json" ] || run "$kfuse" perplexity "$path" -f "$com/wiki.txt" --json >"$pdir/$name.ppl.json" 2>/dev/null
    [ -s "$out/$name.probe/probe.json" ] ||
        run "$kfuse" probe "$path" "${targs[@]}" "${common[@]}" --blocks-only -o "$out/$name.probe" --json >/dev/null 2>&1
    /usr/bin/python3 - "$out" "$name" "$nff" "$pdir" >>"$out/summary.tsv" <<'PY'
import json, sys
out, name, nff, pdir = sys.argv[1:]
ppl = json.load(open(f"{pdir}/{name}.ppl.json"))
p = json.load(open(f"{out}/{name}.probe/probe.json"))["result"]["blocks"]
test = p["test"] if isinstance(p, dict) else [b["test"] for b in p]
best = max(range(len(test)), key=lambda b: test[b])
w = nff if name == "orig" else name.split("-")[1]
print(f"{name}\t{w}\t{ppl['ppl']:.3f}\t{best}\t{test[best]:.4f}\t{test[-1]:.4f}")
PY
done
summary_a
cat "$out/summary.tsv"
