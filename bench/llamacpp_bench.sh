#!/usr/bin/env bash
# Decode and prefill speed of kfuse against real llama.cpp on the same GGUF
# files, same threads, in one run, alternating the two tools per repeat.
#
#   bench/llamacpp_bench.sh GGUF... 
#
# llama.cpp: the source of node-llama-cpp@3.22.1's build (npm pack; its
# llama/gitRelease.bundle is a git bundle) is cloned into a cache folder
# outside the repository and llama-bench is built there once
# (CPU backend, native ISA, static). Never part of kfuse's build or tests.
#
# Environment: THREADS (default all cores), P (prompt tokens, 64), N (decode
# tokens, 16), R (repeats of each tool, 3), KFUSE (default build/kfuse),
# KF_LLAMA_SRC (cache, default ~/.cache/kfuse/llama.cpp-3.22.1-src), OUT
# (rows, default /tmp/kfuse-bench/llamacpp), MMAP (1: both tools map the
# file, their default; 0: both read the weights into anonymous memory,
# llama-bench --load-mode none and kfuse bench --no-mmap), KERNELS (kfuse
# decode kernels to run in turn, e.g. "avx512 avx512_vnni"; default: kfuse's
# default only).
# Rows (JSON lines, $OUT/rows.jsonl): tool, model, threads, mmap, kernel, pp_tok_s, tg_tok_s per repeat.
# Logs: $OUT/llama.err (llama.cpp's own log: llama-bench -v --progress) and
# $OUT/kfuse.err; a failing tool is named with its exit status (128+N: signal N).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
[ $# -ge 1 ] || { echo "usage: bench/llamacpp_bench.sh GGUF..." >&2; exit 2; }
V=3.22.1
src=${KF_LLAMA_SRC:-$HOME/.cache/kfuse/llama.cpp-$V-src}
kfuse=${KFUSE:-$root/build/kfuse}
threads=${THREADS:-$(nproc)}
P=${P:-64} N=${N:-16} R=${R:-3} MMAP=${MMAP:-1}
case $MMAP in
1) llama_mmap=(-lm mmap) kfuse_mmap=() ;;
0) llama_mmap=(-lm none) kfuse_mmap=(--no-mmap) ;;
*) echo "llamacpp_bench: MMAP must be 0 or 1, not '$MMAP'" >&2; exit 2 ;;
esac
out=${OUT:-/tmp/kfuse-bench/llamacpp}
mkdir -p "$out"

bench_bin=$src/build/bin/llama-bench
if [ ! -x "$bench_bin" ]; then
    if [ ! -d "$src/.git" ]; then
        tmp=$(mktemp -d)
        (cd "$tmp" && npm pack --silent "node-llama-cpp@$V" >/dev/null)
        tar xzf "$tmp/node-llama-cpp-$V.tgz" -C "$tmp" package/llama/gitRelease.bundle
        mkdir -p "$(dirname "$src")"
        git clone -q "$tmp/package/llama/gitRelease.bundle" "$src"
        rm -rf "$tmp"
    fi
    echo "llamacpp_bench: building llama-bench in $src/build" >&2
    cmake -S "$src" -B "$src/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DBUILD_SHARED_LIBS=OFF \
        -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF >/dev/null
    cmake --build "$src/build" --target llama-bench -j"$(nproc)" >/dev/null
fi
echo "llamacpp_bench: llama.cpp $(git -C "$src" describe --tags --always 2>/dev/null), $threads threads, p $P n $N, $R repeats" >&2

# fail TOOL STATUS LOG: stop, naming the tool, its exit status and its log's last lines
fail() {
    echo "llamacpp_bench: $1 exited $2 on $model (repeat $rep); end of $3:" >&2
    tail -n 5 "$3" >&2
    exit "$2"
}

export OMP_NUM_THREADS=$threads
for model in "$@"; do
    for rep in $(seq "$R"); do
        # without -v llama-bench drops llama.cpp's log, so a crash left llama.err empty
        "$bench_bin" -m "$model" -p "$P" -n "$N" -r 1 -t "$threads" "${llama_mmap[@]}" -o json -v --progress >"$out/llama.json" \
            2>"$out/llama.err" || fail llama-bench $? "$out/llama.err"
        for kernel in ${KERNELS:-default}; do
            kopt=()
            [ "$kernel" = default ] || kopt=(--kernel "$kernel")
            "$kfuse" bench "$model" -p "$P" -n "$N" -r 1 -t "$threads" "${kfuse_mmap[@]}" "${kopt[@]}" --json \
                >"$out/kfuse-$kernel.json" 2>"$out/kfuse.err" || fail "kfuse bench" $? "$out/kfuse.err"
        done
        /usr/bin/python3 - "$out" "$model" "$threads" "$rep" "$MMAP" ${KERNELS:-default} <<'PY'
import json, os, sys
out, model, threads, rep, mmap = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
ll = json.load(open(f"{out}/llama.json"))
pp = next(r["avg_ts"] for r in ll if r["n_prompt"] > 0 and r["n_gen"] == 0)
tg = next(r["avg_ts"] for r in ll if r["n_gen"] > 0 and r["n_prompt"] == 0)
base = {"model": os.path.basename(model), "threads": threads, "mmap": mmap, "rep": rep}
rows = [dict(tool="llama.cpp", **base, kernel="llama.cpp", pp_tok_s=round(pp, 3), tg_tok_s=round(tg, 3))]
for kernel in sys.argv[6:]:
    kf = {r["test"][:2]: r for r in map(json.loads, open(f"{out}/kfuse-{kernel}.json"))}
    rows.append(dict(tool="kfuse", **base, kernel=kf["tg"]["kernel"], pp_tok_s=round(kf["pp"]["tokens_per_s_median"], 3),
                     tg_tok_s=round(kf["tg"]["tokens_per_s_median"], 3)))
with open(f"{out}/rows.jsonl", "a") as f:
    for r in rows:
        print(json.dumps(r))
        f.write(json.dumps(r) + "\n")
PY
    done
done
