// The specialise pipeline (specialise.h): importance, overlap with bootstrap
// intervals and a permutation null, selective pruning against random
// removal, measured single-neuron ablation, expert concentration.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/progress.h"
#include "core/rng.h"
#include "specialise/ablate.h"
#include "specialise/sets.h"
#include "specialise/specialise.h"

void kf_spec_opts_default(kf_spec_opts *o) {
    static const double fracs[] = {0.01, 0.02, 0.05};
    *o = (kf_spec_opts){.ctx = 256, .batch = 4, .bos_id = -1, .tokens = 16384, .eval_tokens = 8192,
                        .kind = KF_IMP_ABS, .fracs = fracs, .n_frac = 3, .n_chunk = 32, .n_boot = 200,
                        .n_null = 2000, .n_random = 3, .ablate_top = 4, .first_order = true, .seed = 1};
}

int kf_spec_n_of(double f, int n_ff) {
    long k = lround(f * n_ff);
    return k < 1 ? 1 : k > n_ff ? n_ff : (int)k;
}

void kf_spec_result_free(kf_spec_result *r) {
    free(r->off);
    free(r->fracs);
    free(r->tokens_used);
    free(r->eval_tokens_used);
    free(r->items_used);
    free(r->importance);
    free(r->base_loss);
    free(r->overlap);
    free(r->sel_focus);
    free(r->sel_retain);
    free(r->rand_mean);
    free(r->rand_sd);
    free(r->n_removed);
    free(r->ablate_idx);
    free(r->ablate_dloss);
    free(r->first_order);
    memset(r, 0, sizeof *r);
}

// Everything one run holds besides the result.
typedef struct {
    const kf_model *m;
    const kf_spec_data *data;
    const kf_spec_opts *o;
    kf_spec_result *r;
    kf_calib_protocol p;
    kf_spec_acts *acts;     // (n_data)
    kf_spec_probe *probe;   // (n_data) task datasets' probes
    float **feats;          // (n_data) task datasets' evaluation features (eval items, n_embd)
    kf_spec_mask mask;      // capacity n_neuron
    kf_spec_ranked *ranked; // (max n_ff)
    int32_t *set;           // (n_data, max n_ff) top sets of one layer
    uint8_t *mark;          // (max n_ff)
    int max_ff;
    int64_t done, total;    // progress
} run;

static void tick(run *u, const char *stage) {
    u->done++;
    if (u->o->progress) u->o->progress(u->o->user, stage, u->done, u->total);
}

static void mask_clear(kf_spec_mask *mk) {
    for (int l = 0; l < mk->n_layer; l++) mk->n[l] = 0;
}

static kf_status eval_loss(run *u, int d, const kf_spec_mask *mask, double *nll, kf_error *err) {
    const kf_spec_data *D = &u->data[d];
    if (D->task) {
        kf_status s = kf_spec_task_run(u->m, &D->task->eval, mask, NULL, u->feats[d], err);
        if (s == KF_OK)
            *nll = kf_spec_probe_loss(&u->probe[d], u->feats[d], D->task->eval.y + D->task->eval.tok->item_off[D->task->eval.s0],
                                      kf_spec_part_items(&D->task->eval), u->o->task_loss);
        return s;
    }
    return kf_spec_loss(u->m, D->ids + u->r->tokens_used[d], u->r->eval_tokens_used[d], &u->p, mask, nll, err);
}

static const double *imp_of(const run *u, const double *imp, int d, int l) {
    return imp + (int64_t)d * u->r->n_neuron + u->r->off[l];
}

static int n_ff(const run *u, int l) { return (int)(u->r->off[l + 1] - u->r->off[l]); }

// Top-k sets of every dataset at layer l from importances imp (n_data, n_neuron).
static void top_sets(run *u, const double *imp, int l, int k) {
    for (int d = 0; d < u->r->n_data; d++)
        kf_spec_top_k(imp_of(u, imp, d, l), n_ff(u, l), k, u->set + (int64_t)d * u->max_ff, u->ranked);
}

static kf_spec_overlap *cell(const kf_spec_result *r, int f, int l, int a, int b) {
    return &r->overlap[(((int64_t)f * r->n_layer + l) * r->n_data + a) * r->n_data + b];
}

static kf_status overlap(run *u, kf_error *err) {
    kf_spec_result *r = u->r;
    const int D = r->n_data, L = r->n_layer, Q = r->n_frac, B = u->o->n_boot, C = u->o->n_chunk;
    const int64_t N = r->n_neuron;
    double *boot = malloc(sizeof *boot * ((size_t)B * Q * L * D * D + 1));
    double *imp = malloc(sizeof *imp * (size_t)D * N), *w = malloc(sizeof *w * (size_t)C);
    double *col = malloc(sizeof *col * ((size_t)B + 1));
    if (!boot || !imp || !w || !col) {
        free(boot), free(imp), free(w), free(col);
        return kf_error_set(err, KF_ERR_NOMEM, "specialise: out of memory for the bootstrap");
    }
    // point estimates
    for (int f = 0; f < Q; f++)
        for (int l = 0; l < L; l++) {
            const int k = kf_spec_n_of(r->fracs[f], n_ff(u, l));
            top_sets(u, r->importance, l, k);
            for (int a = 0; a < D; a++)
                for (int b = 0; b < D; b++) {
                    int in = kf_spec_intersect(u->set + (int64_t)a * u->max_ff, k, u->set + (int64_t)b * u->max_ff, k,
                                               u->mark);
                    cell(r, f, l, a, b)->iou = kf_spec_iou(in, k, k);
                    cell(r, f, l, a, b)->contain = (double)in / k;
                }
        }
    // bootstrap: each dataset's chunks of windows drawn with replacement
    kf_rng rng;
    kf_rng_seed(&rng, u->o->seed);
    for (int rep = 0; rep < B; rep++) {
        for (int d = 0; d < D; d++) {
            const int Cd = u->acts[d].n_chunk;
            for (int c = 0; c < Cd; c++) w[c] = 0;
            for (int c = 0; c < Cd; c++) w[kf_rng_below(&rng, Cd)] += 1;
            kf_spec_acts_importance(&u->acts[d], u->o->kind, w, imp + (int64_t)d * N);
        }
        for (int f = 0; f < Q; f++)
            for (int l = 0; l < L; l++) {
                const int k = kf_spec_n_of(r->fracs[f], n_ff(u, l));
                top_sets(u, imp, l, k);
                for (int a = 0; a < D; a++)
                    for (int b = 0; b < D; b++) {
                        int in = kf_spec_intersect(u->set + (int64_t)a * u->max_ff, k,
                                                   u->set + (int64_t)b * u->max_ff, k, u->mark);
                        boot[(((int64_t)rep * Q + f) * L + l) * D * D + a * D + b] = kf_spec_iou(in, k, k);
                    }
            }
        tick(u, "bootstrap");
    }
    // intervals and the null; the null draws are the same for every pair of a cell
    for (int f = 0; f < Q; f++)
        for (int l = 0; l < L; l++) {
            const int k = kf_spec_n_of(r->fracs[f], n_ff(u, l));
            for (int a = 0; a < D; a++)
                for (int b = 0; b < D; b++) {
                    kf_spec_overlap *o = cell(r, f, l, a, b);
                    for (int rep = 0; rep < B; rep++) col[rep] = boot[(((int64_t)rep * Q + f) * L + l) * D * D + a * D + b];
                    o->iou_lo = B > 0 ? kf_spec_percentile(col, B, 0.025) : NAN;
                    o->iou_hi = B > 0 ? kf_spec_percentile(col, B, 0.975) : NAN;
                    kf_rng nr;
                    kf_rng_seed(&nr, u->o->seed ^ (0x9E3779B97F4A7C15ull * (uint64_t)(f * L + l + 1)));
                    kf_spec_null nu = kf_spec_overlap_null(n_ff(u, l), k, k, o->iou, u->o->n_null, &nr);
                    o->null_mean = nu.mean;
                    o->null_q95 = nu.q95;
                    o->p = nu.p;
                }
        }
    free(boot), free(imp), free(w), free(col);
    return KF_OK;
}

void kf_spec_specific(const double *ia, const double *ib, int F, int k, int32_t *idx, double *ratio,
                      kf_spec_ranked *scratch) {
    double mean = 0;
    for (int j = 0; j < F; j++) mean += 0.5 * (ia[j] + ib[j]);
    const double eps = 1e-3 * mean / F + 1e-30;
    for (int j = 0; j < F; j++) ratio[j] = (ia[j] + eps) / (ib[j] + eps);
    kf_spec_top_k(ratio, F, k, idx, scratch);
}

// Mask of the most focus-specific neurons of every layer.
static void specific_mask(run *u, int a, int b, double frac, double *ratio) {
    mask_clear(&u->mask);
    int pos = 0;
    for (int l = 0; l < u->r->n_layer; l++) {
        const int F = n_ff(u, l), k = kf_spec_n_of(frac, F);
        u->mask.off[l] = pos;
        u->mask.n[l] = k;
        kf_spec_specific(imp_of(u, u->r->importance, a, l), imp_of(u, u->r->importance, b, l), F, k,
                         u->mask.idx + pos, ratio, u->ranked);
        pos += k;
    }
}

static void random_mask(run *u, double frac, int32_t *perm, kf_rng *rng) {
    int pos = 0;
    for (int l = 0; l < u->r->n_layer; l++) {
        const int F = n_ff(u, l), k = kf_spec_n_of(frac, F);
        for (int j = 0; j < F; j++) perm[j] = j;
        u->mask.off[l] = pos;
        u->mask.n[l] = k;
        kf_spec_random_set(F, k, perm, u->mask.idx + pos, rng);
        pos += k;
    }
}

static kf_status pruning(run *u, kf_error *err) {
    kf_spec_result *r = u->r;
    const int D = r->n_data, Q = r->n_frac, R = u->o->n_random;
    double *ratio = malloc(sizeof *ratio * (size_t)u->max_ff), *draws = malloc(sizeof *draws * (size_t)R * D);
    int32_t *perm = malloc(sizeof *perm * (size_t)u->max_ff);
    kf_status s = ratio && draws && perm ? KF_OK : kf_error_set(err, KF_ERR_NOMEM, "specialise: out of memory");
    for (int f = 0; s == KF_OK && f < Q; f++) {
        r->n_removed[f] = 0;
        for (int l = 0; l < r->n_layer; l++) r->n_removed[f] += kf_spec_n_of(r->fracs[f], n_ff(u, l));
        for (int a = 0; s == KF_OK && a < D; a++)
            for (int b = 0; s == KF_OK && b < D; b++) {
                if (a == b) continue;
                const int64_t i = ((int64_t)a * D + b) * Q + f;
                specific_mask(u, a, b, r->fracs[f], ratio);
                s = eval_loss(u, a, &u->mask, &r->sel_focus[i], err);
                if (s == KF_OK) s = eval_loss(u, b, &u->mask, &r->sel_retain[i], err);
                tick(u, "selective pruning");
            }
        kf_rng rng;
        kf_rng_seed(&rng, u->o->seed + 1000003ull * (uint64_t)(f + 1));
        for (int t = 0; s == KF_OK && t < R; t++) {
            random_mask(u, r->fracs[f], perm, &rng);
            for (int d = 0; s == KF_OK && d < D; d++) s = eval_loss(u, d, &u->mask, &draws[t * D + d], err);
            tick(u, "random removal");
        }
        for (int d = 0; s == KF_OK && d < D; d++) {
            double m = 0, v = 0;
            for (int t = 0; t < R; t++) m += draws[t * D + d] / R;
            for (int t = 0; t < R; t++) v += (draws[t * D + d] - m) * (draws[t * D + d] - m);
            r->rand_mean[(int64_t)f * D + d] = m;
            r->rand_sd[(int64_t)f * D + d] = R > 1 ? sqrt(v / (R - 1)) : 0;
        }
    }
    free(ratio), free(draws), free(perm);
    return s;
}

static kf_status ablation(run *u, kf_error *err) {
    kf_spec_result *r = u->r;
    const int A = r->ablate_top;
    kf_status s = KF_OK;
    for (int d = 0; s == KF_OK && d < r->n_data; d++)
        for (int l = 0; s == KF_OK && l < r->n_layer; l++) {
            int32_t *idx = r->ablate_idx + ((int64_t)d * r->n_layer + l) * A;
            kf_spec_top_k(imp_of(u, r->importance, d, l), n_ff(u, l), A, idx, u->ranked);
            for (int i = 0; s == KF_OK && i < A; i++) {
                mask_clear(&u->mask);
                u->mask.off[l] = 0;
                u->mask.n[l] = 1;
                u->mask.idx[0] = idx[i];
                double nll;
                s = eval_loss(u, d, &u->mask, &nll, err);
                r->ablate_dloss[((int64_t)d * r->n_layer + l) * A + i] = nll - r->base_loss[d];
                tick(u, "ablation");
            }
        }
    return s;
}

// A task dataset's importance over its training sentences, and its probe
// trained once on the model as it is; the evaluation features' buffer.
static kf_status task_importance(run *u, int d, kf_error *err) {
    const kf_spec_task *t = u->data[d].task;
    const int C = u->m->n_embd, n_sent = t->train.s1 - t->train.s0;
    const int64_t n = kf_spec_part_items(&t->train);
    kf_status s = kf_spec_acts_init(&u->acts[d], u->m, n_sent < u->o->n_chunk ? n_sent : u->o->n_chunk, err);
    if (s != KF_OK) return s;
    float *feats = malloc(sizeof(float) * (size_t)n * (size_t)C);
    u->feats[d] = malloc(sizeof(float) * (size_t)kf_spec_part_items(&t->eval) * (size_t)C);
    if (!feats || !u->feats[d]) s = kf_error_set(err, KF_ERR_NOMEM, "specialise: out of memory for task %s's features", u->data[d].name);
    if (s == KF_OK) s = kf_spec_task_run(u->m, &t->train, NULL, &u->acts[d], feats, err);
    if (s == KF_OK)
        s = kf_spec_probe_train(&u->probe[d], feats, t->train.y + t->train.tok->item_off[t->train.s0], n, C, t->n_labels, NULL, err);
    free(feats);
    return s;
}

static kf_status check_opts(const kf_model *m, const kf_spec_data *data, int n_data, const kf_spec_opts *o,
                            int max_ff, int min_ff, kf_error *err) {
    if (n_data < 1) return kf_error_set(err, KF_ERR_ARG, "specialise: no dataset");
    if (o->ctx < 2 || o->batch < 1) return kf_error_set(err, KF_ERR_ARG, "specialise: bad ctx %d or batch %d", o->ctx, o->batch);
    if (o->tokens < o->ctx || o->eval_tokens < o->ctx)
        return kf_error_set(err, KF_ERR_ARG, "specialise: --tokens and --eval-tokens must hold a window of %d", o->ctx);
    if (o->n_frac < 1) return kf_error_set(err, KF_ERR_ARG, "specialise: no fraction");
    for (int f = 0; f < o->n_frac; f++)
        if (!(o->fracs[f] > 0 && o->fracs[f] <= 0.5))
            return kf_error_set(err, KF_ERR_ARG, "specialise: fraction %g is not in (0, 0.5]", o->fracs[f]);
    if (o->n_chunk < 1 || o->n_boot < 0 || o->n_null < 1 || o->n_random < 1 || o->ablate_top < 0 ||
        o->ablate_top > min_ff)
        return kf_error_set(err, KF_ERR_ARG, "specialise: bad chunks, replicates, null draws, random draws or ablate count");
    if (o->kind < 0 || o->kind >= KF_IMP_COUNT) return kf_error_set(err, KF_ERR_ARG, "specialise: bad importance kind");
    if (max_ff < 1) return kf_error_set(err, KF_ERR_ARG, "%s: no FFN neurons", m->path);
    for (int d = 0; d < n_data; d++)
        if (data[d].task) {
            const kf_spec_task *t = data[d].task;
            if (t->train.s1 <= t->train.s0 || t->eval.s1 <= t->eval.s0 || t->n_labels < 2)
                return kf_error_set(err, KF_ERR_ARG, "specialise: task %s needs training and evaluation sentences and two labels",
                                    data[d].name);
        } else if (data[d].n_ids < o->tokens + o->eval_tokens)
            return kf_error_set(err, KF_ERR_ARG,
                                "specialise: dataset %s has %lld tokens; --tokens %lld + --eval-tokens %lld are needed",
                                data[d].name, (long long)data[d].n_ids, (long long)o->tokens, (long long)o->eval_tokens);
    for (int l = 0; l < m->n_layer; l++)
        if (m->layers[l].n_expert > 0)
            return kf_error_set(err, KF_ERR_ARG, "%s: specialise measures a dense model (give the MoEfied one to --moe)",
                                m->path);
    return KF_OK;
}

kf_status kf_spec_run(kf_model *m, const kf_spec_data *data, int n_data, const kf_spec_opts *o,
                      kf_spec_result *res, kf_error *err) {
    memset(res, 0, sizeof *res);
    int max_ff = 0, min_ff = INT32_MAX;
    for (int l = 0; l < m->n_layer; l++) {
        if (m->layers[l].n_ff > max_ff) max_ff = m->layers[l].n_ff;
        if (m->layers[l].n_ff < min_ff) min_ff = m->layers[l].n_ff;
    }
    kf_status s = check_opts(m, data, n_data, o, max_ff, min_ff, err);
    if (s != KF_OK) return s;
    const int D = n_data, L = m->n_layer, Q = o->n_frac, A = o->ablate_top;
    run u = {.m = m, .data = data, .o = o, .r = res, .max_ff = max_ff};
    u.p = kf_calib_protocol_make(o->ctx, o->bos_id);
    u.p.batch = o->batch;
    res->n_data = D;
    res->n_layer = L;
    res->n_frac = Q;
    res->ablate_top = A;
    res->off = calloc((size_t)L + 1, sizeof *res->off);
    if (res->off)
        for (int l = 0; l < L; l++) res->off[l + 1] = res->off[l] + m->layers[l].n_ff;
    const int64_t N = res->off ? res->off[L] : 0;
    res->n_neuron = N;
    res->fracs = malloc(sizeof *res->fracs * (size_t)Q);
    res->tokens_used = calloc((size_t)D, sizeof(int64_t));
    res->eval_tokens_used = calloc((size_t)D, sizeof(int64_t));
    res->items_used = calloc((size_t)D * 2, sizeof(int64_t));
    res->importance = calloc((size_t)D * N, sizeof(double));
    res->base_loss = calloc((size_t)D, sizeof(double));
    res->overlap = calloc((size_t)Q * L * D * D, sizeof *res->overlap);
    res->sel_focus = calloc((size_t)D * D * Q, sizeof(double));
    res->sel_retain = calloc((size_t)D * D * Q, sizeof(double));
    res->rand_mean = calloc((size_t)Q * D, sizeof(double));
    res->rand_sd = calloc((size_t)Q * D, sizeof(double));
    res->n_removed = calloc((size_t)Q, sizeof(int));
    res->ablate_idx = calloc((size_t)D * L * A + 1, sizeof(int32_t));
    res->ablate_dloss = calloc((size_t)D * L * A + 1, sizeof(double));
    if (o->first_order) res->first_order = calloc((size_t)D * N + 1, sizeof(double));
    u.acts = calloc((size_t)D, sizeof *u.acts);
    u.probe = calloc((size_t)D, sizeof *u.probe);
    u.feats = calloc((size_t)D, sizeof *u.feats);
    u.mask = (kf_spec_mask){.n_layer = L, .n = calloc((size_t)L, sizeof(int)), .off = calloc((size_t)L, sizeof(int)),
                            .idx = malloc(sizeof(int32_t) * (size_t)(N > 0 ? N : 1))};
    u.ranked = malloc(sizeof *u.ranked * (size_t)max_ff);
    u.set = malloc(sizeof *u.set * (size_t)D * max_ff);
    u.mark = calloc((size_t)max_ff, 1);
    if (!res->off || !res->fracs || !res->tokens_used || !res->eval_tokens_used || !res->items_used || !res->importance ||
        !res->base_loss || !res->overlap || !res->sel_focus || !res->sel_retain || !res->rand_mean || !res->rand_sd ||
        !res->n_removed || !res->ablate_idx || !res->ablate_dloss || (o->first_order && !res->first_order) || !u.acts || !u.probe || !u.feats || !u.mask.n || !u.mask.off ||
        !u.mask.idx || !u.ranked || !u.set || !u.mark)
        s = kf_error_set(err, KF_ERR_NOMEM, "specialise: out of memory");
    if (s == KF_OK) {
        for (int f = 0; f < Q; f++) res->fracs[f] = o->fracs[f];
        // both passes use whole windows only
        for (int d = 0; d < D; d++) {
            const kf_spec_task *t = data[d].task;
            res->tokens_used[d] = t ? kf_spec_part_tokens(&t->train) : o->tokens / o->ctx * o->ctx;
            res->eval_tokens_used[d] = t ? kf_spec_part_tokens(&t->eval) : o->eval_tokens / o->ctx * o->ctx;
            res->items_used[2 * d] = t ? kf_spec_part_items(&t->train) : 0;
            res->items_used[2 * d + 1] = t ? kf_spec_part_items(&t->eval) : 0;
        }
        u.total = D + (int64_t)o->n_boot + D + (int64_t)Q * D * (D - 1) + (int64_t)Q * o->n_random + (int64_t)D * L * A + (o->first_order ? D : 0);
    }
    double t0 = kf_time_now();
    // 1. importance of every neuron on every dataset
    for (int d = 0; s == KF_OK && d < D; d++) {
        if (data[d].task) s = task_importance(&u, d, err);
        else {
            const int64_t windows = res->tokens_used[d] / o->ctx;
            s = kf_spec_acts_init(&u.acts[d], m, (int)(windows < o->n_chunk ? windows : o->n_chunk), err);
            if (s == KF_OK) s = kf_spec_record(m, data[d].ids, res->tokens_used[d], &u.p, &u.acts[d], err);
        }
        if (s == KF_OK) kf_spec_acts_importance(&u.acts[d], o->kind, NULL, res->importance + (int64_t)d * N);
        tick(&u, "importance");
    }
    // 2. overlap of the important sets
    if (s == KF_OK) s = overlap(&u, err);
    // 3. losses: nothing removed, selective and random removal, single neurons
    for (int d = 0; s == KF_OK && d < D; d++) {
        s = eval_loss(&u, d, NULL, &res->base_loss[d], err);
        tick(&u, "base loss");
    }
    if (s == KF_OK) s = pruning(&u, err);
    if (s == KF_OK) s = ablation(&u, err);
    // 4. the first-order estimate, last: it converts the model's w_down to F32
    for (int d = 0; s == KF_OK && o->first_order && d < D; d++) {
        double *fo = res->first_order + (int64_t)d * N;
        if (data[d].task)
            for (int64_t j = 0; j < N; j++) fo[j] = NAN;
        else
            s = kf_spec_first_order(m, data[d].ids, res->tokens_used[d], &u.p, fo, err);
        tick(&u, "first-order estimate");
    }
    res->seconds = kf_time_now() - t0;
    for (int d = 0; u.acts && d < D; d++) kf_spec_acts_free(&u.acts[d]);
    for (int d = 0; u.probe && d < D; d++) kf_spec_probe_free(&u.probe[d]);
    for (int d = 0; u.feats && d < D; d++) free(u.feats[d]);
    free(u.acts), free(u.probe), free(u.feats);
    free(u.mask.n), free(u.mask.off), free(u.mask.idx);
    free(u.ranked), free(u.set), free(u.mark);
    if (s != KF_OK) kf_spec_result_free(res);
    return s;
}
