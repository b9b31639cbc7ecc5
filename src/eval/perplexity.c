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

static void finish(kf_ppl_result *r, double nll, double nll2) {
    double n = (double)r->n_scored, mean = nll / n, var = nll2 / n - mean * mean;
    r->nll_mean = mean;
    r->ppl = exp(mean);
    // As llama.cpp: the standard error of the mean nll, carried to ppl.
    r->ppl_se = r->n_scored > 1 && var > 0 ? r->ppl * sqrt(var / (n - 1)) : 0;
}

kf_status kf_eval_perplexity(const kf_model *m, const int32_t *tokens, int64_t n_tokens, int ctx, int bos_id,
                             kf_ppl_result *out, kf_ppl_progress_fn progress, void *user, kf_error *err) {
    memset(out, 0, sizeof *out);
    if (ctx < 4) return kf_error_set(err, KF_ERR_ARG, "perplexity: --ctx must be at least 4, got %d", ctx);
    if (m->pos == KF_POS_LEARNED && ctx > m->n_ctx_train)
        return kf_error_set(err, KF_ERR_ARG, "perplexity: --ctx %d exceeds the model's %d learned positions", ctx,
                            m->n_ctx_train);
    int n_chunks = (int)(n_tokens / ctx);
    if (n_chunks < 1)
        return kf_error_set(err, KF_ERR_ARG, "perplexity: the text has %lld tokens, fewer than one window of %d",
                            (long long)n_tokens, ctx);
    // Several windows per forward call keep sgemm efficient for short windows.
    int B = ctx >= 512 ? 1 : 512 / ctx;
    if (B > n_chunks) B = n_chunks;
    const int V = m->n_vocab, first = ctx / 2;
    kf_ctx *fc = NULL;
    kf_status s = kf_ctx_init(&fc, m, B * ctx, 0, err);
    if (s != KF_OK) return s;
    int32_t *win = malloc(sizeof *win * (size_t)B * (size_t)ctx);
    float *logits = malloc(sizeof *logits * (size_t)B * (size_t)ctx * (size_t)V);
    if (!win || !logits) {
        s = kf_error_set(err, KF_ERR_NOMEM, "perplexity: out of memory for %d windows of %d tokens", B, ctx);
        goto done;
    }
    double nll = 0, nll2 = 0, t0 = kf_time_now();
    for (int c0 = 0; c0 < n_chunks; c0 += B) {
        int nb = n_chunks - c0 < B ? n_chunks - c0 : B;
        for (int b = 0; b < nb; b++) {
            memcpy(win + (size_t)b * ctx, tokens + (int64_t)(c0 + b) * ctx, sizeof *win * (size_t)ctx);
            if (bos_id >= 0) win[(size_t)b * ctx] = bos_id;
        }
        if ((s = kf_forward_prefill(fc, win, nb, ctx, logits, err)) != KF_OK) goto done;
        for (int b = 0; b < nb; b++) {
            const int32_t *tok = tokens + (int64_t)(c0 + b) * ctx;
            for (int j = first; j < ctx - 1; j++) {
                double v = -kf_log_softmax_at(logits + ((size_t)b * ctx + j) * V, V, tok[j + 1]);
                nll += v;
                nll2 += v * v;
                out->n_scored++;
            }
            out->n_chunks = c0 + b + 1;
            out->seconds = kf_time_now() - t0;
            finish(out, nll, nll2);
            if (progress) progress(user, c0 + b, n_chunks, out);
        }
    }
done:
    free(win);
    free(logits);
    kf_ctx_free(fc);
    return s;
}
