#!/usr/bin/env bash
# docs/FINDINGS.md "Task-specific redundancy": Dalvi et al.'s pipeline
# (`kfuse probe`) for each model, trained and re-initialised at random
# (--random-init, the untrained control of the same shape and tokenizer), on
# UD English EWT UPOS, XPOS, DEPREL and SST-2. Runs one probe at a time.
#
#   bench/probe_findings.sh OUT_DIR
#
# Each run writes OUT_DIR/<model>-<init>-<task>/probe.json; OUT_DIR/commands.txt
# lists every command as run. Then:
#   /usr/bin/python3 bench/probe_findings_table.py OUT_DIR
# Caps (environment): MAX_TRAIN (words; 150000 = Dalvi's cap), MAX_EVAL (words
# of dev and of test), SST_TRAIN / SST_EVAL (rows), MAX_ITER (solver
# iterations per probe), GRID (feature-selection percentages), THREADS,
# MODELS (folder names under ../shared/models), TASKS (upos xpos deprel sst2),
# INITS (trained random), INIT_SEED.
set -euo pipefail
out=${1:?usage: bench/probe_findings.sh OUT_DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
kfuse=${KFUSE:-$root/build/kfuse}
shared=${SHARED:-$root/../shared}
ud=$shared/data/ud-english-ewt
sst=$shared/data/sst2
: "${MAX_TRAIN:=150000}" "${MAX_EVAL:=0}" "${SST_TRAIN:=0}" "${SST_EVAL:=0}" "${MAX_ITER:=500}"
: "${GRID:=1,2,3,5,10,15,20,30,50,75,100}" "${THREADS:=2}" "${INIT_SEED:=1}"
: "${MODELS:=llama-gutenberg-6.5m gpt2-gutenberg-5.9m}" "${TASKS:=upos xpos deprel sst2}" "${INITS:=trained random}"
mkdir -p "$out"
for model in $MODELS; do
  for init in $INITS; do
    for task in $TASKS; do
      dir=$out/$model-$init-$task
      [ -f "$dir/probe.json" ] && continue
      args=(probe "$shared/models/$model" -t "$THREADS" --max-iter "$MAX_ITER" --grid "$GRID" -o "$dir")
      case $task in
        upos|xpos|deprel)
          args+=(--task "conllu:${task^^}" --train "$ud/en_ewt-ud-train.conllu" --dev "$ud/en_ewt-ud-dev.conllu"
                 --test "$ud/en_ewt-ud-test.conllu" --max-train "$MAX_TRAIN" --max-eval "$MAX_EVAL") ;;
        sst2)
          args+=(--task tsv:label --train "$sst/train.tsv" --dev "$sst/dev.tsv" --test "$sst/test.tsv"
                 --max-train "$SST_TRAIN" --max-eval "$SST_EVAL") ;;
        *) echo "probe_findings.sh: unknown task $task" >&2; exit 2 ;;
      esac
      [ "$init" = random ] && args+=(--random-init "$INIT_SEED")
      echo "kfuse ${args[*]}" | sed "s#$shared#../shared#g; s#$out/##" >> "$out/commands.txt"
      "$kfuse" "${args[@]}" > "$dir.log" 2> "$dir.err" || { cat "$dir.err" >&2; exit 1; }
      rm -rf "$dir/features"
    done
  done
done
