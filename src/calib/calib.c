#include "calib/calib.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

kf_calib_protocol kf_calib_protocol_make(int ctx, int bos_id) {
    return (kf_calib_protocol){.ctx = ctx, .batch = 4, .bos_id = bos_id, .max_tokens = 0, .rank = 0, .n_ranks = 1};
}

int64_t kf_calib_n_windows(const kf_calib_protocol *p, int64_t n_ids) {
    int64_t n = p->max_tokens > 0 && p->max_tokens < n_ids ? p->max_tokens : n_ids;
    return p->ctx > 0 && n > 0 ? n / p->ctx : 0;
}

int64_t kf_calib_n_rank_windows(const kf_calib_protocol *p, int64_t n_ids) {
    const int64_t n_win = kf_calib_n_windows(p, n_ids), n_batches = (n_win + p->batch - 1) / p->batch;
    int64_t mine = 0;
    for (int64_t b = p->rank; b < n_batches; b += p->n_ranks)
        mine += (b + 1) * p->batch <= n_win ? p->batch : n_win - b * p->batch;
    return mine;
}

int kf_calib_max_rows(const kf_calib_protocol *p, int64_t n_ids) {
    const int64_t n_win = kf_calib_n_windows(p, n_ids);
    return (int)(n_win < p->batch ? n_win : p->batch) * p->ctx;
}

kf_status kf_calib_check(const kf_calib_protocol *p, const kf_model *m, int64_t n_ids, const char *what,
                         kf_error *err) {
    if (p->ctx < 2 || p->batch < 1 || (int64_t)p->ctx * p->batch > (1 << 24))
        return kf_error_set(err, KF_ERR_ARG, "%s: bad calibration windows (ctx %d, batch %d)", what, p->ctx, p->batch);
    if (p->n_ranks < 1 || p->rank < 0 || p->rank >= p->n_ranks)
        return kf_error_set(err, KF_ERR_ARG, "%s: rank %d is not in [0, %d)", what, p->rank, p->n_ranks);
    if (m->pos == KF_POS_LEARNED && p->ctx > m->n_ctx_train)
        return kf_error_set(err, KF_ERR_ARG, "%s: ctx %d exceeds the model's %d learned positions", what, p->ctx,
                            m->n_ctx_train);
    if (p->bos_id >= m->n_vocab)
        return kf_error_set(err, KF_ERR_ARG, "%s: BOS id %d is outside the vocabulary of %d", what, p->bos_id,
                            m->n_vocab);
    if (kf_calib_n_windows(p, n_ids) < 1)
        return kf_error_set(err, KF_ERR_ARG, "%s: %lld tokens, fewer than one window of %d", what, (long long)n_ids,
                            p->ctx);
    return KF_OK;
}

void kf_calib_describe(const kf_calib_protocol *p, char *buf, size_t size) {
    if (p->bos_id >= 0) snprintf(buf, size, "ctx %d with BOS %d", p->ctx, p->bos_id);
    else snprintf(buf, size, "ctx %d and no BOS", p->ctx);
}

kf_status kf_calib_check_same(const kf_calib_protocol *had, const kf_calib_protocol *want, const char *what,
                              kf_error *err) {
    if (had->ctx == want->ctx && had->bos_id == want->bos_id) return KF_OK;
    char a[64], b[64];
    kf_calib_describe(had, a, sizeof a);
    kf_calib_describe(want, b, sizeof b);
    return kf_error_set(err, KF_ERR_ARG, "%s was gathered with %s; this run uses %s", what, a, b);
}

kf_status kf_calib_run(kf_ctx *c, const kf_model *m, const int32_t *ids, int64_t n_ids, const kf_calib_protocol *p,
                       const kf_calib_sink *sink, kf_error *err) {
    kf_status s = kf_calib_check(p, m, n_ids, "calibration", err);
    if (s != KF_OK) return s;
    const int64_t n_win = kf_calib_n_windows(p, n_ids), n_batches = (n_win + p->batch - 1) / p->batch;
    const int ctx = p->ctx, B = kf_calib_max_rows(p, n_ids) / ctx;
    int32_t *win = malloc(sizeof *win * (size_t)B * ctx);
    float *logits = sink->logits ? malloc(sizeof *logits * (size_t)B * ctx * m->n_vocab) : NULL;
    if (!win || (sink->logits && !logits)) {
        free(win);
        return kf_error_set(err, KF_ERR_NOMEM, "calibration: out of memory for %d windows of %d tokens", B, ctx);
    }
    kf_calib_batch b = {.ctx = ctx, .tokens = win, .total = kf_calib_n_rank_windows(p, n_ids)};
    for (int64_t k = p->rank; k < n_batches && s == KF_OK && !b.stop; k += p->n_ranks) {
        b.first = k * p->batch;
        b.n = n_win - b.first < p->batch ? (int)(n_win - b.first) : p->batch;
        b.logits = NULL;
        memcpy(win, ids + b.first * ctx, sizeof *win * (size_t)b.n * ctx);
        if (p->bos_id >= 0)
            for (int w = 0; w < b.n; w++) win[(size_t)w * ctx] = p->bos_id;
        if (sink->before && (s = sink->before(sink->user, &b, err)) != KF_OK) break;
        if (b.stop) break;
        if ((s = kf_forward_prefill(c, win, b.n, ctx, logits, err)) != KF_OK) break;
        b.done += b.n;
        b.logits = logits;
        if (sink->after) s = sink->after(sink->user, &b, err);
    }
    free(win);
    free(logits);
    return s;
}
