#!/usr/bin/env bash
# Builds the libFuzzer harnesses (fuzz/) into build-fuzz/ with clang, makes
# their seed corpora and runs each harness for SECONDS (default 30), at most
# KF_FUZZ_JOBS (default 2) at a time, niced. One row per harness: executions,
# coverage (libFuzzer's cov:), corpus size, result. Fails on any crash, leak,
# UBSan report, out-of-memory or timeout (an input taking > 10 s).
# Usage: scripts/fuzz.sh [SECONDS] [HARNESS...]
# The corpora grow in build-fuzz/corpus/<harness>; findings are written to
# build-fuzz/artifacts/, logs to build-fuzz/logs/.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
shift || true
all=(hf safetensors config gguf llama2c tokenizer_json statsfile moe blimp)
harnesses=("$@")
[ ${#harnesses[@]} -gt 0 ] || harnesses=("${all[@]}")
jobs=${KF_FUZZ_JOBS:-2}
b=build-fuzz

# -max_len per harness: room for the seeds that matter (fuzz/make_seeds.sh).
declare -A max_len=([hf]=16384 [safetensors]=16384 [config]=4096 [gguf]=16384 [llama2c]=65536
                    [tokenizer_json]=262144 [statsfile]=8192 [moe]=16384 [blimp]=8192)

scripts/install-deps.sh --test
CC=clang cmake -S . -B $b -DKF_FUZZ=ON -DKF_MPI=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build $b --target fuzzers -j"$(nproc)" >/dev/null
mkdir -p $b/corpus $b/artifacts $b/logs
fuzz/make_seeds.sh $b $b/seeds >$b/logs/seeds.log 2>&1 || { cat $b/logs/seeds.log; exit 1; }

export OMP_NUM_THREADS=1
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:allocator_may_return_null=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

run_one() {
    local h=$1
    local rc=0
    mkdir -p $b/corpus/$h
    nice -n 10 $b/fuzz/fuzz_$h -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len="${max_len[$h]}" \
        -print_final_stats=1 -artifact_prefix=$b/artifacts/$h- $b/corpus/$h $b/seeds/$h >$b/logs/$h.log 2>&1 || rc=$?
    echo $rc >$b/logs/$h.rc
}

for h in "${harnesses[@]}"; do
    [ -n "${max_len[$h]:-}" ] || { echo "fuzz.sh: unknown harness $h (${all[*]})" >&2; exit 2; }
    rm -f $b/logs/$h.rc
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
    run_one "$h" &
done
wait

fail=0
printf '%-16s %12s %8s %8s  %s\n' harness execs cov corpus result
for h in "${harnesses[@]}"; do
    rc=$(cat $b/logs/$h.rc 2>/dev/null || echo missing)
    log=$b/logs/$h.log
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2 || true)
    corpus=$(ls $b/corpus/$h | wc -l)
    if [ "$rc" = 0 ]; then
        result=ok
    else
        fail=1
        result="FAILED (rc $rc: $(grep -m1 -oE 'ERROR: [A-Za-z]+: [a-z-]+|FUZZ FINDING: .*|runtime error: .*|timeout|out-of-memory' "$log" || echo see log)) see $log"
    fi
    printf '%-16s %12s %8s %8s  %s\n' "$h" "${execs:-?}" "${cov:-?}" "$corpus" "$result"
done
exit $fail
