// Loss with neurons removed, through a zeroing hook (ablate.h).
#include "eval/perplexity.h"
#include "runtime/forward.h"
#include "specialise/ablate.h"

typedef struct {
    const kf_spec_mask *mask;
    int n_vocab;
    double nll;
    int64_t n;
} scorer;

static void on_act(void *user, int layer, kf_hook_point point, float *x, int n, int dim) {
    const kf_spec_mask *mk = ((scorer *)user)->mask;
    const int32_t *idx = mk->idx + mk->off[layer];
    for (int r = 0; r < n; r++)
        for (int i = 0; i < mk->n[layer]; i++) x[(int64_t)r * dim + idx[i]] = 0.0f;
}

static kf_status after(void *user, kf_calib_batch *b, kf_error *err) {
    scorer *s = user;
    for (int w = 0; w < b->n; w++)
        for (int t = 0; t + 1 < b->ctx; t++) {
            const int64_t row = (int64_t)w * b->ctx + t;
            s->nll -= kf_log_softmax_at(b->logits + row * s->n_vocab, s->n_vocab, b->tokens[row + 1]);
            s->n++;
        }
    return KF_OK;
}

kf_status kf_spec_loss(const kf_model *m, const int32_t *ids, int64_t n_ids, const kf_calib_protocol *p,
                       const kf_spec_mask *mask, double *nll, kf_error *err) {
    kf_status st = kf_calib_check(p, m, n_ids, "specialise", err);
    if (st != KF_OK) return st;
    kf_ctx *c;
    st = kf_ctx_init(&c, m, kf_calib_max_rows(p, n_ids), 0, err);
    if (st != KF_OK) return st;
    scorer s = {.mask = mask, .n_vocab = m->n_vocab};
    if (mask) kf_ctx_set_hook(c, on_act, &s, 1u << KF_HOOK_FFN_ACT);
    kf_calib_sink sink = {.after = after, .user = &s, .logits = true};
    st = kf_calib_run(c, m, ids, n_ids, p, &sink, err);
    kf_ctx_free(c);
    *nll = s.n > 0 ? s.nll / (double)s.n : 0;
    return st;
}
