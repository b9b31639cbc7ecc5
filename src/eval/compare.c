#include "eval/compare.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/file.h"
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

typedef struct {
    int n_models, V, n_chunks;
    kf_ctx **fm;
    double **kl;
    double *sums; // per model: nll, nll^2, kl, seconds
    int64_t *agree, n_scored;
    float *lm;    // the models' logits of one batch
    double nll_r, nll2_r, secs_r, t_call;
    kf_compare_result *out;
    kf_ppl_progress_fn progress;
    void *user;
} compare_run;

static kf_status before_ref(void *user, kf_calib_batch *b, kf_error *err) {
    (void)b, (void)err;
    ((compare_run *)user)->t_call = kf_time_now();
    return KF_OK;
}

// The reference's logits are in b; each model runs the same windows and is
// scored against them.
static kf_status after_ref(void *user, kf_calib_batch *b, kf_error *err) {
    compare_run *r = user;
    const int ctx = b->ctx, V = r->V, first = ctx / 2;
    const float *lr = b->logits;
    r->secs_r += kf_time_now() - r->t_call;
    for (int w = 0; w < b->n; w++) {
        const int32_t *tok = b->tokens + (size_t)w * ctx;
        for (int j = first; j < ctx - 1; j++) {
            double v = -kf_log_softmax_at(lr + ((size_t)w * ctx + j) * V, V, tok[j + 1]);
            r->nll_r += v, r->nll2_r = fma(v, v, r->nll2_r); // as kf_eval_perplexity: the same ppl_se
        }
    }
    int64_t n_before = r->n_scored;
    for (int k = 0; k < r->n_models; k++) {
        double *sk = r->sums + 4 * k, t1 = kf_time_now();
        kf_status s = kf_forward_prefill(r->fm[k], b->tokens, b->n, ctx, r->lm, err);
        if (s != KF_OK) return s;
        sk[3] += kf_time_now() - t1;
        int64_t n = n_before;
        for (int w = 0; w < b->n; w++) {
            const int32_t *tok = b->tokens + (size_t)w * ctx;
            for (int j = first; j < ctx - 1; j++) {
                const float *pm = r->lm + ((size_t)w * ctx + j) * V, *pr = lr + ((size_t)w * ctx + j) * V;
                double v = -kf_log_softmax_at(pm, V, tok[j + 1]), d = kf_kl_logits(pr, pm, V);
                sk[0] += v, sk[1] += v * v, sk[2] += d;
                r->kl[k][n++] = d;
                r->agree[k] += argmax(pm, V) == argmax(pr, V);
            }
        }
        r->n_scored = n;
        kf_compare_result *o = &r->out[k];
        o->n_scored = o->model.n_scored = o->ref.n_scored = n;
        o->model.n_chunks = o->ref.n_chunks = (int)(b->first + b->n);
        o->model.seconds = sk[3];
        o->ref.seconds = r->secs_r;
        kf_ppl_finish(&o->model, sk[0], sk[1]);
        kf_ppl_finish(&o->ref, r->nll_r, r->nll2_r);
    }
    if (r->progress) r->progress(r->user, (int)(b->first + b->n) - 1, r->n_chunks, &r->out[0].model);
    return KF_OK;
}

kf_status kf_eval_compare_many(const kf_model *const *models, int n_models, const kf_model *ref,
                               const int32_t *tokens, int64_t n_tokens, int ctx, int bos_id, kf_compare_result *out,
                               kf_ppl_progress_fn progress, void *user, kf_error *err) {
    if (n_models < 1) return kf_error_set(err, KF_ERR_ARG, "eval: no model to compare");
    memset(out, 0, sizeof *out * (size_t)n_models);
    if (ctx < 4) return kf_error_set(err, KF_ERR_ARG, "eval: --ctx must be at least 4, got %d", ctx);
    const int V = ref->n_vocab;
    const kf_calib_protocol p = kf_eval_protocol(ctx, bos_id);
    kf_status s = check_model(ref, "reference", V, ctx, err);
    for (int k = 0; k < n_models && s == KF_OK; k++) s = check_model(models[k], "model", V, ctx, err);
    if (s == KF_OK) s = kf_calib_check(&p, ref, n_tokens, "eval", err);
    if (s != KF_OK) return s;
    const int64_t n_chunks = kf_calib_n_windows(&p, n_tokens), n_total = n_chunks * (ctx - 1 - ctx / 2);
    const int rows = kf_calib_max_rows(&p, n_tokens);
    // Per model: a forward context, its KL values (for the percentile) and
    // running sums; the reference's logits and NLL are shared.
    kf_ctx *fr = NULL;
    compare_run r = {.n_models = n_models, .V = V, .n_chunks = (int)n_chunks, .out = out,
                     .progress = progress, .user = user};
    r.fm = calloc((size_t)n_models, sizeof *r.fm);
    r.kl = calloc((size_t)n_models, sizeof *r.kl);
    r.sums = calloc((size_t)n_models * 4, sizeof *r.sums);
    r.agree = calloc((size_t)n_models, sizeof *r.agree);
    r.lm = malloc(sizeof *r.lm * (size_t)rows * (size_t)V);
    if (!r.fm || !r.kl || !r.sums || !r.agree || !r.lm) {
        s = kf_error_set(err, KF_ERR_NOMEM, "eval: out of memory for %d windows of %d tokens", rows / ctx, ctx);
        goto done;
    }
    if ((s = kf_ctx_init(&fr, ref, rows, 0, err)) != KF_OK) goto done;
    for (int k = 0; k < n_models; k++) {
        if ((s = kf_ctx_init(&r.fm[k], models[k], rows, 0, err)) != KF_OK) goto done;
        if (!(r.kl[k] = malloc(sizeof *r.kl[k] * (size_t)n_total))) {
            s = kf_error_set(err, KF_ERR_NOMEM, "eval: out of memory for %lld KL values", (long long)n_total);
            goto done;
        }
    }
    kf_calib_sink sink = {.before = before_ref, .after = after_ref, .user = &r, .logits = true};
    if ((s = kf_calib_run(fr, ref, tokens, n_tokens, &p, &sink, err)) != KF_OK) goto done;
    for (int k = 0; k < n_models; k++) {
        finish_kl(&out[k], r.kl[k], r.sums[4 * k + 2], r.agree[k]);
        out[k].ffn_share = kf_ctx_ffn_share(r.fm[k]);
    }
done:
    if (r.fm)
        for (int k = 0; k < n_models; k++) kf_ctx_free(r.fm[k]);
    if (r.kl)
        for (int k = 0; k < n_models; k++) free(r.kl[k]);
    free(r.fm);
    free(r.kl);
    free(r.sums);
    free(r.agree);
    free(r.lm);
    kf_ctx_free(fr);
    return s;
}

kf_status kf_eval_compare(const kf_model *m, const kf_model *ref, const int32_t *tokens, int64_t n_tokens, int ctx,
                          int bos_id, kf_compare_result *out, kf_ppl_progress_fn progress, void *user, kf_error *err) {
    return kf_eval_compare_many(&m, 1, ref, tokens, n_tokens, ctx, bos_id, out, progress, user, err);
}

// ---- reference first, then each model against its cached logits ----------------

static uint64_t tokens_hash(const int32_t *t, int64_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    const unsigned char *b = (const unsigned char *)t;
    for (size_t i = 0; i < (size_t)n * sizeof *t; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

typedef struct {
    kf_eval_ref_cache *c;
    double nll, nll2, secs, t_call;
} ref_pass;

static kf_status before_time(void *user, kf_calib_batch *b, kf_error *err) {
    (void)b, (void)err;
    ((ref_pass *)user)->t_call = kf_time_now();
    return KF_OK;
}

// The reference's NLL as after_ref sums it; its scored rows to the file.
static kf_status after_cache(void *user, kf_calib_batch *b, kf_error *err) {
    ref_pass *r = user;
    kf_eval_ref_cache *c = r->c;
    const int ctx = b->ctx, V = c->V, first = ctx / 2, per_w = ctx - 1 - first;
    r->secs += kf_time_now() - r->t_call;
    for (int w = 0; w < b->n; w++) {
        const int32_t *tok = b->tokens + (size_t)w * ctx;
        for (int j = first; j < ctx - 1; j++) {
            double v = -kf_log_softmax_at(b->logits + ((size_t)w * ctx + j) * V, V, tok[j + 1]);
            r->nll += v, r->nll2 = fma(v, v, r->nll2);
        }
        off_t off = (off_t)(((b->first + w) * per_w) * (int64_t)V * (int64_t)sizeof(float));
        if (!kf_file_pio(c->fd, (void *)(b->logits + ((size_t)w * ctx + first) * V), (size_t)per_w * V * sizeof(float), off,
                     true))
            return kf_error_set(err, KF_ERR_IO, "eval: cannot write the reference's logits to a temporary file "
                                "(TMPDIR full?)");
    }
    return KF_OK;
}

kf_status kf_eval_ref_cache_make(const kf_model *ref, const int32_t *tokens, int64_t n_tokens, int ctx, int bos_id,
                                 kf_eval_ref_cache *c, kf_error *err) {
    memset(c, 0, sizeof *c);
    c->fd = -1;
    if (ctx < 4) return kf_error_set(err, KF_ERR_ARG, "eval: --ctx must be at least 4, got %d", ctx);
    const kf_calib_protocol p = kf_eval_protocol(ctx, bos_id);
    kf_status s = check_model(ref, "reference", ref->n_vocab, ctx, err);
    if (s == KF_OK) s = kf_calib_check(&p, ref, n_tokens, "eval", err);
    if (s != KF_OK) return s;
    c->fd = kf_file_temp_fd();
    if (c->fd < 0) return kf_error_set(err, KF_ERR_IO, "eval: cannot create a temporary file for the reference's logits");
    c->V = ref->n_vocab, c->ctx = ctx, c->bos_id = bos_id, c->n_tokens = n_tokens;
    c->n_chunks = kf_calib_n_windows(&p, n_tokens);
    c->n_scored = c->n_chunks * (ctx - 1 - ctx / 2);
    c->tokens_hash = tokens_hash(tokens, n_tokens);
    kf_ctx *fr = NULL;
    ref_pass r = {.c = c};
    if ((s = kf_ctx_init(&fr, ref, kf_calib_max_rows(&p, n_tokens), 0, err)) == KF_OK)
        s = kf_calib_run(fr, ref, tokens, n_tokens, &p,
                         &(kf_calib_sink){.before = before_time, .after = after_cache, .user = &r, .logits = true}, err);
    kf_ctx_free(fr);
    if (s != KF_OK) {
        kf_eval_ref_cache_free(c);
        return s;
    }
    c->ref.n_scored = c->n_scored;
    c->ref.n_chunks = (int)c->n_chunks;
    c->ref.seconds = r.secs;
    kf_ppl_finish(&c->ref, r.nll, r.nll2);
    return KF_OK;
}

void kf_eval_ref_cache_free(kf_eval_ref_cache *c) {
    if (c->fd >= 0) close(c->fd);
    memset(c, 0, sizeof *c);
    c->fd = -1;
}

typedef struct {
    const kf_eval_ref_cache *c;
    float *lr;      // (windows of a batch, scored rows, V) the reference's logits of the batch
    double *kl;     // (n_scored)
    double sums[3]; // nll, nll^2, kl
    int64_t agree, n;
    double secs, t_call;
    kf_compare_result *out;
    kf_ppl_progress_fn progress;
    void *user;
} cached_run;

static kf_status before_cached(void *user, kf_calib_batch *b, kf_error *err) {
    (void)b, (void)err;
    ((cached_run *)user)->t_call = kf_time_now();
    return KF_OK;
}

// The model's logits are in b, the reference's come from the file; the sums
// are after_ref's, in its order.
static kf_status after_cached(void *user, kf_calib_batch *b, kf_error *err) {
    cached_run *r = user;
    const kf_eval_ref_cache *c = r->c;
    const int ctx = b->ctx, V = c->V, first = ctx / 2, per_w = ctx - 1 - first;
    r->secs += kf_time_now() - r->t_call;
    off_t off = (off_t)((b->first * per_w) * (int64_t)V * (int64_t)sizeof(float));
    if (!kf_file_pio(c->fd, r->lr, (size_t)b->n * per_w * V * sizeof(float), off, false))
        return kf_error_set(err, KF_ERR_IO, "eval: cannot read the reference's cached logits");
    for (int w = 0; w < b->n; w++) {
        const int32_t *tok = b->tokens + (size_t)w * ctx;
        for (int j = first; j < ctx - 1; j++) {
            const float *pm = b->logits + ((size_t)w * ctx + j) * V, *pr = r->lr + ((size_t)w * per_w + j - first) * V;
            double v = -kf_log_softmax_at(pm, V, tok[j + 1]), d = kf_kl_logits(pr, pm, V);
            r->sums[0] += v, r->sums[1] += v * v, r->sums[2] += d;
            r->kl[r->n++] = d;
            r->agree += argmax(pm, V) == argmax(pr, V);
        }
    }
    kf_compare_result *o = r->out;
    o->n_scored = o->model.n_scored = r->n;
    o->model.n_chunks = (int)(b->first + b->n);
    o->model.seconds = r->secs;
    kf_ppl_finish(&o->model, r->sums[0], r->sums[1]);
    if (r->progress) r->progress(r->user, (int)(b->first + b->n) - 1, (int)c->n_chunks, &o->model);
    return KF_OK;
}

kf_status kf_eval_compare_cached(const kf_model *m, const kf_eval_ref_cache *c, const int32_t *tokens,
                                 int64_t n_tokens, kf_compare_result *out, kf_ppl_progress_fn progress, void *user,
                                 kf_error *err) {
    memset(out, 0, sizeof *out);
    if (c->fd < 0 || n_tokens != c->n_tokens || tokens_hash(tokens, n_tokens) != c->tokens_hash)
        return kf_error_set(err, KF_ERR_ARG, "eval: the reference's cached logits are of other tokens");
    kf_status s = check_model(m, "model", c->V, c->ctx, err);
    if (s != KF_OK) return s;
    const kf_calib_protocol p = kf_eval_protocol(c->ctx, c->bos_id);
    const int rows = kf_calib_max_rows(&p, n_tokens);
    cached_run r = {.c = c, .out = out, .progress = progress, .user = user};
    r.lr = malloc(sizeof *r.lr * (size_t)(rows / c->ctx) * (size_t)(c->ctx - 1 - c->ctx / 2) * (size_t)c->V);
    r.kl = malloc(sizeof *r.kl * (size_t)c->n_scored);
    kf_ctx *fm = NULL;
    if (!r.lr || !r.kl) s = kf_error_set(err, KF_ERR_NOMEM, "eval: out of memory for %d windows of %d tokens",
                                         rows / c->ctx, c->ctx);
    if (s == KF_OK && (s = kf_ctx_init(&fm, m, rows, 0, err)) == KF_OK)
        s = kf_calib_run(fm, m, tokens, n_tokens, &p,
                         &(kf_calib_sink){.before = before_cached, .after = after_cached, .user = &r, .logits = true},
                         err);
    if (s == KF_OK) {
        out->ref = c->ref;
        finish_kl(out, r.kl, r.sums[2], r.agree);
        out->ffn_share = kf_ctx_ffn_share(fm);
    }
    kf_ctx_free(fm);
    free(r.lr);
    free(r.kl);
    return s;
}
