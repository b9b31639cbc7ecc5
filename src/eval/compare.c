#include "eval/compare.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/progress.h"
#include "runtime/forward.h"

double kf_kl_logits(const float *p, const float *q, int n) {
    float mp = p[0], mq = q[0];
    for (int i = 1; i < n; i++) {
        mp = p[i] > mp ? p[i] : mp;
        mq = q[i] > mq ? q[i] : mq;
    }
    double sp = 0, sq = 0;
    for (int i = 0; i < n; i++) {
        sp += exp((double)p[i] - mp);
        sq += exp((double)q[i] - mq);
    }
    double lzp = log(sp), lzq = log(sq), kl = 0;
    for (int i = 0; i < n; i++) {
        double lp = (double)p[i] - mp - lzp, lq = (double)q[i] - mq - lzq;
        kl += exp(lp) * (lp - lq);
    }
    return kl > 0 ? kl : 0; // rounding can leave -1e-17 for identical inputs
}

static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void finish_ppl(kf_ppl_result *r, double nll, double nll2) {
    double n = (double)r->n_scored, mean = nll / n, var = nll2 / n - mean * mean;
    r->nll_mean = mean;
    r->ppl = exp(mean);
    r->ppl_se = r->n_scored > 1 && var > 0 ? r->ppl * sqrt(var / (n - 1)) : 0;
}

kf_status kf_eval_compare(const kf_model *m, const kf_model *ref, const int32_t *tokens, int64_t n_tokens, int ctx,
                          int bos_id, kf_compare_result *out, kf_ppl_progress_fn progress, void *user, kf_error *err) {
    memset(out, 0, sizeof *out);
    if (m->n_vocab != ref->n_vocab)
        return kf_error_set(err, KF_ERR_ARG, "eval: vocabularies differ: model has %d entries, reference %d", m->n_vocab,
                            ref->n_vocab);
    if (ctx < 4) return kf_error_set(err, KF_ERR_ARG, "eval: --ctx must be at least 4, got %d", ctx);
    for (int k = 0; k < 2; k++) {
        const kf_model *x = k ? ref : m;
        if (x->pos == KF_POS_LEARNED && ctx > x->n_ctx_train)
            return kf_error_set(err, KF_ERR_ARG, "eval: --ctx %d exceeds the %s's %d learned positions", ctx,
                                k ? "reference" : "model", x->n_ctx_train);
    }
    int n_chunks = (int)(n_tokens / ctx);
    if (n_chunks < 1)
        return kf_error_set(err, KF_ERR_ARG, "eval: the text has %lld tokens, fewer than one window of %d",
                            (long long)n_tokens, ctx);
    int B = ctx >= 512 ? 1 : 512 / ctx;
    if (B > n_chunks) B = n_chunks;
    const int V = m->n_vocab, first = ctx / 2;
    const int64_t n_total = (int64_t)n_chunks * (ctx - 1 - first);
    kf_ctx *fm = NULL, *fr = NULL;
    kf_status s = kf_ctx_init(&fm, m, B * ctx, 0, err);
    if (s == KF_OK) s = kf_ctx_init(&fr, ref, B * ctx, 0, err);
    int32_t *win = malloc(sizeof *win * (size_t)B * (size_t)ctx);
    float *lm = malloc(sizeof *lm * (size_t)B * (size_t)ctx * (size_t)V);
    float *lr = malloc(sizeof *lr * (size_t)B * (size_t)ctx * (size_t)V);
    double *kl = malloc(sizeof *kl * (size_t)n_total);
    if (s != KF_OK) goto done;
    if (!win || !lm || !lr || !kl) {
        s = kf_error_set(err, KF_ERR_NOMEM, "eval: out of memory for %d windows of %d tokens", B, ctx);
        goto done;
    }
    double nll[2] = {0}, nll2[2] = {0}, kl_sum = 0, secs[2] = {0};
    int64_t agree = 0;
    for (int c0 = 0; c0 < n_chunks; c0 += B) {
        int nb = n_chunks - c0 < B ? n_chunks - c0 : B;
        for (int b = 0; b < nb; b++) {
            memcpy(win + (size_t)b * ctx, tokens + (int64_t)(c0 + b) * ctx, sizeof *win * (size_t)ctx);
            if (bos_id >= 0) win[(size_t)b * ctx] = bos_id;
        }
        double t0 = kf_time_now();
        if ((s = kf_forward_prefill(fm, win, nb, ctx, lm, err)) != KF_OK) goto done;
        double t1 = kf_time_now();
        if ((s = kf_forward_prefill(fr, win, nb, ctx, lr, err)) != KF_OK) goto done;
        secs[0] += t1 - t0;
        secs[1] += kf_time_now() - t1;
        for (int b = 0; b < nb; b++) {
            const int32_t *tok = tokens + (int64_t)(c0 + b) * ctx;
            for (int j = first; j < ctx - 1; j++) {
                const float *pm = lm + ((size_t)b * ctx + j) * V, *pr = lr + ((size_t)b * ctx + j) * V;
                double vm = -kf_log_softmax_at(pm, V, tok[j + 1]), vr = -kf_log_softmax_at(pr, V, tok[j + 1]);
                nll[0] += vm, nll2[0] += vm * vm;
                nll[1] += vr, nll2[1] += vr * vr;
                double d = kf_kl_logits(pr, pm, V);
                kl[out->n_scored++] = d;
                kl_sum += d;
                agree += argmax(pm, V) == argmax(pr, V);
            }
            kf_ppl_result *r[2] = {&out->model, &out->ref};
            for (int k = 0; k < 2; k++) {
                r[k]->n_scored = out->n_scored;
                r[k]->n_chunks = c0 + b + 1;
                r[k]->seconds = secs[k];
                finish_ppl(r[k], nll[k], nll2[k]);
            }
            if (progress) progress(user, c0 + b, n_chunks, &out->model);
        }
    }
    out->kl_mean = kl_sum / (double)out->n_scored;
    out->top1 = (double)agree / (double)out->n_scored;
    qsort(kl, (size_t)out->n_scored, sizeof *kl, cmp_double);
    double pos = 0.99 * (double)(out->n_scored - 1);
    int64_t lo = (int64_t)pos;
    int64_t hi = lo + 1 < out->n_scored ? lo + 1 : lo;
    out->kl_p99 = kl[lo] + (pos - (double)lo) * (kl[hi] - kl[lo]);
    out->kl_max = kl[out->n_scored - 1];
done:
    free(win);
    free(lm);
    free(lr);
    free(kl);
    kf_ctx_free(fm);
    kf_ctx_free(fr);
    return s;
}
