#!/usr/bin/env bash
# kfuse moefy --max-memory (issue 15): with a cap that puts each layer in its
# own statistics pass, the MoEfied model is byte for byte the one-pass
# model's, for the coact and fold splits (statistics-driven); a cap below one
# layer's statistics fails before any work: one line naming the memory
# needed, non-zero exit, no output.
# ctest-timeout: 300
set -eu
: "${KFUSE:?}" "${KF_ROOT:?}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
head -c 60000 "$KF_ROOT/data/calib/calib.txt" > "$tmp/calib.txt"
model="$KF_ROOT/models/llama-gutenberg-1.4m"
for split in coact fold; do
  args=(-f "$tmp/calib.txt" --experts 8 --split "$split" --tokens 2048 --ctx 128 --router-tokens 512 --epochs 2)
  "$KFUSE" moefy "$model" "${args[@]}" --max-memory 1G -o "$tmp/$split-one" > /dev/null 2> "$tmp/one.err"
  grep -q "plan: 1 statistics pass," "$tmp/one.err" || { echo "FAIL: $split: one-pass plan"; cat "$tmp/one.err"; exit 1; }
  "$KFUSE" moefy "$model" "${args[@]}" --max-memory 5M -o "$tmp/$split-cap" > /dev/null 2> "$tmp/cap.err"
  grep -q "plan: 4 statistics passes (layer groups)" "$tmp/cap.err" ||
    { echo "FAIL: $split: grouped plan"; cat "$tmp/cap.err"; exit 1; }
  cmp "$tmp/$split-one/model.safetensors" "$tmp/$split-cap/model.safetensors" ||
    { echo "FAIL: $split: layer groups give another model"; exit 1; }
done
if "$KFUSE" moefy "$model" -f "$tmp/calib.txt" --experts 8 --split fold --max-memory 1M -o "$tmp/small" \
  > /dev/null 2> "$tmp/small.err"; then
  echo "FAIL: a 1M cap was accepted"; exit 1
fi
[ "$(wc -l < "$tmp/small.err")" -eq 1 ] || { echo "FAIL: expected one line:"; cat "$tmp/small.err"; exit 1; }
grep -q "too small: one layer needs [0-9.]* MiB" "$tmp/small.err" || { echo "FAIL: message"; cat "$tmp/small.err"; exit 1; }
[ ! -e "$tmp/small" ] || { echo "FAIL: output written under a too-small cap"; exit 1; }
echo PASS
