#!/usr/bin/env bash
# kfuse compress under --max-memory (issue 15): each layer's calibration pass
# runs from the residual stream cached on disk, and the compressed model is
# byte for byte the one of --recompute (every pass from the embeddings), for
# fold (ls groups, refit) and for prune-wanda; a plan line comes first. A cap
# below one layer's statistics fails before any work: one line naming the
# memory needed, non-zero exit, no output.
# ctest-timeout: 300
set -eu
: "${KFUSE:?}" "${KF_ROOT:?}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
head -c 60000 "$KF_ROOT/data/calib/calib.txt" > "$tmp/calib.txt"
model="$KF_ROOT/models/llama-gutenberg-1.4m"
for method in fold prune-wanda; do
  args=(-f "$tmp/calib.txt" --method "$method" --widths 96,200,64,250 --tokens 2048 --ctx 128)
  "$KFUSE" compress "$model" "${args[@]}" --max-memory 64M -o "$tmp/$method-cached" > /dev/null 2> "$tmp/err"
  grep -q "plan: 4 calibration passes (one per layer changed, each from the residual stream cached on disk)" \
    "$tmp/err" || { echo "FAIL: $method: no plan line"; cat "$tmp/err"; exit 1; }
  "$KFUSE" compress "$model" "${args[@]}" --recompute -o "$tmp/$method-full" > /dev/null 2> /dev/null
  cmp "$tmp/$method-cached/model.safetensors" "$tmp/$method-full/model.safetensors" ||
    { echo "FAIL: $method: the cached residual stream gives another model"; exit 1; }
done
if "$KFUSE" compress "$model" -f "$tmp/calib.txt" --method fold --ffn-keep 0.5 --max-memory 1M -o "$tmp/small" \
  > /dev/null 2> "$tmp/small.err"; then
  echo "FAIL: a 1M cap was accepted"; exit 1
fi
[ "$(wc -l < "$tmp/small.err")" -eq 1 ] || { echo "FAIL: expected one line:"; cat "$tmp/small.err"; exit 1; }
grep -q "too small: layer [0-9]* needs [0-9.]* MiB" "$tmp/small.err" || { echo "FAIL: message"; cat "$tmp/small.err"; exit 1; }
[ ! -e "$tmp/small" ] || { echo "FAIL: output written under a too-small cap"; exit 1; }
echo PASS
