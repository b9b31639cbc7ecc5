#!/usr/bin/env bash
# kfuse compress under --max-memory (issue 15): each layer's calibration pass
# runs from the residual stream cached on disk, and the compressed model is
# byte for byte the one of --recompute (every pass from the embeddings), for
# fold (ls groups, refit) and for prune-wanda; a plan line comes first. A cap
# below one layer's statistics fails before any work: one line naming the
# memory needed, non-zero exit, no output. A BF16 model stays BF16 in memory,
# each layer transformed in fp32 and stored back: the result equals the one
# from an fp32 copy of the same weights (prune-magnitude on every layer;
# fold with refit on layer 0, whose input does not depend on stored rounding).
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
# Byte equality needs the same forward pass on both: KF_KERNELS=exact keeps
# BF16 prefill on fp32 tiles (oneDNN's BF16 matmul rounds activations to BF16;
# tests/test_bf16_gemm_cli.sh checks that path).
export KF_KERNELS=exact
"$KFUSE" convert "$model" -o "$tmp/bf16" --dtype bf16 > /dev/null 2>&1
"$KFUSE" convert "$tmp/bf16" -o "$tmp/bf16-as-f32" --dtype f32 > /dev/null 2>&1
for run in "--method prune-magnitude --no-refit --widths 96,200,64,250" \
           "-f $tmp/calib.txt --method fold --widths 96,384,384,384 --tokens 2048 --ctx 128"; do
  for src in bf16 bf16-as-f32; do
    # shellcheck disable=SC2086
    "$KFUSE" compress "$tmp/$src" $run --dtype bf16 -o "$tmp/$src-out" > /dev/null 2>&1
  done
  cmp "$tmp/bf16-out/model.safetensors" "$tmp/bf16-as-f32-out/model.safetensors" ||
    { echo "FAIL: kept BF16 differs from the fp32 copy: $run"; exit 1; }
  rm -rf "$tmp/bf16-out" "$tmp/bf16-as-f32-out"
done
echo PASS
