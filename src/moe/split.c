// Expert splits and the neuron reordering (see split.h).
#include "moe/split.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "analyze/kmeans.h"
#include "transform/ffn.h"
#include "transform/group.h"

#if __has_include(<metis.h>)
#include <metis.h>
#define KF_HAVE_METIS 1
#endif

static kf_status check_sizes(int F, int E, const char *what, kf_error *err) {
    if (E < 1 || F < E || F % E != 0)
        return kf_error_set(err, KF_ERR_ARG, "moefy: %s split: %d neurons do not form %d equal experts", what, F, E);
    return KF_OK;
}

kf_status kf_moe_split_kmeans(const kf_model *m, int l, int E, uint64_t seed, int32_t *labels, kf_error *err) {
    const kf_layer *L = &m->layers[l];
    const int F = L->n_ff, C = m->n_embd, gated = m->gated_ffn;
    kf_status s = check_sizes(F, E, "kmeans", err);
    if (s != KF_OK) return s;
    const int d = gated ? 2 * C : C;
    float *X = malloc(sizeof(float) * (size_t)F * d), *centres = malloc(sizeof(float) * (size_t)E * d);
    if (!X || !centres) {
        free(X);
        free(centres);
        return kf_error_set(err, KF_ERR_NOMEM, "moefy: out of memory for k-means on layer %d", l);
    }
    for (int j = 0; j < F; j++) { // X (F, d): row j = [gate_j, up_j] or up_j
        float *x = X + (int64_t)j * d;
        if (gated) memcpy(x, L->w_gate.data + (int64_t)j * C, sizeof(float) * (size_t)C);
        memcpy(x + (gated ? C : 0), L->w_up.data + (int64_t)j * C, sizeof(float) * (size_t)C);
    }
    kf_kmeans_opts o = {.max_iter = 50, .n_init = 3, .seed = seed + (uint64_t)l, .balanced = 1};
    double obj;
    s = kf_kmeans_fit(X, F, d, E, &o, centres, labels, &obj, err);
    free(X);
    free(centres);
    return s;
}

// Moves neurons out of over-full parts into under-full ones, each move the
// one that loses the least co-activation weight, until all parts hold S.
// Graph in CSR: xadj (F+1), adj/w (edges).
static void rebalance(int F, int E, const int *xadj, const int *adj, const int *w, int32_t *labels, double *conn,
                      int *count) {
    const int S = F / E;
    memset(count, 0, sizeof(int) * (size_t)E);
    for (int j = 0; j < F; j++) count[labels[j]]++;
    for (int p = 0; p < E; p++) {
        while (count[p] > S) {
            int best_v = -1, best_q = -1;
            double best = -INFINITY;
            for (int v = 0; v < F; v++) {
                if (labels[v] != p) continue;
                memset(conn, 0, sizeof(double) * (size_t)E);
                for (int k = xadj[v]; k < xadj[v + 1]; k++) conn[labels[adj[k]]] += w[k];
                for (int q = 0; q < E; q++)
                    if (count[q] < S && conn[q] - conn[p] > best) {
                        best = conn[q] - conn[p];
                        best_v = v;
                        best_q = q;
                    }
            }
            labels[best_v] = best_q;
            count[p]--;
            count[best_q]++;
        }
    }
}

kf_status kf_moe_split_coact(const kf_moments *mo, int E, uint64_t seed, int32_t *labels, kf_error *err) {
    const int F = mo->d;
    kf_status s = check_sizes(F, E, "coact", err);
    if (s != KF_OK) return s;
    if (mo->topk <= 0 || !mo->coact)
        return kf_error_set(err, KF_ERR_ARG, "moefy: coact split needs co-activation counts (statistics with top-k)");
#ifndef KF_HAVE_METIS
    (void)seed;
    (void)labels;
    return kf_error_set(err, KF_ERR_UNSUPPORTED, "moefy: coact split not available (built without METIS)");
#else
    // Edge weights scaled so that the largest count is 10000 (METIS sums
    // integer weights; raw counts of long runs could overflow idx_t).
    uint32_t maxc = 0;
    int64_t n_edges = 0;
    for (int i = 0; i < F; i++)
        for (int j = 0; j < F; j++) {
            if (i == j) continue;
            uint32_t c = kf_moments_coact(mo, i < j ? i : j, i < j ? j : i);
            if (c > 0) n_edges++;
            if (c > maxc) maxc = c;
        }
    if (n_edges > INT32_MAX) return kf_error_set(err, KF_ERR_ARG, "moefy: co-activation graph too large for METIS");
    idx_t *xadj = malloc(sizeof(idx_t) * (size_t)(F + 1)), *adj = malloc(sizeof(idx_t) * (size_t)(n_edges + 1)),
          *w = malloc(sizeof(idx_t) * (size_t)(n_edges + 1)), *part = malloc(sizeof(idx_t) * (size_t)F);
    double *conn = malloc(sizeof(double) * (size_t)E);
    int *count = malloc(sizeof(int) * (size_t)E);
    if (!xadj || !adj || !w || !part || !conn || !count) {
        s = kf_error_set(err, KF_ERR_NOMEM, "moefy: out of memory for the co-activation graph");
        goto done;
    }
    int64_t k = 0;
    xadj[0] = 0;
    for (int i = 0; i < F; i++) {
        for (int j = 0; j < F; j++) {
            if (i == j) continue;
            uint32_t c = kf_moments_coact(mo, i < j ? i : j, i < j ? j : i);
            if (c == 0) continue;
            adj[k] = j;
            w[k] = (idx_t)fmax(1.0, round(10000.0 * c / maxc));
            k++;
        }
        xadj[i + 1] = (idx_t)k;
    }
    if (E == 1) {
        for (int j = 0; j < F; j++) labels[j] = 0;
        goto done;
    }
    idx_t nv = F, ncon = 1, nparts = E, objval;
    real_t ubvec[1] = {1.001f};
    idx_t opts[METIS_NOPTIONS];
    METIS_SetDefaultOptions(opts);
    opts[METIS_OPTION_SEED] = (idx_t)(seed & 0x7fffffff);
    opts[METIS_OPTION_NUMBERING] = 0;
    int rc = METIS_PartGraphKway(&nv, &ncon, xadj, adj, NULL, NULL, w, &nparts, NULL, ubvec, opts, &objval, part);
    if (rc != METIS_OK) {
        s = kf_error_set(err, KF_ERR_INTERNAL, "moefy: METIS_PartGraphKway failed (code %d)", rc);
        goto done;
    }
    for (int j = 0; j < F; j++) labels[j] = (int32_t)part[j];
    rebalance(F, E, xadj, adj, w, labels, conn, count);
done:
    free(xadj);
    free(adj);
    free(w);
    free(part);
    free(conn);
    free(count);
    return s;
#endif
}

typedef struct {
    int label, size;
} group_size;

static int by_size_desc(const void *a, const void *b) {
    const group_size *x = a, *y = b;
    if (x->size != y->size) return y->size - x->size;
    return x->label - y->label;
}

kf_status kf_moe_split_fold(const kf_moments *mo, int E, double keep, int32_t *labels, kf_error *err) {
    const int F = mo->d, S = F / (E > 0 ? E : 1);
    kf_status s = check_sizes(F, E, "fold", err);
    if (s != KF_OK) return s;
    if (mo->n < 2) return kf_error_set(err, KF_ERR_ARG, "moefy: fold split needs statistics of at least 2 tokens");
    int k = (int)lround(keep * F);
    if (k < E) k = E;
    if (k > F) k = F;
    double *corr = malloc(sizeof(double) * (size_t)F * F), t_cut;
    int32_t *groups = malloc(sizeof(int32_t) * (size_t)F);
    group_size *gs = calloc((size_t)k, sizeof *gs);
    int *room = malloc(sizeof(int) * (size_t)E);
    if (!corr || !groups || !gs || !room) {
        s = kf_error_set(err, KF_ERR_NOMEM, "moefy: out of memory for fold groups");
        goto done;
    }
    if ((s = kf_moments_corr(mo, corr, err)) != KF_OK) goto done;
    if ((s = kf_ffn_group_corr_k(corr, F, k, groups, &t_cut, err)) != KF_OK) goto done;
    for (int g = 0; g < k; g++) gs[g].label = g;
    for (int j = 0; j < F; j++) gs[groups[j]].size++;
    qsort(gs, (size_t)k, sizeof *gs, by_size_desc);
    for (int e = 0; e < E; e++) room[e] = S;
    for (int g = 0; g < k; g++) {
        // members of group gs[g], in index order, go to the expert with most room
        int e = 0;
        for (int q = 1; q < E; q++)
            if (room[q] > room[e]) e = q;
        for (int j = 0; j < F; j++) {
            if (groups[j] != gs[g].label) continue;
            if (room[e] == 0) // the group overflows: continue in the next roomiest expert
                for (int q = 0; q < E; q++)
                    if (room[q] > room[e]) e = q;
            labels[j] = e;
            room[e]--;
        }
    }
done:
    free(corr);
    free(groups);
    free(gs);
    free(room);
    return s;
}

kf_status kf_moe_permute_layer(kf_model *m, int l, const int32_t *labels, int E, int *perm, kf_error *err) {
    kf_layer *L = &m->layers[l];
    const int F = L->n_ff, S = F / E;
    kf_status s = check_sizes(F, E, "reorder", err);
    if (s != KF_OK) return s;
    int *idx = malloc(sizeof(int) * (size_t)F), *fill = calloc((size_t)E, sizeof(int));
    if (!idx || !fill) {
        free(idx);
        free(fill);
        return kf_error_set(err, KF_ERR_NOMEM, "moefy: out of memory");
    }
    for (int j = 0; j < F; j++) {
        int e = labels[j];
        if (e < 0 || e >= E || fill[e] == S) {
            free(idx);
            free(fill);
            return kf_error_set(err, KF_ERR_INTERNAL, "moefy: layer %d: labels are not %d balanced experts", l, E);
        }
        idx[e * S + fill[e]++] = j;
    }
    free(fill);
    if (perm) memcpy(perm, idx, sizeof(int) * (size_t)F);
    s = kf_ffn_select(m, l, idx, F, NULL, err); // rows idx of gate/up/b_up, columns idx of w_down
    free(idx);
    return s;
}
