#!/usr/bin/env bash
# kfuse analyze --max-memory (issue 15): with a cap that splits the
# recording into a residual pass and several layer groups (each group run
# from the residual stream the previous one cached on disk), analysis.json
# and stats.kfs equal the one-pass run's (every number but the timings, to
# 1e-9 relative; the statistics files entry by entry), and the FFN
# statistics held at once (rank_ffn_stats_bytes) are fewer. A cap too small for
# one layer fails before any work: one line naming the memory needed,
# non-zero exit, no output folder. Skips (77) without numpy.
# ctest-timeout: 300
set -eu
: "${KFUSE:?}" "${KF_ROOT:?}"
if ! /usr/bin/python3 -c "import numpy" 2> /dev/null; then
    echo "SKIP: /usr/bin/python3 has no numpy (scripts/install-deps.sh --test installs python3-numpy)"
    exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
head -c 120000 "$KF_ROOT/data/calib/calib.txt" > "$tmp/calib.txt"
model="$KF_ROOT/models/llama-gutenberg-1.4m"
args=(-f "$tmp/calib.txt" --tokens 2048 --ctx 128 --sample 1024 --k 4 --context-tokens 512)
"$KFUSE" analyze "$model" "${args[@]}" -o "$tmp/one" > /dev/null 2> "$tmp/one.err"
grep -q "plan: 1 calibration pass," "$tmp/one.err" || { echo "FAIL: no one-pass plan line"; cat "$tmp/one.err"; exit 1; }
"$KFUSE" analyze "$model" "${args[@]}" --max-memory 16M -o "$tmp/cap" > /dev/null 2> "$tmp/cap.err"
plan=$(tr '\r' '\n' < "$tmp/cap.err" | grep "plan:")
echo "$plan"
groups=$(echo "$plan" | sed -n 's/.*then \([0-9]*\) layer groups.*/\1/p')
[ "${groups:-0}" -ge 3 ] || { echo "FAIL: expected at least 3 layer groups: $plan"; exit 1; }

/usr/bin/python3 - "$tmp/one" "$tmp/cap" <<'PY'
import json, struct, sys
import numpy as np
one, cap = sys.argv[1:]
a = json.load(open(f"{one}/analysis.json")); b = json.load(open(f"{cap}/analysis.json"))
bad = []
def cmp(x, y, path):
    if path.split("/")[-1].split("[")[0].endswith(("seconds", "tokens_per_s")) or path.startswith("/timing"):
        return
    if path.startswith("/calibration/rank_ffn_stats_bytes"):  # held at once: one group's, checked below
        return
    if isinstance(x, dict):
        assert set(x) == set(y), (path, set(x) ^ set(y))
        for k in x: cmp(x[k], y[k], f"{path}/{k}")
    elif isinstance(x, list):
        assert len(x) == len(y), path
        for i, (u, v) in enumerate(zip(x, y)): cmp(u, v, f"{path}[{i}]")
    elif isinstance(x, float) and isinstance(y, float):
        if not (abs(x - y) <= 1e-9 * max(1.0, abs(x)) or (x != x and y != y)): bad.append((path, x, y))
    elif x != y:
        bad.append((path, x, y))
cmp(a, b, "")
assert not bad, f"analysis.json differs: {bad[:5]} ({len(bad)} values)"
held_one, held_cap = a["calibration"]["rank_ffn_stats_bytes"][0], b["calibration"]["rank_ffn_stats_bytes"][0]
assert 0 < held_cap < held_one, f"FFN statistics held at once: {held_cap} with groups, {held_one} in one pass"

def load(path):  # stats/statsfile.h layout
    buf = open(path, "rb").read()
    assert buf[:8] == b"KFSTATS\0"
    n = struct.unpack_from("<I", buf, 12)[0]
    head = buf[16:48]
    off, out = 48, {}
    for _ in range(n):
        nb = struct.unpack_from("<Q", buf, off)[0]; off += 8
        e = buf[off:off + nb]; off += nb
        ln = struct.unpack_from("<I", e, 0)[0]; name = e[4:4 + ln].decode()
        d, topk = struct.unpack_from("<II", e, 4 + ln)
        p = d * (d + 1) // 2
        q = 4 + ln + 24
        arrs = {}
        for key, dt, cnt in (("shift", "<f8", d), ("sum", "<f8", d), ("sxx", "<f8", p), ("n_pos", "<i8", d),
                             ("n_nz", "<i8", d), ("sum_abs", "<f8", d), ("max", "<f4", d), ("min", "<f4", d),
                             ("coact", "<u4", p if topk else 0)):
            arrs[key] = np.frombuffer(e, dt, cnt, q); q += cnt * np.dtype(dt).itemsize
        arrs["n"] = struct.unpack_from("<q", e, 4 + ln + 16)[0]
        out[name] = arrs
    return head, out
ha, sa = load(f"{one}/stats.kfs"); hb, sb = load(f"{cap}/stats.kfs")
assert ha == hb, "stats.kfs headers differ"
assert set(sa) == set(sb), set(sa) ^ set(sb)
for name in sa:
    for k, v in sa[name].items():
        w = sb[name][k]
        ok = v == w if k == "n" else np.allclose(v, w, rtol=1e-12, atol=1e-12 * (np.abs(v).max() if np.size(v) else 0))
        assert ok, f"stats.kfs {name}.{k} differs"
print(f"analysis.json and {len(sa)} statistics entries equal")
PY

if "$KFUSE" analyze "$model" "${args[@]}" --max-memory 2M -o "$tmp/small" > /dev/null 2> "$tmp/small.err"; then
  echo "FAIL: a 2M cap was accepted"; exit 1
fi
[ "$(grep -c '^kfuse: ' "$tmp/small.err")" -eq 1 ] || { echo "FAIL: expected one error line:"; cat "$tmp/small.err"; exit 1; }
! grep -q "recording\|plan:" "$tmp/small.err" || { echo "FAIL: work started under a too-small cap"; exit 1; }
grep -q "too small: one layer needs [0-9.]* MiB" "$tmp/small.err" || { echo "FAIL: message"; cat "$tmp/small.err"; exit 1; }
[ ! -e "$tmp/small" ] || { echo "FAIL: output written under a too-small cap"; exit 1; }
echo "PASS"
