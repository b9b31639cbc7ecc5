#include "eval/zeroshot.h"

#include <stdlib.h>
#include <string.h>

#include "eval/perplexity.h"
#include "runtime/forward.h"

static kf_status check_lengths(const kf_model *m, const int64_t *off, int n, int *max_len, kf_error *err) {
    *max_len = 0;
    for (int s = 0; s < n; s++) {
        int64_t len = off[s + 1] - off[s];
        if (len < 1) return kf_error_set(err, KF_ERR_ARG, "zero-shot: sentence %d has no tokens (not even BOS)", s);
        if (len > (1 << 20)) return kf_error_set(err, KF_ERR_ARG, "zero-shot: sentence %d has %lld tokens", s, (long long)len);
        if (m->pos == KF_POS_LEARNED && len > m->n_ctx_train)
            return kf_error_set(err, KF_ERR_ARG, "zero-shot: sentence %d has %lld tokens, more than the model's %d positions",
                                s, (long long)len, m->n_ctx_train);
        if (len > *max_len) *max_len = (int)len;
    }
    return KF_OK;
}

// Sum of log p(tok[t+1] | ..) over t = 0 .. len-2, logits (len, V) row-major
// (rows of a longer padded sequence beyond len are not read).
static double sentence_lp(const float *logits, const int32_t *tok, int len, int V) {
    double lp = 0;
    for (int t = 0; t + 1 < len; t++) lp += kf_log_softmax_at(logits + (size_t)t * V, V, tok[t + 1]);
    return lp;
}

kf_status kf_eval_sentence_logprobs_ref(const kf_model *m, const int32_t *ids, const int64_t *off, int n,
                                        double *lp, kf_error *err) {
    int max_len;
    kf_status s = check_lengths(m, off, n, &max_len, err);
    if (s != KF_OK || n == 0) return s;
    const int V = m->n_vocab;
    kf_ctx *c = NULL;
    float *logits = malloc(sizeof *logits * (size_t)max_len * (size_t)V);
    if (!logits) return kf_error_set(err, KF_ERR_NOMEM, "zero-shot: out of memory for %d x %d logits", max_len, V);
    if ((s = kf_ctx_init(&c, m, max_len, 0, err)) == KF_OK)
        for (int i = 0; i < n && s == KF_OK; i++) {
            const int len = (int)(off[i + 1] - off[i]);
            if ((s = kf_forward_prefill(c, ids + off[i], 1, len, logits, err)) == KF_OK)
                lp[i] = sentence_lp(logits, ids + off[i], len, V);
        }
    kf_ctx_free(c);
    free(logits);
    return s;
}

typedef struct {
    const int64_t *off;
    int s;
} by_len;

static int cmp_len(const void *a, const void *b) { // longest first, then by index: deterministic
    const by_len *x = a, *y = b;
    int64_t lx = x->off[x->s + 1] - x->off[x->s], ly = y->off[y->s + 1] - y->off[y->s];
    if (lx != ly) return lx > ly ? -1 : 1;
    return (x->s > y->s) - (x->s < y->s);
}

kf_status kf_eval_sentence_logprobs(const kf_model *m, const int32_t *ids, const int64_t *off, int n, int max_rows,
                                    double *lp, kf_zs_progress_fn progress, void *user, kf_error *err) {
    int max_len;
    kf_status s = check_lengths(m, off, n, &max_len, err);
    if (s != KF_OK || n == 0) return s;
    if (max_rows < max_len) max_rows = max_len;
    const int V = m->n_vocab;
    by_len *order = malloc(sizeof *order * (size_t)n);
    int32_t *tok = malloc(sizeof *tok * (size_t)max_rows);                       // (B, T) of one call
    float *logits = malloc(sizeof *logits * (size_t)max_rows * (size_t)V);       // (B, T, V)
    kf_ctx *c = NULL;
    if (!order || !tok || !logits) {
        s = kf_error_set(err, KF_ERR_NOMEM, "zero-shot: out of memory for %d x %d logits", max_rows, V);
        goto done;
    }
    for (int i = 0; i < n; i++) order[i] = (by_len){off, i};
    qsort(order, (size_t)n, sizeof *order, cmp_len);
    if ((s = kf_ctx_init(&c, m, max_rows, 0, err)) != KF_OK) goto done;
    for (int k = 0; k < n;) {
        // B sentences padded to T, the length of the first (longest) one
        const int T = (int)(off[order[k].s + 1] - off[order[k].s]);
        const int B = n - k < max_rows / T ? n - k : max_rows / T;
        for (int b = 0; b < B; b++) {
            const int si = order[k + b].s, len = (int)(off[si + 1] - off[si]);
            const int32_t *src = ids + off[si];
            memcpy(tok + (size_t)b * T, src, sizeof *tok * (size_t)len);
            for (int t = len; t < T; t++) tok[(size_t)b * T + t] = src[0];
        }
        if ((s = kf_forward_prefill(c, tok, B, T, logits, err)) != KF_OK) goto done;
#pragma omp parallel for schedule(static) if (B > 1)
        for (int b = 0; b < B; b++) {
            const int si = order[k + b].s;
            lp[si] = sentence_lp(logits + (size_t)b * T * V, ids + off[si], (int)(off[si + 1] - off[si]), V);
        }
        k += B;
        if (progress) progress(user, k, n);
    }
done:
    kf_ctx_free(c);
    free(order);
    free(tok);
    free(logits);
    return s;
}
