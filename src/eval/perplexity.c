#include "eval/perplexity.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/progress.h"
#include "runtime/forward.h"

double kf_log_softmax_at(const float *logits, int n, int target) {
    float mx = logits[0];
    for (int i = 1; i < n; i++) mx = logits[i] > mx ? logits[i] : mx;
    double sum = 0;
    for (int i = 0; i < n; i++) sum += exp((double)(logits[i] - mx));
    return (double)(logits[target] - mx) - log(sum);
}

void kf_ppl_finish(kf_ppl_result *r, double nll, double nll2) {
    double n = (double)r->n_scored, mean = nll / n, var = nll2 / n - mean * mean;
    r->nll_mean = mean;
    r->ppl = exp(mean);
    // As llama.cpp: the standard error of the mean nll, carried to ppl.
    r->ppl_se = r->n_scored > 1 && var > 0 ? r->ppl * sqrt(var / (n - 1)) : 0;
}

kf_calib_protocol kf_eval_protocol(int ctx, int bos_id) {
    kf_calib_protocol p = kf_calib_protocol_make(ctx, bos_id);
    p.batch = ctx >= 512 ? 1 : 512 / (ctx > 0 ? ctx : 1);
    return p;
}

typedef struct {
    kf_ppl_result *out;
    int V, n_chunks;
    double nll, nll2, t0;
    kf_ppl_progress_fn progress;
    void *user;
} ppl_run;

// Scores the second half of every window of the batch.
static kf_status ppl_batch(void *user, kf_calib_batch *b, kf_error *err) {
    (void)err;
    ppl_run *r = user;
    const int ctx = b->ctx, V = r->V;
    double nll = r->nll, nll2 = r->nll2;
    for (int w = 0; w < b->n; w++) {
        const int32_t *tok = b->tokens + (size_t)w * ctx;
        for (int j = ctx / 2; j < ctx - 1; j++) {
            double v = -kf_log_softmax_at(b->logits + ((size_t)w * ctx + j) * V, V, tok[j + 1]);
            nll += v;
            nll2 = fma(v, v, nll2); // one rounding per term, as the compiler fused it before: ppl_se bit for bit
            r->out->n_scored++;
        }
        r->out->n_chunks = (int)b->first + w + 1;
        r->out->seconds = kf_time_now() - r->t0;
        kf_ppl_finish(r->out, nll, nll2);
        if (r->progress) r->progress(r->user, (int)b->first + w, r->n_chunks, r->out);
    }
    r->nll = nll, r->nll2 = nll2;
    return KF_OK;
}

kf_status kf_eval_perplexity(const kf_model *m, const int32_t *tokens, int64_t n_tokens, int ctx, int bos_id,
                             kf_ppl_result *out, kf_ppl_progress_fn progress, void *user, kf_error *err) {
    memset(out, 0, sizeof *out);
    if (ctx < 4) return kf_error_set(err, KF_ERR_ARG, "perplexity: --ctx must be at least 4, got %d", ctx);
    const kf_calib_protocol p = kf_eval_protocol(ctx, bos_id);
    kf_status s = kf_calib_check(&p, m, n_tokens, "perplexity", err);
    if (s != KF_OK) return s;
    kf_ctx *fc = NULL;
    if ((s = kf_ctx_init(&fc, m, kf_calib_max_rows(&p, n_tokens), 0, err)) != KF_OK) return s;
    ppl_run r = {.out = out, .V = m->n_vocab, .n_chunks = (int)kf_calib_n_windows(&p, n_tokens),
                 .t0 = kf_time_now(), .progress = progress, .user = user};
    s = kf_calib_run(fc, m, tokens, n_tokens, &p, &(kf_calib_sink){.after = ppl_batch, .user = &r, .logits = true},
                     err);
    kf_ctx_free(fc);
    return s;
}
