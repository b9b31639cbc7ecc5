#!/usr/bin/env bash
# A statistics file remembers the windows it was gathered on (calib/): kfuse
# compress --stats and kfuse moefy --stats with statistics from `kfuse analyze
# --ctx 128` refuse a run at ctx 256 with one line naming the file and both
# protocols, and write nothing; the same file serves a run at ctx 128.
set -eu
: "${KFUSE:?}" "${KF_ROOT:?}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
m="$KF_ROOT/models/llama-gutenberg-1.4m"
c="$KF_ROOT/data/calib/calib.txt"
"$KFUSE" analyze "$m" -f "$c" --tokens 2048 --ctx 128 -o "$tmp/an" >/dev/null 2>&1
s="$tmp/an/stats.kfs"
want="$s was gathered with ctx 128 with BOS 1; this run uses ctx 256 with BOS 1"

expect_refusal() { # what, command...
    local what=$1
    shift
    if "$@" 2>"$tmp/err.txt"; then echo "FAIL: $what accepted statistics of other windows"; exit 1; fi
    [ "$(wc -l <"$tmp/err.txt")" -eq 1 ] || { echo "FAIL: $what: not one line:"; cat "$tmp/err.txt"; exit 1; }
    grep -qF "$want" "$tmp/err.txt" || { echo "FAIL: $what: '$(cat "$tmp/err.txt")' does not say '$want'"; exit 1; }
}
expect_refusal compress "$KFUSE" compress "$m" -f "$c" --tokens 2048 --ctx 256 --method fold --ffn-keep 0.5 \
    --stats "$s" -o "$tmp/fold256"
[ ! -e "$tmp/fold256" ] || { echo "FAIL: compress wrote output after the refusal"; exit 1; }
expect_refusal moefy "$KFUSE" moefy "$m" -f "$c" --ctx 256 --experts 4 --split coact --router similarity \
    --stats "$s" -o "$tmp/moe256"
[ ! -e "$tmp/moe256" ] || { echo "FAIL: moefy wrote output after the refusal"; exit 1; }

"$KFUSE" compress "$m" -f "$c" --tokens 2048 --ctx 128 --method fold --ffn-keep 0.5 --stats "$s" \
    -o "$tmp/fold128" >/dev/null 2>&1 || { echo "FAIL: compress refused statistics of its own windows"; exit 1; }
[ -f "$tmp/fold128/model.safetensors" ] || { echo "FAIL: no model from the matching statistics"; exit 1; }
echo OK
