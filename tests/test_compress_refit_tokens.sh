#!/usr/bin/env bash
# kfuse compress with refit needs more calibration tokens than kept neurons
# (issue 15, the 7B-shape KL 1.5): with fewer, the (k, k) second moment of the
# kept activations has rank <= tokens, the least-squares down projection
# interpolates the calibration sample (in-sample rel_err ~1e-5) and breaks
# the model on other text. Such a layer fails before anything is written,
# one line naming the layer, its kept width and the token count; --no-refit
# and enough tokens both still compress.
set -eu
: "${KFUSE:?}" "${KF_ROOT:?}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
head -c 60000 "$KF_ROOT/data/calib/calib.txt" > "$tmp/calib.txt"
model="$KF_ROOT/models/llama-gutenberg-1.4m"
few=(-f "$tmp/calib.txt" --method fold --widths 300,384,384,384 --tokens 256 --ctx 128)
if "$KFUSE" compress "$model" "${few[@]}" -o "$tmp/few" > /dev/null 2> "$tmp/err"; then
  echo "FAIL: refit of 300 kept neurons from 256 tokens was accepted"; exit 1
fi
[ "$(wc -l < "$tmp/err" | tr -d ' ')" -ge 1 ] && tail -n 1 "$tmp/err" |
  grep -q "refit: layer 0 keeps 300 neurons from [0-9]* calibration tokens" ||
  { echo "FAIL: message"; cat "$tmp/err"; exit 1; }
[ ! -e "$tmp/few" ] || { echo "FAIL: output written for an underdetermined refit"; exit 1; }
"$KFUSE" compress "$model" "${few[@]}" --no-refit -o "$tmp/norefit" > /dev/null 2>&1 ||
  { echo "FAIL: --no-refit with few tokens"; exit 1; }
"$KFUSE" compress "$model" -f "$tmp/calib.txt" --method fold --widths 300,384,384,384 --tokens 2048 --ctx 128 \
  -o "$tmp/enough" > /dev/null 2>&1 || { echo "FAIL: refit with 2048 tokens"; exit 1; }
echo PASS
