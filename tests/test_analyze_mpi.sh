#!/usr/bin/env bash
# kfuse analyze under `mpirun -np 2` (Debian Open MPI) equals the
# single-process run: same tokens, CKA, Block Influence, redundancy curves,
# per-layer thresholds and FFN statistics within float tolerance (rel 1e-4),
# and the same k-means labels (the sampled activations are the same tokens).
# With --shard-layers (each rank holds only its layers' FFN statistics): the
# same analysis.json numbers and stats.kfs accumulators as the single
# process, and each rank's reported FFN statistics bytes about half of the
# single process's (they add up to it); compress --stats with the sharded
# run's stats.kfs writes the same model as with the single process's.
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
mpi=(mpirun --allow-run-as-root --oversubscribe -np 2)
OMP_NUM_THREADS=1 ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" "${mpi[@]}" "$KFUSE" "${args[@]}" -o "$tmp/two" > /dev/null
OMP_NUM_THREADS=1 ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" "${mpi[@]}" "$KFUSE" "${args[@]}" --shard-layers \
    -o "$tmp/shard" > /dev/null 2> "$tmp/shard.err"
grep -q '^analyze: rank 1 holds .* MB of FFN statistics (layers ' "$tmp/shard.err" || { cat "$tmp/shard.err"; exit 1; }
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
PY
/usr/bin/python3 - "$tmp/one" "$tmp/shard" <<'PY'
import json, struct, sys
import numpy as np
one, shard = sys.argv[1:3]
a, b = (json.load(open(d + "/analysis.json")) for d in (one, shard))
ca, cb = a["calibration"], b["calibration"]
assert cb["ranks"] == 2 and cb["shard_layers"] and not ca["shard_layers"], (ca, cb)
# statistics memory: rank 0 alone holds every layer; sharded, each rank about half
total, per = ca["rank_ffn_stats_bytes"][0], cb["rank_ffn_stats_bytes"]
assert len(per) == 2 and sum(per) == total, (total, per)
assert all(0.4 * total <= p <= 0.6 * total for p in per), f"per-rank FFN statistics {per} of {total}"
assert sorted(set(cb["layer_owner"])) == [0, 1], cb["layer_owner"]
print(f"FFN statistics per rank {per} bytes, single process {total}; layer owners {cb['layer_owner']}")
# every number of analysis.json but timings and the rank bookkeeping
rank_keys = {"ranks", "shard_layers", "layer_owner", "rank_ffn_stats_bytes", "resid_stats_bytes", "tokens_per_s"}
worst = [0.0, ""]
def walk(x, y, path):
    if isinstance(x, dict):
        assert set(x) == set(y), (path, set(x) ^ set(y))
        for k in x:
            if k not in rank_keys and not k.endswith("seconds"): walk(x[k], y[k], path + "." + k)
    elif isinstance(x, list):
        assert len(x) == len(y), (path, len(x), len(y))
        for u, v in zip(x, y): walk(u, v, path)
    elif isinstance(x, (int, float)) and not isinstance(x, bool):
        d = abs(x - y) / max(abs(x), 1e-3)
        assert d <= 1e-6, f"{path}: {x} vs {y}"
        if d > worst[0]: worst[:] = [d, path]
    else:
        assert x == y, f"{path}: {x!r} vs {y!r}"
walk(a, b, "")
print(f"analysis.json: every number within rel 1e-6 (largest {worst[0]:.2g} at {worst[1]})")

def read_stats(path):
    buf = open(path, "rb").read()
    assert buf[:8] == b"KFSTATS\0"
    n_entries, = struct.unpack_from("<I", buf, 12)
    hdr = struct.unpack_from("<iiiiq", buf, 24)
    off, out = 48, {}
    for _ in range(n_entries):
        nb, = struct.unpack_from("<Q", buf, off)
        p = off + 8
        nl, = struct.unpack_from("<I", buf, p)
        name = buf[p + 4:p + 4 + nl].decode()
        p += 4 + nl
        d, topk, eps, has_shift, n = struct.unpack_from("<IIfIq", buf, p)
        p += 24
        e = {"n": n, "topk": topk}
        P = d * (d + 1) // 2
        for key, dt, cnt in (("shift", "<f8", d), ("sum", "<f8", d), ("sxx", "<f8", P), ("n_pos", "<i8", d),
                             ("n_nz", "<i8", d), ("sum_abs", "<f8", d), ("max", "<f4", d), ("min", "<f4", d),
                             ("coact", "<u4", P if topk else 0)):
            e[key] = np.frombuffer(buf, dt, cnt, p)
            p += cnt * np.dtype(dt).itemsize
        assert p + 8 == off + 8 + nb, name
        iu = np.triu_indices(d)
        S = np.zeros((d, d)); S[iu] = e["sxx"]; S = S + np.triu(S, 1).T
        e["mean"] = e["shift"] + e["sum"] / n
        e["cov"] = (S - np.outer(e["sum"], e["sum"]) / n) / (n - 1)
        out[name] = e
        off += 8 + nb
    return hdr, out
(h1, s1), (h2, s2) = read_stats(one + "/stats.kfs"), read_stats(shard + "/stats.kfs")
assert list(s1) == list(s2), (list(s1), list(s2))
assert h1[:3] == h2[:3] and h1[4] == h2[4] and h2[3] == 2, (h1, h2)  # windows and tokens; ranks 1 vs 2
for name in s1:
    x, y = s1[name], s2[name]
    for key in ("n", "topk"):
        assert x[key] == y[key], (name, key)
    for key in ("n_pos", "n_nz", "max", "min", "coact"):
        assert np.array_equal(x[key], y[key]), (name, key)
    scale = np.sqrt(np.outer(np.diag(x["cov"]), np.diag(x["cov"]))) + 1e-12
    dc = np.max(np.abs(x["cov"] - y["cov"]) / scale)
    dm = np.max(np.abs(x["mean"] - y["mean"]) / (np.sqrt(np.diag(x["cov"])) + 1e-12))
    assert dc < 1e-6 and dm < 1e-6, f"{name}: covariance {dc:.2g}, mean {dm:.2g} (of the natural scale)"
    assert np.allclose(x["sum_abs"], y["sum_abs"], rtol=1e-12), name
print(f"stats.kfs: {len(s1)} accumulators equal (counts exactly, mean and covariance within 1e-6 of their scale)")
PY
# the sharded run's statistics drive compress to the same model as the single process's
for run in one shard; do
  OMP_NUM_THREADS=1 "$KFUSE" compress "$KF_ROOT/models/llama-gutenberg-1.4m" --method fold --ffn-keep 0.5 --ctx 128 \
    --stats "$tmp/$run/stats.kfs" -o "$tmp/c-$run" > /dev/null 2> "$tmp/c-$run.err" || { cat "$tmp/c-$run.err"; exit 1; }
done
cmp "$tmp/c-one/model.safetensors" "$tmp/c-shard/model.safetensors"
echo "compress --stats from the sharded run writes the same model.safetensors"
echo "1 passed, 0 failed"
