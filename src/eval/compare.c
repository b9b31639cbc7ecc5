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

static kf_status check_model(const kf_model *x, const char *what, int V, int ctx, kf_error *err) {
    if (x->n_vocab != V)
        return kf_error_set(err, KF_ERR_ARG, "eval: vocabularies differ: %s has %d entries, reference %d", what,
                            x->n_vocab, V);
    if (x->pos == KF_POS_LEARNED && ctx > x->n_ctx_train)
        return kf_error_set(err, KF_ERR_ARG, "eval: --ctx %d exceeds the %s's %d learned positions", ctx, what,
                            x->n_ctx_train);
    return KF_OK;
}

static void finish_kl(kf_compare_result *r, double *kl, double kl_sum, int64_t agree) {
    r->kl_mean = kl_sum / (double)r->n_scored;
    r->top1 = (double)agree / (double)r->n_scored;
    qsort(kl, (size_t)r->n_scored, sizeof *kl, cmp_double);
    double pos = 0.99 * (double)(r->n_scored - 1);
    int64_t lo = (int64_t)pos;
    int64_t hi = lo + 1 < r->n_scored ? lo + 1 : lo;
    r->kl_p99 = kl[lo] + (pos - (double)lo) * (kl[hi] - kl[lo]);
    r->kl_max = kl[r->n_scored - 1];
}

kf_status kf_eval_compare_many(const kf_model *const *models, int n_models, const kf_model *ref,
                               const int32_t *tokens, int64_t n_tokens, int ctx, int bos_id, kf_compare_result *out,
                               kf_ppl_progress_fn progress, void *user, kf_error *err) {
    if (n_models < 1) return kf_error_set(err, KF_ERR_ARG, "eval: no model to compare");
    memset(out, 0, sizeof *out * (size_t)n_models);
    if (ctx < 4) return kf_error_set(err, KF_ERR_ARG, "eval: --ctx must be at least 4, got %d", ctx);
    const int V = ref->n_vocab, first = ctx / 2;
    kf_status s = check_model(ref, "reference", V, ctx, err);
    for (int k = 0; k < n_models && s == KF_OK; k++) s = check_model(models[k], "model", V, ctx, err);
    if (s != KF_OK) return s;
    int n_chunks = (int)(n_tokens / ctx);
    if (n_chunks < 1)
        return kf_error_set(err, KF_ERR_ARG, "eval: the text has %lld tokens, fewer than one window of %d",
                            (long long)n_tokens, ctx);
    int B = ctx >= 512 ? 1 : 512 / ctx;
    if (B > n_chunks) B = n_chunks;
    const int64_t n_total = (int64_t)n_chunks * (ctx - 1 - first);
    const size_t n_logits = (size_t)B * (size_t)ctx * (size_t)V;
    // Per model: a forward context, its KL values (for the percentile) and
    // running sums; the reference's logits and NLL are shared.
    kf_ctx *fr = NULL, **fm = calloc((size_t)n_models, sizeof *fm);
    double **kl = calloc((size_t)n_models, sizeof *kl);
    double *sums = calloc((size_t)n_models * 4, sizeof *sums); // nll, nll^2, kl, seconds
    int64_t *agree = calloc((size_t)n_models, sizeof *agree);
    int32_t *win = malloc(sizeof *win * (size_t)B * (size_t)ctx);
    float *lm = malloc(sizeof *lm * n_logits), *lr = malloc(sizeof *lr * n_logits);
    if (!fm || !kl || !sums || !agree || !win || !lm || !lr) {
        s = kf_error_set(err, KF_ERR_NOMEM, "eval: out of memory for %d windows of %d tokens", B, ctx);
        goto done;
    }
    if ((s = kf_ctx_init(&fr, ref, B * ctx, 0, err)) != KF_OK) goto done;
    for (int k = 0; k < n_models; k++) {
        if ((s = kf_ctx_init(&fm[k], models[k], B * ctx, 0, err)) != KF_OK) goto done;
        if (!(kl[k] = malloc(sizeof *kl[k] * (size_t)n_total))) {
            s = kf_error_set(err, KF_ERR_NOMEM, "eval: out of memory for %lld KL values", (long long)n_total);
            goto done;
        }
    }
    double nll_r = 0, nll2_r = 0, secs_r = 0;
    int64_t n_scored = 0;
    for (int c0 = 0; c0 < n_chunks; c0 += B) {
        int nb = n_chunks - c0 < B ? n_chunks - c0 : B;
        for (int b = 0; b < nb; b++) {
            memcpy(win + (size_t)b * ctx, tokens + (int64_t)(c0 + b) * ctx, sizeof *win * (size_t)ctx);
            if (bos_id >= 0) win[(size_t)b * ctx] = bos_id;
        }
        double t0 = kf_time_now();
        if ((s = kf_forward_prefill(fr, win, nb, ctx, lr, err)) != KF_OK) goto done;
        secs_r += kf_time_now() - t0;
        for (int b = 0; b < nb; b++) {
            const int32_t *tok = tokens + (int64_t)(c0 + b) * ctx;
            for (int j = first; j < ctx - 1; j++) {
                double v = -kf_log_softmax_at(lr + ((size_t)b * ctx + j) * V, V, tok[j + 1]);
                nll_r += v, nll2_r += v * v;
            }
        }
        int64_t n_before = n_scored;
        for (int k = 0; k < n_models; k++) {
            double *sk = sums + 4 * k, t1 = kf_time_now();
            if ((s = kf_forward_prefill(fm[k], win, nb, ctx, lm, err)) != KF_OK) goto done;
            sk[3] += kf_time_now() - t1;
            int64_t n = n_before;
            for (int b = 0; b < nb; b++) {
                const int32_t *tok = tokens + (int64_t)(c0 + b) * ctx;
                for (int j = first; j < ctx - 1; j++) {
                    const float *pm = lm + ((size_t)b * ctx + j) * V, *pr = lr + ((size_t)b * ctx + j) * V;
                    double v = -kf_log_softmax_at(pm, V, tok[j + 1]), d = kf_kl_logits(pr, pm, V);
                    sk[0] += v, sk[1] += v * v, sk[2] += d;
                    kl[k][n++] = d;
                    agree[k] += argmax(pm, V) == argmax(pr, V);
                }
            }
            n_scored = n;
            kf_compare_result *r = &out[k];
            r->n_scored = r->model.n_scored = r->ref.n_scored = n;
            r->model.n_chunks = r->ref.n_chunks = c0 + nb;
            r->model.seconds = sk[3];
            r->ref.seconds = secs_r;
            finish_ppl(&r->model, sk[0], sk[1]);
            finish_ppl(&r->ref, nll_r, nll2_r);
        }
        if (progress) progress(user, c0 + nb - 1, n_chunks, &out[0].model);
    }
    for (int k = 0; k < n_models; k++) {
        finish_kl(&out[k], kl[k], sums[4 * k + 2], agree[k]);
        out[k].ffn_share = kf_ctx_ffn_share(fm[k]);
    }
done:
    if (fm)
        for (int k = 0; k < n_models; k++) kf_ctx_free(fm[k]);
    if (kl)
        for (int k = 0; k < n_models; k++) free(kl[k]);
    free(fm);
    free(kl);
    free(sums);
    free(agree);
    free(win);
    free(lm);
    free(lr);
    kf_ctx_free(fr);
    return s;
}

kf_status kf_eval_compare(const kf_model *m, const kf_model *ref, const int32_t *tokens, int64_t n_tokens, int ctx,
                          int bos_id, kf_compare_result *out, kf_ppl_progress_fn progress, void *user, kf_error *err) {
    return kf_eval_compare_many(&m, 1, ref, tokens, n_tokens, ctx, bos_id, out, progress, user, err);
}
