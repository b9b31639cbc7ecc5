// Speed measurement of the forward pass: prompt processing (one prefill of
// n_prompt tokens) and generation (n_gen single-token decodes from an empty
// cache), warm-up first, then repeats; medians and spreads.
#ifndef KF_EVAL_BENCH_H
#define KF_EVAL_BENCH_H

#include "core/status.h"
#include "model/model.h"

typedef struct {
    double median, min, max; // tokens per second over the repeats
} kf_bench_stat;

typedef struct {
    int n_prompt, n_gen, repeats, threads;
    kf_bench_stat pp, tg;
    double weight_bytes;    // bytes of weights read per decoded token
    double tg_gbps_median;  // weight_bytes * tg.median / 1e9
} kf_bench_result;

// Token ids are fixed pseudo-random values; no tokenizer or sampling enters
// the timed region.
kf_status kf_bench_run(const kf_model *m, int n_prompt, int n_gen, int repeats, kf_bench_result *out, kf_error *err);

// Median / min / max of n values (the array is sorted in place).
kf_bench_stat kf_bench_summarise(double *values, int n);

#endif
