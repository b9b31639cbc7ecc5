#!/usr/bin/env bash
# kfuse analyze under `mpirun -np 2` (Debian Open MPI) equals the
# single-process run: same tokens, CKA, Block Influence, redundancy curves,
# per-layer thresholds and FFN statistics within float tolerance (rel 1e-4),
# and the same k-means labels (the sampled activations are the same tokens).
# Skips (exit 77) when kfuse was built without MPI or mpirun is absent.
set -eu
: "${KFUSE:?}" "${KF_ROOT:?}" "${KF_BUILD:?}"
corpus="$KF_ROOT/data/calib/calib.txt" # starts with alice-in-wonderland.txt
command -v mpirun > /dev/null || { echo "SKIP: mpirun not installed"; exit 77; }
grep -q 'KF_HAVE_MPI' "$KF_BUILD/CMakeFiles/kfuse.dir/flags.make" 2> /dev/null || { echo "SKIP: kfuse built without MPI"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
head -c 80000 "$corpus" > "$tmp/calib.txt"
args=(analyze "$KF_ROOT/models/llama-gutenberg-1.4m" -f "$tmp/calib.txt" --tokens 3072 --ctx 128 --batch 2
      --sample 256 --k 4 --context-tokens 512)
OMP_NUM_THREADS=1 "$KFUSE" "${args[@]}" -o "$tmp/one" > /dev/null
# Open MPI's own start-up allocations (and its dlopen'd plugins) are never
# freed and LeakSanitizer reports them; kfuse's leaks are checked by the
# single-process runs, so leak detection is off for the ranks only.
OMP_NUM_THREADS=1 ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" mpirun --allow-run-as-root --oversubscribe -np 2 "$KFUSE" "${args[@]}" -o "$tmp/two" > /dev/null
/usr/bin/python3 - "$tmp/one/analysis.json" "$tmp/two/analysis.json" <<'PY'
import json, sys
import numpy as np
a, b = (json.load(open(p)) for p in sys.argv[1:3])
assert a["calibration"]["ranks"] == 1 and b["calibration"]["ranks"] == 2
assert a["calibration"]["n_tokens"] == b["calibration"]["n_tokens"]
def close(x, y, what, rtol=1e-4, atol=1e-6):
    x, y = np.array(x, dtype=float), np.array(y, dtype=float)
    assert x.shape == y.shape, (what, x.shape, y.shape)
    assert np.allclose(x, y, rtol=rtol, atol=atol, equal_nan=True), f"{what}: max diff {np.nanmax(np.abs(x - y))}"
close(a["layers"]["cka"], b["layers"]["cka"], "cka")
close(a["layers"]["block_influence"], b["layers"]["block_influence"], "block influence")
for k in ("ffn", "resid", "resid_all"):
    close(a["redundancy"][k], b["redundancy"][k], "redundancy " + k)
for ea, eb in zip(a["thresholds"]["layers"], b["thresholds"]["layers"]):
    close(ea["err_curve"], eb["err_curve"], "threshold error curve", rtol=1e-3)
    assert ea["t"] == eb["t"] and ea["width"] == eb["width"], (ea["t"], eb["t"])
for na, nb in zip(a["neurons"], b["neurons"]):
    close([na["act_freq_mean"], na["mean_abs_act"]], [nb["act_freq_mean"], nb["mean_abs_act"]], "neuron stats")
for ca, cb in zip(a["clusters"]["layers"], b["clusters"]["layers"]):
    for kind in ("activation", "weight"):
        assert ca[kind]["labels"] == cb[kind]["labels"], f"k-means {kind} labels differ"
print("2-rank analysis equals the single-process run")
print("1 passed, 0 failed")
PY
