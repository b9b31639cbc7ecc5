#include "eval/bench.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "core/progress.h"
#include "core/rng.h"
#include "runtime/forward.h"

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

kf_bench_stat kf_bench_summarise(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    kf_bench_stat s = {.min = v[0], .max = v[n - 1]};
    s.median = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
    return s;
}

kf_status kf_bench_run(const kf_model *m, int n_prompt, int n_gen, int repeats, kf_bench_result *out, kf_error *err) {
    memset(out, 0, sizeof *out);
    if (n_prompt < 1 || n_gen < 1 || repeats < 1)
        return kf_error_set(err, KF_ERR_ARG, "bench: -p, -n and -r must be at least 1");
    int kv_len = n_prompt > n_gen ? n_prompt : n_gen;
    if (m->pos == KF_POS_LEARNED && kv_len > m->n_ctx_train)
        return kf_error_set(err, KF_ERR_ARG, "bench: %d tokens exceed the model's %d positions", kv_len, m->n_ctx_train);
    kf_ctx *ctx = NULL;
    kf_status s = kf_ctx_init(&ctx, m, n_prompt, kv_len, err);
    if (s != KF_OK) return s;
    int32_t *ids = malloc(sizeof *ids * (size_t)kv_len);
    float *logits = malloc(sizeof *logits * (size_t)n_prompt * (size_t)m->n_vocab);
    double *pp = malloc(sizeof *pp * (size_t)repeats), *tg = malloc(sizeof *tg * (size_t)repeats);
    if (!ids || !logits || !pp || !tg) {
        s = kf_error_set(err, KF_ERR_NOMEM, "bench: out of memory");
        goto done;
    }
    kf_rng rng;
    kf_rng_seed(&rng, 1);
    for (int i = 0; i < kv_len; i++) ids[i] = kf_rng_below(&rng, m->n_vocab);
    for (int r = -1; r < repeats; r++) { // r = -1 is the warm-up
        double t0 = kf_time_now();
        if ((s = kf_forward_prefill(ctx, ids, 1, n_prompt, logits, err)) != KF_OK) goto done;
        double t_pp = kf_time_now() - t0, t_tg = 0;
        for (int pos = 0; pos < n_gen; pos++) {
            double t1 = kf_time_now();
            if ((s = kf_forward_decode(ctx, ids[pos], pos, logits, err)) != KF_OK) goto done;
            t_tg += kf_time_now() - t1;
        }
        if (r >= 0) {
            pp[r] = n_prompt / t_pp;
            tg[r] = n_gen / t_tg;
        }
    }
    out->n_prompt = n_prompt;
    out->n_gen = n_gen;
    out->repeats = repeats;
    out->threads = omp_get_max_threads();
    out->pp = kf_bench_summarise(pp, repeats);
    out->tg = kf_bench_summarise(tg, repeats);
    out->weight_bytes = (double)kf_model_weight_bytes(m);
    out->tg_gbps_median = out->weight_bytes * out->tg.median / 1e9;
done:
    free(ids);
    free(logits);
    free(pp);
    free(tg);
    kf_ctx_free(ctx);
    return s;
}
