#include "transform/compress.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analyze/cka.h"
#include "analyze/kmeans.h"
#include "calib/calib.h"
#include "runtime/forward.h"
#include "transform/refit.h"

#define N_STEPS 16 // allocation grid: widths F*j/16

void kf_compress_opts_default(kf_compress_opts *o) {
    memset(o, 0, sizeof *o);
    o->method = KF_CMP_FOLD;
    o->group = KF_GROUP_LS;
    o->refit = 1;
    o->lambda_rel = KF_REFIT_LAMBDA;
    o->seed = 1;
    o->ctx = 256;
    o->batch = 4;
}

void kf_compress_report_free(kf_compress_report *r) {
    free(r->layers);
    free(r->dropped);
    free(r->merged_into);
    free(r->block_influence);
    memset(r, 0, sizeof *r);
}

int64_t kf_compress_neuron_params(const kf_model *m, int l) {
    const kf_layer *ly = &m->layers[l];
    int64_t C = m->n_embd;
    return C * (kf_tensor_present(&ly->w_gate) ? 3 : 2) + (kf_tensor_present(&ly->b_up) ? 1 : 0);
}

// ---- calibration passes ----------------------------------------------------

typedef struct {
    kf_moments **mo; // (n_layer) accumulator per layer, NULL = not recorded
    float *bin;      // (N, C) block input kept until the block output (Block Influence)
    kf_bi_acc *bi;   // (n_layer) or NULL
    kf_status st;
    kf_error err;
} pass_user;

static void pass_hook(void *user, int layer, kf_hook_point point, float *x, int n, int dim) {
    pass_user *u = user;
    if (u->st != KF_OK) return;
    if (point == KF_HOOK_FFN_ACT && u->mo && u->mo[layer]) u->st = kf_moments_add(u->mo[layer], x, n, &u->err);
    else if (point == KF_HOOK_BLOCK_IN && u->bi) memcpy(u->bin, x, sizeof *x * (size_t)n * dim);
    else if (point == KF_HOOK_BLOCK_OUT && u->bi) kf_bi_add(&u->bi[layer], u->bin, x, n, dim);
}

static kf_status pass_after(void *user, kf_calib_batch *b, kf_error *err) {
    (void)b;
    pass_user *u = user;
    if (u->st != KF_OK) *err = u->err;
    return u->st;
}

// Runs every calibration window (calib/'s protocol: ctx, batch, BOS) through m with the hook installed.
static kf_status calib_pass(const kf_model *m, const int32_t *ids, int64_t n_ids, int bos_id, int ctx, int batch,
                            pass_user *u, unsigned points, kf_error *err) {
    kf_calib_protocol p = kf_calib_protocol_make(ctx, bos_id);
    p.batch = batch;
    if (!ids) n_ids = 0;
    kf_status s = kf_calib_check(&p, m, n_ids, "compress: calibration", err);
    if (s != KF_OK) return s;
    kf_ctx *c = NULL;
    if ((s = kf_ctx_init(&c, m, kf_calib_max_rows(&p, n_ids), 0, err)) != KF_OK) return s;
    u->st = KF_OK;
    kf_ctx_set_hook(c, pass_hook, u, points);
    s = kf_calib_run(c, m, ids, n_ids, &p, &(kf_calib_sink){.after = pass_after, .user = u}, err);
    kf_ctx_free(c);
    return s;
}

kf_status kf_compress_block_influence(const kf_model *m, const int32_t *ids, int64_t n_ids, int bos_id, int ctx,
                                      int batch, double *bi, kf_error *err) {
    const int L = m->n_layer;
    pass_user u = {0};
    u.bi = calloc((size_t)L, sizeof *u.bi);
    u.bin = malloc(sizeof *u.bin * (size_t)batch * ctx * m->n_embd);
    kf_status s = KF_OK;
    if (!u.bi || !u.bin) s = kf_error_set(err, KF_ERR_NOMEM, "compress: out of memory for block influence");
    if (s == KF_OK)
        s = calib_pass(m, ids, n_ids, bos_id, ctx, batch, &u, 1u << KF_HOOK_BLOCK_IN | 1u << KF_HOOK_BLOCK_OUT, err);
    for (int l = 0; l < L && s == KF_OK; l++) s = kf_bi_value(&u.bi[l], &bi[l], err);
    free(u.bi);
    free(u.bin);
    return s;
}

// ---- per-layer statistics and plans ------------------------------------------

typedef struct {
    int F;
    int64_t n;
    double *M;       // (F,F) sum a a^T
    double *corr;    // (F,F) fold only
    double *cov;     // (F,F) fold only
    double *sum_abs; // (F)
    double *sum_sq;  // (F) diagonal of M
    int *ls_removed; // allocation with fold ls: the removal order of one greedy run to the smallest width
    int n_removed;   // (entries of ls_removed); width k keeps all but the first F - k
} layer_stats;

static void layer_stats_free(layer_stats *ls) {
    free(ls->M);
    free(ls->corr);
    free(ls->cov);
    free(ls->sum_abs);
    free(ls->sum_sq);
    free(ls->ls_removed);
    memset(ls, 0, sizeof *ls);
}

static kf_status layer_stats_init(layer_stats *ls, const kf_moments *mo, int want_corr, int l, kf_error *err) {
    const int F = mo->d;
    const size_t FF = (size_t)F * F;
    memset(ls, 0, sizeof *ls);
    if (mo->n < 2) return kf_error_set(err, KF_ERR_ARG, "compress: layer %d statistics hold %lld rows, need 2", l, (long long)mo->n);
    ls->F = F;
    ls->n = mo->n;
    ls->M = malloc(sizeof *ls->M * FF);
    ls->sum_abs = malloc(sizeof *ls->sum_abs * (size_t)F);
    ls->sum_sq = malloc(sizeof *ls->sum_sq * (size_t)F);
    if (want_corr) {
        ls->corr = malloc(sizeof *ls->corr * FF);
        ls->cov = malloc(sizeof *ls->cov * FF);
    }
    kf_status s = KF_OK;
    if (!ls->M || !ls->sum_abs || !ls->sum_sq || (want_corr && (!ls->corr || !ls->cov))) {
        s = kf_error_set(err, KF_ERR_NOMEM, "compress: out of memory for layer %d statistics (%d neurons)", l, F);
        goto fail;
    }
    if ((s = kf_refit_second_moment(mo, ls->M, err)) != KF_OK) goto fail;
    for (int j = 0; j < F; j++) {
        ls->sum_abs[j] = mo->sum_abs[j];
        ls->sum_sq[j] = ls->M[(size_t)j * F + j];
    }
    if (want_corr && ((s = kf_moments_corr(mo, ls->corr, err)) != KF_OK || (s = kf_moments_cov(mo, ls->cov, err)) != KF_OK))
        goto fail;
    return KF_OK;
fail:
    layer_stats_free(ls);
    return s;
}

static int needs_stats(const kf_compress_opts *o) {
    return o->refit || o->method == KF_CMP_FOLD || o->method == KF_CMP_PRUNE_WANDA || o->method == KF_CMP_PRUNE_ACT;
}

static int idx_cmp(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }

// Fold groups by k-means on features (F, d); labels (F) in [0, k).
static kf_status group_kmeans(const kf_model *m, int l, const layer_stats *ls, const kf_compress_opts *o, int k,
                              int32_t *labels, kf_error *err) {
    const kf_layer *ly = &m->layers[l];
    const int F = ls->F, C = m->n_embd;
    int gated = kf_tensor_present(&ly->w_gate);
    int d = o->group == KF_GROUP_KMEANS_ACT ? F : C * (gated ? 2 : 1);
    float *X = malloc(sizeof *X * (size_t)F * d), *cent = malloc(sizeof *cent * (size_t)k * d);
    kf_status s = KF_OK;
    if (!X || !cent) {
        s = kf_error_set(err, KF_ERR_NOMEM, "fold: out of memory for k-means of layer %d", l);
        goto done;
    }
    for (int j = 0; j < F; j++) {
        float *row = X + (size_t)j * d;
        if (o->group == KF_GROUP_KMEANS_ACT) {
            for (int i = 0; i < F; i++) row[i] = (float)ls->corr[(size_t)j * F + i];
        } else {
            memcpy(row, ly->w_up.data + (size_t)j * C, sizeof *row * (size_t)C);
            if (gated) memcpy(row + C, ly->w_gate.data + (size_t)j * C, sizeof *row * (size_t)C);
        }
    }
    kf_kmeans_opts ko = {.max_iter = 50, .n_init = 2, .seed = o->seed + (uint64_t)l, .balanced = 0};
    double obj;
    s = kf_kmeans_fit(X, F, d, k, &ko, cent, labels, &obj, err);
done:
    free(X);
    free(cent);
    return s;
}

// Energy-weighted correlation groups: merging j into i loses about
// (1 - rho_ij^2) of the smaller neuron's output energy e = E[a^2] ||w_down col||^2,
// so the clustering distance is (1 - rho^2) min(e_i, e_j) / max e, passed to
// the average-linkage clustering as a pseudo-correlation c = 1 - d.
static kf_status group_energy(const kf_model *m, int l, const layer_stats *ls, int k, int32_t *labels, double *t_cut,
                              kf_error *err) {
    const int F = ls->F, C = m->n_embd;
    const float *wd = m->layers[l].w_down.data;
    double *e = malloc(sizeof *e * (size_t)F), *c = malloc(sizeof *c * (size_t)F * F);
    if (!e || !c) {
        free(e);
        free(c);
        return kf_error_set(err, KF_ERR_NOMEM, "fold: out of memory for layer %d", l);
    }
    double emax = 0;
    for (int j = 0; j < F; j++) {
        double w2 = 0;
        for (int i = 0; i < C; i++) w2 += (double)wd[(size_t)i * F + j] * wd[(size_t)i * F + j];
        e[j] = ls->sum_sq[j] / (double)ls->n * w2;
        emax = e[j] > emax ? e[j] : emax;
    }
    for (int i = 0; i < F; i++)
        for (int j = 0; j < F; j++) {
            double r = ls->corr[(size_t)i * F + j], lo = e[i] < e[j] ? e[i] : e[j];
            c[(size_t)i * F + j] = i == j ? 1.0 : 1.0 - (1.0 - r * r) * (emax > 0 ? lo / emax : 1.0);
        }
    kf_status s = kf_ffn_group_corr_k(c, F, k, labels, t_cut, err);
    free(e);
    free(c);
    return s;
}

// Least-squares groups: the k neurons kf_ffn_select_ls keeps (keep, k) are
// the representatives; every other neuron joins the one it is most
// correlated with (|rho|), which is where the merge puts its down column.
static kf_status group_ls(const kf_model *m, int l, const layer_stats *ls, const kf_compress_opts *o, int k,
                          int32_t *labels, int *keep, double *t_cut, kf_error *err) {
    const int F = ls->F;
    if (ls->ls_removed && F - k <= ls->n_removed) { // the kept set of a wider step of one greedy run
        for (int j = 0; j < F; j++) labels[j] = 0;
        for (int i = 0; i < F - k; i++) labels[ls->ls_removed[i]] = -1;
        for (int j = 0, g = 0; j < F; j++)
            if (labels[j] == 0) keep[g++] = j;
    } else {
        kf_status s = kf_ffn_select_ls(ls->M, m->layers[l].w_down.data, m->n_embd, F, k, o->lambda_rel, keep, NULL,
                                       t_cut, NULL, err);
        if (s != KF_OK) return s;
    }
    for (int j = 0; j < F; j++) labels[j] = -1;
    for (int g = 0; g < k; g++) labels[keep[g]] = g;
    for (int j = 0; j < F; j++) {
        if (labels[j] >= 0) continue;
        double best = -1;
        for (int g = 0; g < k; g++) {
            double r = fabs(ls->corr[(size_t)j * F + keep[g]]);
            if (r > best) best = r, labels[j] = g;
        }
    }
    return KF_OK;
}

// Representative of each group: its member of largest output energy.
static void energy_representatives(const kf_model *m, int l, const layer_stats *ls, const int32_t *labels, int k,
                                   int *reps) {
    const int F = ls->F, C = m->n_embd;
    const float *wd = m->layers[l].w_down.data;
    double *best = malloc(sizeof *best * (size_t)k);
    if (!best) return; // keeps the correlation representatives
    for (int g = 0; g < k; g++) best[g] = -1;
    for (int j = 0; j < F; j++) {
        double w2 = 0;
        for (int i = 0; i < C; i++) w2 += (double)wd[(size_t)i * F + j] * wd[(size_t)i * F + j];
        double e = ls->sum_sq[j] / (double)ls->n * w2;
        if (e > best[labels[j]]) best[labels[j]] = e, reps[labels[j]] = j;
    }
    free(best);
}

// The new layer as "neurons idx (k) + down projection w_new (C,k)", without
// touching the model. k_want > 0 gives the width; else t (fold) gives the cut.
// idx and w_new hold F and C*F entries. rel_err is NaN without statistics;
// abs_err (may be NULL) gets E||delta FFN out||^2 when they are given.
static kf_status plan_layer(const kf_model *m, int l, const layer_stats *ls, const kf_compress_opts *o, int k_want,
                            double t, int *idx, float *w_new, int *k_out, double *t_cut, double *rel_err,
                            double *abs_err, kf_error *err) {
    const kf_layer *ly = &m->layers[l];
    const int F = ly->n_ff, C = m->n_embd;
    int k = k_want;
    *t_cut = NAN;
    *rel_err = NAN;
    int32_t *labels = NULL;
    int *reps = NULL, *keep = NULL;
    double *score = NULL, *G = NULL, *X = NULL;
    kf_status s = KF_OK;
    if (o->method == KF_CMP_FOLD) {
        labels = malloc(sizeof *labels * (size_t)F);
        reps = malloc(sizeof *reps * (size_t)F);
        if (!labels || !reps) {
            s = kf_error_set(err, KF_ERR_NOMEM, "fold: out of memory for layer %d", l);
            goto done;
        }
        if (k_want <= 0) {
            if ((s = kf_ffn_group_corr_t(ls->corr, F, t, labels, &k, err)) != KF_OK) goto done;
            *t_cut = t;
        } else if (o->group == KF_GROUP_CORR) {
            if ((s = kf_ffn_group_corr_k(ls->corr, F, k, labels, t_cut, err)) != KF_OK) goto done;
        } else if (o->group == KF_GROUP_CORR_ENERGY) {
            if ((s = group_energy(m, l, ls, k, labels, t_cut, err)) != KF_OK) goto done;
        } else if (o->group == KF_GROUP_LS) {
            if (!(keep = malloc(sizeof *keep * (size_t)k))) {
                s = kf_error_set(err, KF_ERR_NOMEM, "fold: out of memory for layer %d", l);
                goto done;
            }
            if ((s = group_ls(m, l, ls, o, k, labels, keep, t_cut, err)) != KF_OK) goto done;
        } else if ((s = group_kmeans(m, l, ls, o, k, labels, err)) != KF_OK) {
            goto done;
        }
        // k-means may leave a cluster empty only if k > distinct points; guard by compacting.
        int *map = reps; // reuse as old->new label map before representatives are known
        for (int g = 0; g < k; g++) map[g] = -1;
        int kk = 0;
        for (int j = 0; j < F; j++) {
            if (map[labels[j]] < 0) map[labels[j]] = kk++;
            labels[j] = map[labels[j]];
        }
        k = kk;
        kf_ffn_representatives(ls->corr, F, labels, k, reps);
        if (o->group == KF_GROUP_CORR_ENERGY) energy_representatives(m, l, ls, labels, k, reps);
        if (keep)
            for (int g = 0; g < k; g++) reps[labels[keep[g]]] = keep[g];
        // Order groups by representative so the kept neurons stay in index order.
        for (int g = 0; g < k; g++) idx[g] = reps[g];
        qsort(idx, (size_t)k, sizeof *idx, idx_cmp);
        int32_t *rank = malloc(sizeof *rank * (size_t)F);
        if (!rank) {
            s = kf_error_set(err, KF_ERR_NOMEM, "fold: out of memory for layer %d", l);
            goto done;
        }
        for (int g = 0; g < k; g++) rank[idx[g]] = g;
        for (int j = 0; j < F; j++) labels[j] = rank[reps[labels[j]]];
        free(rank);
        for (int g = 0; g < k; g++) reps[g] = idx[g];
        kf_ffn_merge_down(m, l, ls->cov, labels, reps, k, w_new);
    } else {
        score = malloc(sizeof *score * (size_t)F);
        if (!score) {
            s = kf_error_set(err, KF_ERR_NOMEM, "prune: out of memory for layer %d", l);
            goto done;
        }
        kf_score_kind kind = o->method == KF_CMP_PRUNE_MAGNITUDE ? KF_SCORE_MAGNITUDE
                             : o->method == KF_CMP_PRUNE_WANDA   ? KF_SCORE_WANDA
                             : o->method == KF_CMP_PRUNE_ACT     ? KF_SCORE_ACT
                                                                 : KF_SCORE_RANDOM;
        kf_ffn_scores(m, l, kind, ls ? ls->sum_sq : NULL, ls ? ls->sum_abs : NULL, ls ? ls->n : 1, o->seed, score);
        if ((s = kf_ffn_top_k(score, F, k, idx, err)) != KF_OK) goto done;
        for (int c = 0; c < C; c++)
            for (int i = 0; i < k; i++) w_new[(size_t)c * k + i] = ly->w_down.data[(size_t)c * F + idx[i]];
    }
    if (o->refit) {
        G = malloc(sizeof *G * (size_t)k * k);
        X = malloc(sizeof *X * (size_t)k * F);
        if (!G || !X) {
            s = kf_error_set(err, KF_ERR_NOMEM, "refit: out of memory for layer %d", l);
            goto done;
        }
        kf_refit_gather(ls->M, F, idx, k, G, X);
        if ((s = kf_refit_solve(G, X, k, F, ly->w_down.data, C, o->lambda_rel, w_new, err)) != KF_OK) goto done;
    }
    if (ls) {
        double e, ref;
        if ((s = kf_ffn_error(ls->M, ls->n, ly->w_down.data, C, F, idx, k, w_new, &e, &ref, err)) != KF_OK) goto done;
        *rel_err = ref > 0 ? e / ref : 0;
        if (abs_err) *abs_err = e;
    }
    *k_out = k;
done:
    free(labels);
    free(reps);
    free(keep);
    free(score);
    free(G);
    free(X);
    return s;
}

// Statistics of layer l: from the file, or recorded on the model as it is now.
static kf_status get_layer_moments(const kf_model *m, int l, const int32_t *ids, int64_t n_ids, int bos_id,
                                   const kf_compress_opts *o, kf_moments *own, const kf_moments **out, kf_error *err) {
    if (o->stats) {
        char name[64];
        snprintf(name, sizeof name, "layer.%d.ffn_act", l);
        const kf_moments *mo = kf_statsfile_get(o->stats, name);
        if (!mo) return kf_error_set(err, KF_ERR_FORMAT, "compress: statistics file has no entry %s", name);
        if (mo->d != m->layers[l].n_ff)
            return kf_error_set(err, KF_ERR_FORMAT, "compress: statistics %s have %d dims, layer %d has %d neurons", name,
                                mo->d, l, m->layers[l].n_ff);
        *out = mo;
        return KF_OK;
    }
    kf_status s = kf_moments_init(own, m->layers[l].n_ff, 0, 0.0f, err);
    if (s != KF_OK) return s;
    kf_moments **arr = calloc((size_t)m->n_layer, sizeof *arr);
    if (!arr) return kf_error_set(err, KF_ERR_NOMEM, "compress: out of memory");
    arr[l] = own;
    pass_user u = {.mo = arr};
    s = calib_pass(m, ids, n_ids, bos_id, o->ctx, o->batch, &u, 1u << KF_HOOK_FFN_ACT, err);
    free(arr);
    *out = own;
    return s;
}

// Merge option of drop-layers (compress.h). The merged FFN reads dst's normalised input u = x^ g_d + b_d,
// while src's neurons were trained on x^ g_s + b_s = (u - b_d) r + b_s with
// r = g_s / g_d, so src's gate/up columns are scaled by r and its up bias
// gains W_up_s (b_s - r b_d); down columns are concatenated and the down
// biases added. Exact when both blocks see the same normalised residual
// (a block that changes the stream little: low Block Influence).
kf_status kf_compress_merge_ffn(kf_model *m, int dst, int src, kf_error *err) {
    kf_layer *D = &m->layers[dst];
    const kf_layer *S = &m->layers[src];
    const int C = m->n_embd, Fd = D->n_ff, Fs = S->n_ff, F = Fd + Fs;
    const bool ln = kf_tensor_present(&D->ffn_norm_b);
    double *r = malloc(sizeof *r * (size_t)C);
    if (!r) return kf_error_set(err, KF_ERR_NOMEM, "compress: out of memory");
    for (int c = 0; c < C; c++) {
        if (D->ffn_norm_w.data[c] == 0.0f) {
            free(r);
            return kf_error_set(err, KF_ERR_ARG, "compress: cannot merge block %d into %d: its FFN norm weight %d is 0",
                                src, dst, c);
        }
        r[c] = (double)S->ffn_norm_w.data[c] / D->ffn_norm_w.data[c];
    }
    kf_tensor up = {0}, gate = {0}, down = {0}, b_up = {0};
    kf_status s = kf_model_alloc_tensor(m, &up, 2, (int64_t[]){F, C}, err);
    if (s == KF_OK && m->gated_ffn) s = kf_model_alloc_tensor(m, &gate, 2, (int64_t[]){F, C}, err);
    if (s == KF_OK) s = kf_model_alloc_tensor(m, &down, 2, (int64_t[]){C, F}, err);
    bool bias = kf_tensor_present(&D->b_up) || kf_tensor_present(&S->b_up) || ln;
    if (s == KF_OK && bias) s = kf_model_alloc_tensor(m, &b_up, 1, (int64_t[]){F}, err);
    if (s != KF_OK) {
        free(r);
        return s;
    }
    // rows (F, C): dst's rows as they are, then src's scaled by r
    for (int k = 0; k < 2; k++) {
        const kf_tensor *wd = k ? &D->w_gate : &D->w_up, *ws = k ? &S->w_gate : &S->w_up;
        kf_tensor *out = k ? &gate : &up;
        if (k && !m->gated_ffn) continue;
        memcpy(out->data, wd->data, sizeof(float) * (size_t)Fd * C);
        for (int j = 0; j < Fs; j++)
            for (int c = 0; c < C; c++)
                out->data[(int64_t)(Fd + j) * C + c] = (float)(ws->data[(int64_t)j * C + c] * r[c]);
    }
    if (bias)
        for (int j = 0; j < F; j++) {
            const bool from_s = j >= Fd;
            const kf_tensor *b = from_s ? &S->b_up : &D->b_up;
            double v = kf_tensor_present(b) ? b->data[from_s ? j - Fd : j] : 0;
            if (from_s && ln) // + W_up_s (b_s - r b_d)
                for (int c = 0; c < C; c++)
                    v += (double)S->w_up.data[(int64_t)(j - Fd) * C + c] *
                         (S->ffn_norm_b.data[c] - r[c] * D->ffn_norm_b.data[c]);
            b_up.data[j] = (float)v;
        }
    for (int c = 0; c < C; c++) { // down (C, F) = [down_d | down_s]
        memcpy(down.data + (int64_t)c * F, D->w_down.data + (int64_t)c * Fd, sizeof(float) * (size_t)Fd);
        memcpy(down.data + (int64_t)c * F + Fd, S->w_down.data + (int64_t)c * Fs, sizeof(float) * (size_t)Fs);
    }
    if (kf_tensor_present(&S->b_down)) {
        if (!kf_tensor_present(&D->b_down)) {
            free(r);
            return kf_error_set(err, KF_ERR_ARG, "compress: cannot merge block %d into %d: only one has a down bias",
                                src, dst);
        }
        kf_tensor bd = {0};
        if ((s = kf_model_alloc_tensor(m, &bd, 1, (int64_t[]){C}, err)) != KF_OK) {
            free(r);
            return s;
        }
        for (int c = 0; c < C; c++) bd.data[c] = D->b_down.data[c] + S->b_down.data[c];
        D->b_down = bd;
    }
    free(r);
    D->w_up = up;
    if (m->gated_ffn) D->w_gate = gate;
    D->w_down = down;
    if (bias) D->b_up = b_up;
    D->n_ff = F;
    return KF_OK;
}

static kf_status drop_layers(kf_model *m, const int32_t *ids, int64_t n_ids, int bos_id, const kf_compress_opts *o,
                             kf_compress_report *rep, kf_error *err) {
    const int L = m->n_layer;
    if (o->n_drop < 1 || o->n_drop >= L)
        return kf_error_set(err, KF_ERR_ARG, "compress: cannot drop %d of %d blocks (need 1 .. %d)", o->n_drop, L, L - 1);
    rep->block_influence = malloc(sizeof *rep->block_influence * (size_t)L);
    rep->dropped = malloc(sizeof *rep->dropped * (size_t)o->n_drop);
    if (!rep->block_influence || !rep->dropped) return kf_error_set(err, KF_ERR_NOMEM, "compress: out of memory");
    if (o->progress) o->progress(o->progress_user, "block influence", 0, L);
    kf_status s = kf_compress_block_influence(m, ids, n_ids, bos_id, o->ctx, o->batch, rep->block_influence, err);
    if (s != KF_OK) return s;
    // ShortGPT: remove the blocks that change the residual stream least.
    unsigned char *drop = calloc((size_t)L, 1);
    if (!drop) return kf_error_set(err, KF_ERR_NOMEM, "compress: out of memory");
    for (int d = 0; d < o->n_drop; d++) {
        int best = -1;
        for (int l = 0; l < L; l++)
            if (!drop[l] && (best < 0 || rep->block_influence[l] < rep->block_influence[best])) best = l;
        drop[best] = 1;
    }
    if (o->merge) {
        rep->merged_into = malloc(sizeof *rep->merged_into * (size_t)o->n_drop);
        if (!rep->merged_into) {
            free(drop);
            return kf_error_set(err, KF_ERR_NOMEM, "compress: out of memory");
        }
    }
    for (int l = 0, i = 0; l < L && o->merge; l++) {
        if (!drop[l]) continue;
        int dst = l + 1; // the nearest kept block after, else before
        while (dst < L && drop[dst]) dst++;
        if (dst >= L)
            for (dst = l - 1; drop[dst]; dst--) {}
        if ((s = kf_compress_merge_ffn(m, dst, l, err)) != KF_OK) {
            free(drop);
            return s;
        }
        rep->merged_into[i++] = dst;
    }
    int w = 0;
    for (int l = 0; l < L; l++) {
        rep->layers[l].n_ff_after = drop[l] ? 0 : m->layers[l].n_ff;
        if (drop[l]) rep->dropped[rep->n_dropped++] = l;
        else m->layers[w++] = m->layers[l];
    }
    m->n_layer = w;
    free(drop);
    return kf_model_validate(m, "compressed model", err);
}

kf_status kf_compress_run(kf_model *m, const int32_t *ids, int64_t n_ids, int bos_id, const kf_compress_opts *o,
                          kf_compress_report *rep, kf_error *err) {
    memset(rep, 0, sizeof *rep);
    const int L = m->n_layer, C = m->n_embd;
    if (o->ctx < 2 || o->batch < 1) return kf_error_set(err, KF_ERR_ARG, "compress: bad --ctx or batch");
    rep->n_layer_before = L;
    rep->n_calib_tokens = o->stats ? 0 : (ids ? n_ids / o->ctx * o->ctx : 0);
    rep->layers = calloc((size_t)L, sizeof *rep->layers);
    if (!rep->layers) return kf_error_set(err, KF_ERR_NOMEM, "compress: out of memory");
    for (int l = 0; l < L; l++)
        rep->layers[l] = (kf_compress_layer){l, m->layers[l].n_ff, m->layers[l].n_ff, NAN, NAN};
    if (o->method == KF_CMP_DROP_LAYERS) return drop_layers(m, ids, n_ids, bos_id, o, rep, err);
    if (!o->widths && !(o->method == KF_CMP_FOLD && o->thresholds))
        return kf_error_set(err, KF_ERR_ARG, "compress: no target (widths, target params or fold thresholds)");
    for (int l = 0; l < L; l++)
        if (o->widths && (o->widths[l] < 1 || o->widths[l] > m->layers[l].n_ff))
            return kf_error_set(err, KF_ERR_ARG, "compress: width %d for layer %d is not in [1, %d]", o->widths[l], l,
                                m->layers[l].n_ff);
    int Fmax = 0;
    for (int l = 0; l < L; l++) Fmax = m->layers[l].n_ff > Fmax ? m->layers[l].n_ff : Fmax;
    int *idx = malloc(sizeof *idx * (size_t)Fmax);
    float *w_new = malloc(sizeof *w_new * (size_t)C * Fmax);
    if (!idx || !w_new) {
        free(idx);
        free(w_new);
        return kf_error_set(err, KF_ERR_NOMEM, "compress: out of memory");
    }
    kf_status s = KF_OK;
    for (int l = 0; l < L && s == KF_OK; l++) {
        int F = m->layers[l].n_ff, k_want = o->widths ? o->widths[l] : 0;
        if (k_want == F) continue; // nothing removed: layer untouched
        if (o->progress) o->progress(o->progress_user, "layer", l, L);
        kf_moments own = {0};
        const kf_moments *mo = NULL;
        layer_stats ls = {0};
        int have = needs_stats(o);
        if (have && (s = get_layer_moments(m, l, ids, n_ids, bos_id, o, &own, &mo, err)) == KF_OK)
            s = layer_stats_init(&ls, mo, o->method == KF_CMP_FOLD, l, err);
        int k = 0;
        double t_cut, rel;
        if (s == KF_OK)
            s = plan_layer(m, l, have ? &ls : NULL, o, k_want, o->thresholds ? o->thresholds[l] : 0, idx, w_new, &k,
                           &t_cut, &rel, NULL, err);
        if (s == KF_OK) s = kf_ffn_select(m, l, idx, k, w_new, err);
        if (s == KF_OK) {
            rep->layers[l].n_ff_after = k;
            rep->layers[l].t_cut = t_cut;
            rep->layers[l].rel_err = rel;
        }
        layer_stats_free(&ls);
        kf_moments_free(&own);
    }
    free(idx);
    free(w_new);
    if (s == KF_OK) s = kf_model_validate(m, "compressed model", err);
    return s;
}

kf_status kf_compress_allocate(const kf_model *m, const int32_t *ids, int64_t n_ids, int bos_id,
                               const kf_compress_opts *o, int64_t target_params, int *widths, kf_error *err) {
    const int L = m->n_layer, C = m->n_embd;
    if (L < 1) return kf_error_set(err, KF_ERR_ARG, "compress: the model has no layers");
    int64_t params = kf_model_n_params(m), min_params = params;
    for (int l = 0; l < L; l++)
        min_params -= (int64_t)(m->layers[l].n_ff - (m->layers[l].n_ff + N_STEPS - 1) / N_STEPS) *
                      kf_compress_neuron_params(m, l);
    if (target_params < min_params)
        return kf_error_set(err, KF_ERR_ARG,
                            "compress: target of %lld parameters cannot be met: FFN narrowing to 1/%d reaches %lld of %lld",
                            (long long)target_params, N_STEPS, (long long)min_params, (long long)params);
    double *e = calloc((size_t)L * (N_STEPS + 1), sizeof *e);
    int *kk = calloc((size_t)L * (N_STEPS + 1), sizeof *kk), *j_cur = malloc(sizeof *j_cur * (size_t)L);
    kf_moments *own = calloc((size_t)L, sizeof *own);
    kf_moments **arr = calloc((size_t)L, sizeof *arr);
    int Fmax = 0;
    for (int l = 0; l < L; l++) Fmax = m->layers[l].n_ff > Fmax ? m->layers[l].n_ff : Fmax;
    int *idx = malloc(sizeof *idx * (size_t)Fmax);
    float *w_new = malloc(sizeof *w_new * (size_t)C * Fmax);
    kf_status s = KF_OK;
    if (!e || !kk || !j_cur || !own || !arr || !idx || !w_new) {
        s = kf_error_set(err, KF_ERR_NOMEM, "compress: out of memory for the allocation");
        goto done;
    }
    // Statistics of all layers of the original model in one pass.
    if (!o->stats) {
        for (int l = 0; l < L && s == KF_OK; l++) {
            s = kf_moments_init(&own[l], m->layers[l].n_ff, 0, 0.0f, err);
            arr[l] = &own[l];
        }
        pass_user u = {.mo = arr};
        if (s == KF_OK) s = calib_pass(m, ids, n_ids, bos_id, o->ctx, o->batch, &u, 1u << KF_HOOK_FFN_ACT, err);
    }
    for (int l = 0; l < L && s == KF_OK; l++) {
        if (o->progress) o->progress(o->progress_user, "allocate", l, L);
        const kf_moments *mo = arr[l];
        if (o->stats && (s = get_layer_moments(m, l, NULL, 0, bos_id, o, NULL, &mo, err)) != KF_OK) break;
        layer_stats ls;
        if ((s = layer_stats_init(&ls, mo, o->method == KF_CMP_FOLD, l, err)) != KF_OK) break;
        const int F = m->layers[l].n_ff;
        if (o->method == KF_CMP_FOLD && o->group == KF_GROUP_LS) { // one greedy run serves every width
            const int k_min = (F + N_STEPS - 1) / N_STEPS;
            ls.n_removed = F - k_min;
            if (!(ls.ls_removed = malloc(sizeof *ls.ls_removed * (size_t)F)))
                s = kf_error_set(err, KF_ERR_NOMEM, "compress: out of memory for the allocation");
            if (s == KF_OK)
                s = kf_ffn_select_ls(ls.M, m->layers[l].w_down.data, C, F, k_min, o->lambda_rel, idx, NULL, NULL,
                                     ls.ls_removed, err);
            if (s != KF_OK) {
                layer_stats_free(&ls);
                break;
            }
        }
        for (int j = N_STEPS; j >= 1 && s == KF_OK; j--) {
            int k = (F * j + N_STEPS - 1) / N_STEPS, k_got;
            double t_cut, rel;
            kk[l * (N_STEPS + 1) + j] = k;
            if (j == N_STEPS) continue; // full width: no error
            s = plan_layer(m, l, &ls, o, k, 0, idx, w_new, &k_got, &t_cut, &rel, &e[l * (N_STEPS + 1) + j], err);
        }
        layer_stats_free(&ls);
        j_cur[l] = N_STEPS;
    }
    // Greedy: the step with the least added error per parameter saved.
    while (s == KF_OK && params > target_params) {
        int best = -1;
        double best_r = INFINITY;
        for (int l = 0; l < L; l++) {
            int j = j_cur[l];
            if (j <= 1) continue;
            const int *kl = kk + l * (N_STEPS + 1);
            const double *el = e + l * (N_STEPS + 1);
            double r = (el[j - 1] - el[j]) / ((double)(kl[j] - kl[j - 1]) * (double)kf_compress_neuron_params(m, l));
            if (r < best_r) best_r = r, best = l;
        }
        if (best < 0) {
            s = kf_error_set(err, KF_ERR_ARG, "compress: target of %lld parameters cannot be met", (long long)target_params);
            break;
        }
        int j = j_cur[best]--;
        params -= (int64_t)(kk[best * (N_STEPS + 1) + j] - kk[best * (N_STEPS + 1) + j - 1]) *
                  kf_compress_neuron_params(m, best);
    }
    for (int l = 0; l < L && s == KF_OK; l++) widths[l] = kk[l * (N_STEPS + 1) + j_cur[l]];
done:
    for (int l = 0; l < L && own; l++) kf_moments_free(&own[l]);
    free(own);
    free(arr);
    free(e);
    free(kk);
    free(j_cur);
    free(idx);
    free(w_new);
    return s;
}
