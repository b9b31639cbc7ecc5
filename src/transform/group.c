// Fold groups (group.h, compress_internal.h): which neurons of a layer merge
// into which representative, by correlation clustering (plain or weighted by
// output energy), k-means on activation profiles or weights, or the greedy
// least-squares selection.
#include "transform/group.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "analyze/corrclust.h"
#include "analyze/kmeans.h"
#include "transform/compress_internal.h"

void kf_ffn_representatives(const double *corr, int F, const int32_t *labels, int k, int *reps) {
    double *best = malloc(sizeof *best * (size_t)k);
    for (int g = 0; g < k; g++) best[g] = -1, reps[g] = -1;
    // O(F^2): for each neuron, the sum of rho^2 over its own group.
    for (int i = 0; i < F; i++) {
        double s = 0;
        for (int j = 0; j < F; j++)
            if (labels[j] == labels[i]) s += corr[(size_t)i * F + j] * corr[(size_t)i * F + j];
        if (s > best[labels[i]]) best[labels[i]] = s, reps[labels[i]] = i;
    }
    free(best);
}

static int uf_find(int *p, int x) {
    while (p[x] != x) x = p[x] = p[p[x]];
    return x;
}

kf_status kf_ffn_group_corr_k(const double *corr, int F, int k, int32_t *labels, double *t_cut, kf_error *err) {
    if (k < 1 || k > F) return kf_error_set(err, KF_ERR_ARG, "fold: width %d is not in [1, %d]", k, F);
    *t_cut = 0;
    if (k == F || F < 2) {
        for (int j = 0; j < F; j++) labels[j] = j;
        return KF_OK;
    }
    kf_linkage z = {0};
    kf_status s = kf_corrclust_run(corr, F, &z, err);
    if (s != KF_OK) return s;
    // Union-find over the linkage ids (F leaves + F-1 merged clusters).
    int *p = malloc(sizeof *p * (size_t)(2 * F)), *map = malloc(sizeof *map * (size_t)(2 * F));
    if (!p || !map) {
        s = kf_error_set(err, KF_ERR_NOMEM, "fold: out of memory for %d neurons", F);
        goto done;
    }
    for (int i = 0; i < 2 * F; i++) p[i] = i, map[i] = -1;
    for (int q = 0; q < F - k; q++) {
        p[uf_find(p, z.a[q])] = F + q;
        p[uf_find(p, z.b[q])] = F + q;
        *t_cut = z.dist[q];
    }
    int next = 0;
    for (int j = 0; j < F; j++) {
        int r = uf_find(p, j);
        if (map[r] < 0) map[r] = next++;
        labels[j] = map[r];
    }
    if (next != k) s = kf_error_set(err, KF_ERR_INTERNAL, "fold: cut gave %d groups, wanted %d", next, k);
done:
    free(p);
    free(map);
    kf_linkage_free(&z);
    return s;
}

kf_status kf_ffn_group_corr_t(const double *corr, int F, double t, int32_t *labels, int *k, kf_error *err) {
    if (F < 2) {
        for (int j = 0; j < F; j++) labels[j] = j;
        *k = F;
        return KF_OK;
    }
    kf_linkage z = {0};
    kf_status s = kf_corrclust_run(corr, F, &z, err);
    if (s == KF_OK) s = kf_linkage_cut(&z, t, labels, k, err);
    kf_linkage_free(&z);
    return s;
}

static int idx_cmp(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }

// Fold groups by k-means on features (F, d); labels (F) in [0, k).
static kf_status group_kmeans(const kf_model *m, int l, const kf_cmp_stats *ls, const kf_compress_opts *o, int k,
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
static kf_status group_energy(const kf_model *m, int l, const kf_cmp_stats *ls, int k, int32_t *labels,
                              double *t_cut, kf_error *err) {
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
static kf_status group_ls(const kf_model *m, int l, const kf_cmp_stats *ls, const kf_compress_opts *o, int k,
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
static void energy_representatives(const kf_model *m, int l, const kf_cmp_stats *ls, const int32_t *labels,
                                   int k, int *reps) {
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

kf_status kf_cmp_fold_groups(const kf_model *m, int l, const kf_cmp_stats *ls, const kf_compress_opts *o,
                             int k_want, double t, int32_t *labels, int *reps, int *idx, int *k_out, double *t_cut,
                             kf_error *err) {
    const int F = ls->F;
    int k = k_want, *keep = NULL;
    kf_status s = KF_OK;
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
    *k_out = k;
done:
    free(keep);
    return s;
}
