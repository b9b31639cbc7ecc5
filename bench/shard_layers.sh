#!/usr/bin/env bash
# analyze on one process vs `mpirun -np 2` (batches split) vs `mpirun -np 2
# --shard-layers` (each rank also holds only its layers' FFN statistics):
# wall time, each process's CPU time (user + sys) and peak RSS
# (/usr/bin/time -v) and the FFN
# statistics bytes each rank reports (analysis.json). One thread per rank.
# Usage: bench/shard_layers.sh [MODEL] [TOKENS]   (from the repository root,
# kfuse built with MPI in build/)
set -euo pipefail
model=${1:-models/llama-gutenberg-6.5m}
tokens=${2:-16384}
kfuse=${KFUSE:-build/kfuse}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
args=(analyze "$model" -f data/calib/calib.txt --tokens "$tokens")
mpi=(mpirun --allow-run-as-root --oversubscribe -np 2)
# each process under /usr/bin/time, its report named by its rank
cat > "$tmp/timed.sh" <<'SH'
#!/bin/sh
out=$1; shift
exec /usr/bin/time -v -o "$out.${OMPI_COMM_WORLD_RANK:-0}" "$@"
SH
chmod +x "$tmp/timed.sh"
run() { # name, then the command before kfuse
  local name=$1; shift
  local t0=$(date +%s.%N)
  OMP_NUM_THREADS=1 "$@" "$tmp/timed.sh" "$tmp/$name.time" "$kfuse" "${args[@]}" ${EXTRA:-} -o "$tmp/$name" \
    > /dev/null 2> "$tmp/$name.err"
  local wall=$(echo "$(date +%s.%N) - $t0" | bc)
  local rss=$(cat "$tmp/$name".time.* | awk -F': ' '/Maximum resident/ {printf "%s%.1f", s, $2 / 1024; s=" / "}')
  local cpu=$(cat "$tmp/$name".time.* | awk -F': ' '/User time/ {u=$2} /System time/ {printf "%s%.1f", s, u + $2; s=" / "}')
  /usr/bin/python3 - "$tmp/$name/analysis.json" "$name" "$wall" "$rss" "$cpu" <<'PY'
import json, sys
a = json.load(open(sys.argv[1]))
c, t = a["calibration"], a["timing"]
mb = " / ".join(f"{b / 1e6:.2f}" for b in c["rank_ffn_stats_bytes"])
print(f"| {sys.argv[2]} | {c['ranks']} | {float(sys.argv[3]):.2f} | {c['record_seconds']:.2f} | "
      f"{t['analysis_seconds']:.2f} | {sys.argv[5]} | {sys.argv[4]} | {mb} | {c['resid_stats_bytes'] / 1e6:.2f} |")
PY
}
echo "| run | ranks | wall s | record s | analysis s | CPU s per process | peak RSS MB per process | FFN statistics MB per rank | residual statistics MB (every rank) |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
run np1 env
run np2 "${mpi[@]}"
EXTRA=--shard-layers run np2-shard "${mpi[@]}"
