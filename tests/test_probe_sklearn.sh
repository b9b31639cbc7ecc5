#!/usr/bin/env bash
# kfuse probe on UPOS (UD English EWT, ../shared/data/ud-english-ewt) with
# llama-gutenberg-1.4m against scikit-learn on the features kfuse dumps
# (tests/ref/probe_sklearn.py): for blocks 0, 2 and 4 (embeddings, layer 1's
# and layer 3's output) the test accuracy within 0.5 point of
# LogisticRegression(elasticnet, saga) with the same penalty (observed gaps
# 0.03-0.20), and kfuse's objective at most 1e-4 relative above the objective
# at scikit-learn's solution (observed 0.9e-3 to 1.1e-3 *below*: saga after
# 100 epochs is short of the optimum that kfuse's OWL-QN reaches).
#
# Data: the first 5,000 training words (whole sentences); dev and test: the
# first 3,000 words of the sentences whose tags all occur in that training
# slice (kfuse refuses a test label absent from training).
# Penalty: l1 = 1e-3, l2 = 1e-4, not Dalvi's 1e-5 / 1e-5: on 5,000 words the
# default is nearly unregularised and ill-conditioned. There neither solver
# reaches the optimum in a CI budget (L-BFGS-B on the split-sign problem needs
# ~3,500 iterations; saga after 200 epochs is 8% above it in objective) and
# solutions 1-2% above the optimum differ by more than a point in test
# accuracy, so a gap would measure early stopping, not the probe. With this
# penalty both converge, and the L1 term zeroes about two thirds of the
# weights, so a broken L1 step shows (tests/MUTATIONS.md).
# ctest-labels: slow
# ctest-timeout: 600
set -eu
: "${KFUSE:?}" "${KF_ROOT:?}"
ud=$KF_ROOT/../shared/data/ud-english-ewt
if [ ! -f "$ud/en_ewt-ud-train.conllu" ]; then
    echo "SKIP: $ud not found (the shared data folder sits beside the repository)"
    exit 77
fi
if ! /usr/bin/python3 -c "import sklearn, scipy, numpy" 2> /dev/null; then
    echo "SKIP: /usr/bin/python3 has no scikit-learn (scripts/install-deps.sh --test installs python3-sklearn)"
    exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
/usr/bin/python3 - "$ud" "$tmp" 5000 3000 <<'PY'
import sys
ud, out, n_train, n_eval = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
def sentences(path):
    s = []
    for line in open(path, encoding="utf-8"):
        s.append(line)
        if not line.strip():
            yield s
            s = []
def words(s):  # UPOS of the syntactic words (no ranges 3-4, no empty nodes 8.1)
    return [l.split("\t")[3] for l in s if l.split("\t")[0].isdigit()]
keep, n, tags = [], 0, set()
for s in sentences(f"{ud}/en_ewt-ud-train.conllu"):
    if n + len(words(s)) > n_train:
        break
    keep.append(s)
    n += len(words(s))
    tags |= set(words(s))
open(f"{out}/train.conllu", "w", encoding="utf-8").write("".join(map("".join, keep)))
for split in ("dev", "test"):
    keep, n = [], 0
    for s in sentences(f"{ud}/en_ewt-ud-{split}.conllu"):
        if not set(words(s)) <= tags:
            continue
        if n + len(words(s)) > n_eval:
            break
        keep.append(s)
        n += len(words(s))
    open(f"{out}/{split}.conllu", "w", encoding="utf-8").write("".join(map("".join, keep)))
PY
"$KFUSE" probe "$KF_ROOT/models/llama-gutenberg-1.4m" --task conllu:UPOS --train "$tmp/train.conllu" \
    --dev "$tmp/dev.conllu" --test "$tmp/test.conllu" --blocks-only --no-control --l1 1e-3 --l2 1e-4 -o "$tmp/out"
/usr/bin/python3 "$KF_ROOT/tests/ref/probe_sklearn.py" "$tmp/out" 0,2,4 0.5 100 1e-4
