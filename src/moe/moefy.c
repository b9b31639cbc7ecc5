// The moefy pipeline (moefy.h): statistics, split, reorder, router sample,
// routers, expert fields.
#include "moe/moefy.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "calib/calib.h"
#include "moe/router.h"
#include "moe/split.h"
#include "runtime/forward.h"
#include "runtime/moe.h"

void kf_moefy_opts_default(kf_moefy_opts *o) {
    *o = (kf_moefy_opts){.n_expert = 16,
                         .split = KF_SPLIT_KMEANS,
                         .router = KF_MOEFY_MLP,
                         .top_k = 4,
                         .coverage = 0.9f,
                         .ctx = 256,
                         .batch = 4,
                         .n_tokens = 65536,
                         .router_tokens = 16384,
                         .hidden = 64,
                         .epochs = 8,
                         .lr = 5e-3f,
                         .fold_keep = 0.25,
                         .seed = 1};
}

void kf_moefy_report_free(kf_moefy_report *r) {
    if (!r) return;
    free(r->layers);
    r->layers = NULL;
}

// ---- calibration passes through the hooks -------------------------------------------

typedef struct {
    const kf_model *m;
    int E;
    kf_moments *mo;   // pass 1: (n_layer) activation statistics; layers [g0, g1) recorded
    int g0, g1;
    float **X, **Y;   // pass 2: (n_layer) each (cap, C) and (cap, E)
    int cur, cap;     // pass 2: rows filled, rows wanted
    int64_t done;     // tokens run in this pass
    float *scratch;   // pass 2: (rows per call, C)
    kf_status st;
    kf_error err;
} recorder;

static void record_hook(void *user, int l, kf_hook_point p, float *x, int n, int dim) {
    recorder *r = user;
    if (r->st != KF_OK) return;
    if (r->mo) {
        if (p == KF_HOOK_FFN_ACT && l >= r->g0 && l < r->g1) r->st = kf_moments_add(&r->mo[l], x, n, &r->err);
        return;
    }
    int take = r->cap - r->cur < n ? r->cap - r->cur : n;
    if (take <= 0) return;
    const kf_layer *L = &r->m->layers[l];
    const int C = r->m->n_embd;
    if (p == KF_HOOK_FFN_IN)
        memcpy(r->X[l] + (int64_t)r->cur * C, x, sizeof(float) * (size_t)take * C);
    else if (p == KF_HOOK_FFN_ACT)
        kf_moe_expert_norms(L->w_down.data, C, dim, r->E, x, take, r->Y[l] + (int64_t)r->cur * r->E, r->scratch);
}

// Pass 2 stops once the router sample is full.
static kf_status sample_full(void *user, kf_calib_batch *b, kf_error *err) {
    (void)err;
    const recorder *r = user;
    b->stop = !r->mo && r->cur >= r->cap;
    return KF_OK;
}

static kf_status after_batch(void *user, kf_calib_batch *b, kf_error *err) {
    recorder *r = user;
    if (r->st != KF_OK) return kf_error_set(err, r->st, "%s", r->err.msg);
    if (!r->mo) r->cur = r->cur + b->n * b->ctx < r->cap ? r->cur + b->n * b->ctx : r->cap;
    r->done = b->done * b->ctx;
    return KF_OK;
}

// Runs the calibration windows (at most max_tokens tokens) through blocks
// [0, end) of m with the recorder hooked; in pass 2 until the sample is full.
// *done: tokens run.
static kf_status run_windows(const kf_model *m, const int32_t *ids, int64_t n_ids, int bos_id, const kf_moefy_opts *o,
                             int64_t max_tokens, int end, recorder *r, unsigned points, int64_t *done, kf_error *err) {
    kf_calib_protocol p = kf_calib_protocol_make(o->ctx, bos_id);
    p.batch = o->batch;
    p.max_tokens = max_tokens;
    kf_status s = kf_calib_check(&p, m, n_ids, "moefy", err);
    if (s != KF_OK) return s;
    kf_ctx *c;
    if ((s = kf_ctx_init(&c, m, kf_calib_max_rows(&p, n_ids), 0, err)) != KF_OK) return s;
    kf_ctx_set_hook(c, record_hook, r, points);
    r->done = 0;
    if ((s = kf_ctx_set_layers(c, 0, end, err)) == KF_OK)
        s = kf_calib_run(c, m, ids, n_ids, &p, &(kf_calib_sink){.before = sample_full, .after = after_batch, .user = r},
                     err);
    *done = r->done;
    kf_ctx_free(c);
    return s;
}

// ---- the pipeline ------------------------------------------------------------------------

static kf_status check_opts(const kf_model *m, const kf_moefy_opts *o, kf_error *err) {
    const int E = o->n_expert;
    if (E < 1) return kf_error_set(err, KF_ERR_ARG, "moefy: need at least one expert");
    if (o->top_k < 0 || o->top_k > E || (o->top_k == 0 && !(o->coverage > 0 && o->coverage <= 1)))
        return kf_error_set(err, KF_ERR_ARG, "moefy: top-k %d must be in [1, %d], or coverage in (0, 1]", o->top_k, E);
    if (o->ctx < 2 || o->batch < 1 || o->router_tokens < 16 || o->epochs < 1 || o->hidden < 1 || !(o->lr > 0))
        return kf_error_set(err, KF_ERR_ARG, "moefy: bad options (ctx %d, batch %d, router tokens %d, epochs %d)",
                            o->ctx, o->batch, o->router_tokens, o->epochs);
    if (m->pos == KF_POS_LEARNED && o->ctx > m->n_ctx_train)
        return kf_error_set(err, KF_ERR_ARG, "moefy: ctx %d exceeds the model's %d positions", o->ctx, m->n_ctx_train);
    for (int l = 0; l < m->n_layer; l++) {
        const kf_layer *L = &m->layers[l];
        if (L->n_expert > 0) return kf_error_set(err, KF_ERR_ARG, "moefy: layer %d is already a mixture of experts", l);
        if (L->n_ff % E != 0 || L->n_ff < E)
            return kf_error_set(err, KF_ERR_ARG, "moefy: layer %d's %d neurons do not form %d equal experts", l,
                                L->n_ff, E);
    }
    return KF_OK;
}

static int moefy_topk(const kf_moefy_opts *o, int F) {
    int topk = o->split == KF_SPLIT_COACT ? (o->coact_topk > 0 ? o->coact_topk : (F / 32 > 4 ? F / 32 : 4)) : 0;
    return topk > F ? F : topk;
}

kf_status kf_moefy_plan_make(const kf_model *m, const kf_moefy_opts *o, kf_moefy_plan *p, kf_error *err) {
    memset(p, 0, sizeof *p);
    const int L = m->n_layer;
    if (!(p->group_first = malloc(sizeof *p->group_first * (size_t)(L + 1))))
        return kf_error_set(err, KF_ERR_NOMEM, "moefy: out of memory for the memory plan");
    p->group_first[0] = 0;
    if (o->split == KF_SPLIT_KMEANS || o->stats) { // nothing recorded
        p->n_groups = 1, p->group_first[1] = L;
        return KF_OK;
    }
    // the split's scratch of the widest layer: fold's correlation matrix, coact's graph
    int64_t scratch = 0, group = 0;
    for (int l = 0; l < L; l++) {
        const int64_t F = m->layers[l].n_ff, sc = o->split == KF_SPLIT_FOLD ? 8 * F * F + 24 * F : 32 * F * F / 8;
        scratch = sc > scratch ? sc : scratch;
        int64_t b = kf_moments_bytes((int)F, moefy_topk(o, (int)F), 0);
        p->bytes_one_pass += b;
        p->bytes_min = b > p->bytes_min ? b : p->bytes_min;
    }
    p->bytes_one_pass += scratch;
    p->bytes_min += scratch;
    if (o->max_memory > 0 && p->bytes_min > o->max_memory) {
        kf_status st = kf_error_set(err, KF_ERR_ARG, "moefy: --max-memory %.1f MiB is too small: one layer needs %.1f MiB",
                                    o->max_memory / 1048576.0, p->bytes_min / 1048576.0);
        kf_moefy_plan_free(p);
        return st;
    }
    for (int l = 0; l < L; l++) {
        int64_t b = kf_moments_bytes(m->layers[l].n_ff, moefy_topk(o, m->layers[l].n_ff), 0);
        if (o->max_memory > 0 && l > p->group_first[p->n_groups] && scratch + group + b > o->max_memory) {
            p->bytes = scratch + group > p->bytes ? scratch + group : p->bytes;
            p->group_first[++p->n_groups] = l;
            group = 0;
        }
        group += b;
    }
    p->bytes = scratch + group > p->bytes ? scratch + group : p->bytes;
    p->group_first[++p->n_groups] = L;
    return KF_OK;
}

void kf_moefy_plan_free(kf_moefy_plan *p) {
    free(p->group_first);
    memset(p, 0, sizeof *p);
}

// Statistics of layer l: from the file, or from the pass-1 accumulators.
static kf_status layer_stats(const kf_model *m, const kf_moefy_opts *o, kf_moments *mo, int l, const kf_moments **out,
                             kf_error *err) {
    if (!o->stats) {
        *out = &mo[l];
        return KF_OK;
    }
    char name[64];
    snprintf(name, sizeof name, "layer.%d.ffn_act", l);
    const kf_moments *f = kf_statsfile_get(o->stats, name);
    if (!f || f->d != m->layers[l].n_ff)
        return kf_error_set(err, KF_ERR_ARG, "moefy: the statistics file has no %s of %d dims", name,
                            m->layers[l].n_ff);
    *out = f;
    return KF_OK;
}

kf_status kf_moefy_run(kf_model *m, const int32_t *ids, int64_t n_ids, int bos_id, const kf_moefy_opts *o,
                       kf_moefy_report *rep, kf_error *err) {
    memset(rep, 0, sizeof *rep);
    kf_status s = check_opts(m, o, err);
    if (s != KF_OK) return s;
    if (!ids || n_ids < o->ctx)
        return kf_error_set(err, KF_ERR_ARG, "moefy: calibration text of %lld tokens is shorter than one window (%d)",
                            (long long)n_ids, o->ctx);
    const int L = m->n_layer, E = o->n_expert, C = m->n_embd;
    rep->n_layer = L;
    rep->layers = calloc((size_t)L, sizeof *rep->layers);
    kf_moments *mo = NULL;
    int32_t **labels = NULL;
    kf_moefy_plan plan = {0};
    recorder r = {.m = m, .E = E};
    r.X = calloc((size_t)L, sizeof *r.X);
    r.Y = calloc((size_t)L, sizeof *r.Y);
    if (!rep->layers || !r.X || !r.Y) {
        s = kf_error_set(err, KF_ERR_NOMEM, "moefy: out of memory");
        goto done;
    }

    // 1. statistics and 2. split, a group of layers at a time; then reorder
    const bool need_stats = o->split != KF_SPLIT_KMEANS;
    if ((s = kf_moefy_plan_make(m, o, &plan, err)) != KF_OK) goto done;
    if (!(labels = calloc((size_t)L, sizeof *labels)) || (need_stats && !o->stats && !(mo = calloc((size_t)L, sizeof *mo)))) {
        s = kf_error_set(err, KF_ERR_NOMEM, "moefy: out of memory");
        goto done;
    }
    for (int g = 0; g < plan.n_groups; g++) {
        const int g0 = plan.group_first[g], g1 = plan.group_first[g + 1];
        for (int l = g0; l < g1 && s == KF_OK; l++)
            if (!(labels[l] = malloc(sizeof(int32_t) * (size_t)m->layers[l].n_ff)))
                s = kf_error_set(err, KF_ERR_NOMEM, "moefy: out of memory");
        if (mo) {
            for (int l = g0; l < g1 && s == KF_OK; l++) {
                const int F = m->layers[l].n_ff;
                s = kf_moments_init(&mo[l], F, moefy_topk(o, F), 0, err);
            }
            if (s != KF_OK) goto done;
            if (o->progress) o->progress(o->progress_user, "statistics", g0, L);
            r.mo = mo, r.g0 = g0, r.g1 = g1;
            int64_t ran_stats;
            s = run_windows(m, ids, n_ids, bos_id, o, o->n_tokens, g1, &r, 1u << KF_HOOK_FFN_ACT, &ran_stats, err);
            rep->n_calib_tokens = ran_stats;
            r.mo = NULL;
            if (s != KF_OK) goto done;
        }
        for (int l = g0; l < g1; l++) {
            if (o->progress) o->progress(o->progress_user, "split", l, L);
            const kf_moments *st = NULL;
            if (need_stats && (s = layer_stats(m, o, mo, l, &st, err)) != KF_OK) goto done;
            if (o->split == KF_SPLIT_KMEANS) s = kf_moe_split_kmeans(m, l, E, o->seed, labels[l], err);
            else if (o->split == KF_SPLIT_COACT) s = kf_moe_split_coact(st, E, o->seed + (uint64_t)l, labels[l], err);
            else s = kf_moe_split_fold(st, E, o->fold_keep, labels[l], err);
            if (mo) kf_moments_free(&mo[l]);
            if (s != KF_OK) goto done;
        }
    }
    for (int l = 0; l < L; l++)
        if ((s = kf_moe_permute_layer(m, l, labels[l], E, NULL, err)) != KF_OK) goto done;

    // 3. router sample
    const int cap = o->router_tokens;
    r.cap = cap;
    r.scratch = malloc(sizeof(float) * (size_t)o->batch * o->ctx * C);
    if (!r.scratch) {
        s = kf_error_set(err, KF_ERR_NOMEM, "moefy: out of memory");
        goto done;
    }
    for (int l = 0; l < L; l++) {
        r.X[l] = malloc(sizeof(float) * (size_t)cap * C);
        r.Y[l] = malloc(sizeof(float) * (size_t)cap * E);
        if (!r.X[l] || !r.Y[l]) {
            s = kf_error_set(err, KF_ERR_NOMEM, "moefy: out of memory for a router sample of %d tokens", cap);
            goto done;
        }
    }
    if (o->progress) o->progress(o->progress_user, "sample", 0, L);
    int64_t ran;
    s = run_windows(m, ids, n_ids, bos_id, o, n_ids, L, &r, (1u << KF_HOOK_FFN_IN) | (1u << KF_HOOK_FFN_ACT), &ran,
                    err);
    if (s != KF_OK) goto done;
    const int n = r.cur, n_val = n / 8, n_tr = n - n_val;
    if (n_val < 1) {
        s = kf_error_set(err, KF_ERR_ARG, "moefy: a router sample of %d tokens leaves none held out", n);
        goto done;
    }
    rep->n_train = n_tr;
    rep->n_heldout = n_val;
    rep->k_eval = o->top_k > 0 ? o->top_k : (E / 4 > 1 ? E / 4 : 1);

    // 4. routers, 5. expert fields
    for (int l = 0; l < L; l++) {
        if (o->progress) o->progress(o->progress_user, "router", l, L);
        kf_layer *ly = &m->layers[l];
        kf_moefy_layer *lr = &rep->layers[l];
        const float *Xv = r.X[l] + (int64_t)n_tr * C, *Yv = r.Y[l] + (int64_t)n_tr * E;
        ly->top_k = o->top_k;
        ly->coverage = o->top_k > 0 ? 0 : o->coverage;
        if ((s = kf_router_similarity(m, l, E, err)) != KF_OK) goto done;
        if ((s = kf_router_recall(ly, E, Xv, Yv, n_val, rep->k_eval, &lr->recall_similarity, &lr->share, err)) !=
            KF_OK)
            goto done;
        lr->recall = lr->recall_similarity;
        lr->loss = NAN;
        if (o->router == KF_MOEFY_LINEAR || o->router == KF_MOEFY_MLP) {
            kf_router_train_opts to;
            kf_router_train_opts_default(&to);
            to.hidden = o->router == KF_MOEFY_MLP ? o->hidden : 0;
            to.epochs = o->epochs;
            to.lr = o->lr;
            to.seed = o->seed;
            if ((s = kf_router_train(m, l, E, r.X[l], r.Y[l], n_tr, &to, &lr->loss, err)) != KF_OK) goto done;
            if ((s = kf_router_recall(ly, E, Xv, Yv, n_val, rep->k_eval, &lr->recall, &lr->share, err)) != KF_OK)
                goto done;
        } else if (o->router == KF_MOEFY_ORACLE) {
            ly->router = KF_ROUTER_ORACLE;
            ly->router_w = ly->router_b = ly->router_w2 = ly->router_b2 = (kf_tensor){0};
            lr->recall = 1;
            double picked = 0;
            int *sel = malloc(sizeof(int) * (size_t)E * 2);
            if (!sel) {
                s = kf_error_set(err, KF_ERR_NOMEM, "moefy: out of memory");
                goto done;
            }
            for (int i = 0; i < n_val; i++)
                picked += kf_moe_select(Yv + (int64_t)i * E, E, ly->top_k, ly->coverage, sel, sel + E);
            free(sel);
            lr->share = picked / ((double)n_val * E);
        }
        ly->n_expert = E;
    }
    s = kf_model_validate(m, "moefy", err);
done:
    if (mo)
        for (int l = 0; l < L; l++) kf_moments_free(&mo[l]);
    free(mo);
    for (int l = 0; labels && l < L; l++) free(labels[l]);
    free(labels);
    kf_moefy_plan_free(&plan);
    for (int l = 0; r.X && l < L; l++) free(r.X[l]);
    for (int l = 0; r.Y && l < L; l++) free(r.Y[l]);
    free(r.X);
    free(r.Y);
    free(r.scratch);
    if (s != KF_OK) kf_moefy_report_free(rep);
    return s;
}
