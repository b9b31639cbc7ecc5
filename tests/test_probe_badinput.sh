#!/usr/bin/env bash
# kfuse probe on bad task files: each case fails with one line naming the
# file, the line and the problem, and leaves nothing at -o DIR. Cases: a
# CoNLL-U word line with missing columns, a test label absent from training,
# an empty sentence (comments without words; a double blank line), a '_'
# label, a CoNLL-U column that does not exist; a TSV without the label
# column, a row with missing columns, an empty sentence, a test label absent
# from training.
set -u
: "${KFUSE:?}" "${KF_ROOT:?}"
model="$KF_ROOT/../shared/models/llama-gutenberg-1.4m"
[ -d "$model" ] || { echo "SKIP: $model not found"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
w() { printf '%s\t%s\t%s\t%s\t%s\t_\t%s\t%s\t_\t_\n' "$@"; } # ID FORM LEMMA UPOS XPOS HEAD DEPREL
good() {
  printf '# sent_id = 1\n'; w 1 The the DET DT 2 det; w 2 dog dog NOUN NN 3 nsubj; w 3 barks bark VERB VBZ 0 root
  printf '\n'; w 1 Cats cat NOUN NNS 2 nsubj; w 2 sleep sleep VERB VBP 0 root; printf '\n'
}
good > "$tmp/train.conllu"
good > "$tmp/dev.conllu"
# expect NAME ARGS... : run with -o, check exit != 0, one line, the pattern in it, no output dir
expect() {
  local name=$1 pattern=$2; shift 2
  local out="$tmp/out-$name"
  "$KFUSE" probe "$model" "$@" -o "$out" > "$tmp/stdout" 2> "$tmp/stderr"
  local rc=$?
  local lines; lines=$(wc -l < "$tmp/stderr")
  if [ $rc -eq 0 ] || [ "$lines" -ne 1 ] || ! grep -qE -- "$pattern" "$tmp/stderr" || [ -e "$out" ]; then
    echo "FAIL $name: rc=$rc lines=$lines, expected /$pattern/, output dir $( [ -e "$out" ] && echo exists || echo absent):"
    cat "$tmp/stderr"; fail=1
  else
    echo "ok   $name: $(cat "$tmp/stderr")"
  fi
}
conllu() { expect "$1" "$2" --task "${4:-conllu:UPOS}" --train "$tmp/train.conllu" --dev "$tmp/dev.conllu" --test "$3"; }

{ good; printf '1\tShort\tshort\tADJ\n\n'; } > "$tmp/cols.conllu"
conllu missing-columns "cols.conllu:9: 4 columns on a word line \(CoNLL-U has 10" "$tmp/cols.conllu"
{ good; w 1 Wow wow INTJ UH 0 root; printf '\n'; } > "$tmp/unknown.conllu"
conllu unknown-label "unknown.conllu:9: label 'INTJ' does not occur in the training split" "$tmp/unknown.conllu"
{ good; printf '# sent_id = 3\n# text = \n\n'; } > "$tmp/empty.conllu"
conllu empty-sentence "empty.conllu:9: empty sentence" "$tmp/empty.conllu"
{ good; printf '\n'; } > "$tmp/blank.conllu"
conllu double-blank "blank.conllu:9: empty sentence" "$tmp/blank.conllu"
{ good; w 1 Hm hm _ UH 0 root; printf '\n'; } > "$tmp/under.conllu"
conllu underscore-label "under.conllu:9: no UPOS value" "$tmp/under.conllu"
conllu no-such-column "no such CoNLL-U label column" "$tmp/dev.conllu" conllu:POS

printf 'sentence\tlabel\na fine film\t1\na dull film\t0\n' > "$tmp/train.tsv"
cp "$tmp/train.tsv" "$tmp/dev.tsv"
tsv() { expect "$1" "$2" --task "${4:-tsv:label}" --train "$tmp/train.tsv" --dev "$tmp/dev.tsv" --test "$3"; }
tsv no-label-column "train.tsv:1: the header has no column 'polarity'" "$tmp/dev.tsv" tsv:polarity
printf 'sentence\tlabel\ngood\t1\nbad\n' > "$tmp/short.tsv"
tsv tsv-missing-column "short.tsv:3: 1 columns, the header has 2" "$tmp/short.tsv"
printf 'sentence\tlabel\ngood\t1\n  \t0\n' > "$tmp/empty.tsv"
tsv tsv-empty-sentence "empty.tsv:3: empty sentence" "$tmp/empty.tsv"
printf 'sentence\tlabel\ngood\t1\nmeh\t2\n' > "$tmp/unk.tsv"
tsv tsv-unknown-label "unk.tsv:3: label '2' does not occur in the training split" "$tmp/unk.tsv"
ok3=(--task conllu:UPOS --train "$tmp/train.conllu" --dev "$tmp/dev.conllu" --test "$tmp/dev.conllu")
expect ablation-export "--ablation and --export: run them as two probes" "${ok3[@]}" --ablation --export "$tmp/out-ablation-export"
expect ablation-agg "--ablation's probe reads the last sub-word: --agg last" "${ok3[@]}" --ablation --agg mean
exit $fail
