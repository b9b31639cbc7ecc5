// Sets of neurons, overlap and its null, expert concentration (sets.h).
#include <math.h>
#include <stdlib.h>

#include "specialise/sets.h"

static int by_value_desc(const void *a, const void *b) {
    const kf_spec_ranked *x = a, *y = b;
    if (x->v != y->v) return x->v > y->v ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

void kf_spec_top_k(const double *v, int n, int k, int32_t *idx, kf_spec_ranked *scratch) {
    for (int i = 0; i < n; i++) scratch[i] = (kf_spec_ranked){v[i], i};
    qsort(scratch, (size_t)n, sizeof *scratch, by_value_desc);
    for (int i = 0; i < k; i++) idx[i] = scratch[i].i;
}

int kf_spec_intersect(const int32_t *a, int ka, const int32_t *b, int kb, uint8_t *mark) {
    int inter = 0;
    for (int i = 0; i < ka; i++) mark[a[i]] = 1;
    for (int i = 0; i < kb; i++) inter += mark[b[i]];
    for (int i = 0; i < ka; i++) mark[a[i]] = 0;
    return inter;
}

double kf_spec_iou(int inter, int ka, int kb) {
    const int uni = ka + kb - inter;
    return uni > 0 ? (double)inter / uni : 0;
}

void kf_spec_random_set(int n, int k, int32_t *perm, int32_t *out, kf_rng *r) {
    for (int i = 0; i < k; i++) {
        const int j = i + kf_rng_below(r, n - i);
        const int32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
        out[i] = perm[i];
    }
}

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double kf_spec_percentile(double *v, int n, double q) {
    if (n <= 0) return NAN;
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    const double pos = q * (n - 1);
    const int i = (int)floor(pos);
    return i + 1 < n ? v[i] + (pos - i) * (v[i + 1] - v[i]) : v[n - 1];
}

kf_spec_null kf_spec_overlap_null(int n, int ka, int kb, double observed, int draws, kf_rng *r) {
    kf_spec_null out = {NAN, NAN, NAN};
    int32_t *perm = malloc(sizeof *perm * (size_t)n), *sa = malloc(sizeof *sa * (size_t)(ka + 1)),
            *sb = malloc(sizeof *sb * (size_t)(kb + 1));
    uint8_t *mark = calloc((size_t)n, 1);
    double *iou = malloc(sizeof *iou * (size_t)draws);
    if (perm && sa && sb && mark && iou && draws > 0) {
        for (int i = 0; i < n; i++) perm[i] = i;
        double sum = 0;
        int ge = 0;
        for (int d = 0; d < draws; d++) {
            kf_spec_random_set(n, ka, perm, sa, r);
            kf_spec_random_set(n, kb, perm, sb, r);
            iou[d] = kf_spec_iou(kf_spec_intersect(sa, ka, sb, kb, mark), ka, kb);
            sum += iou[d];
            ge += iou[d] >= observed - 1e-12;
        }
        out.mean = sum / draws;
        out.p = (1.0 + ge) / (1.0 + draws);
        out.q95 = kf_spec_percentile(iou, draws, 0.95);
    }
    free(perm);
    free(sa);
    free(sb);
    free(mark);
    free(iou);
    return out;
}

static int cmp_int_desc(const void *a, const void *b) {
    const int x = *(const int *)a, y = *(const int *)b;
    return x > y ? -1 : x < y;
}

void kf_spec_concentration(const int32_t *set, int t, const int32_t *expert_of, int E, int k, int *counts,
                           double *share, double *entropy) {
    for (int e = 0; e < E; e++) counts[e] = 0;
    for (int i = 0; i < t; i++) counts[expert_of[set[i]]]++;
    double h = 0;
    for (int e = 0; e < E; e++)
        if (counts[e] > 0) {
            const double p = (double)counts[e] / t;
            h -= p * log(p);
        }
    *entropy = E > 1 && t > 0 ? h / log((double)E) : 0;
    qsort(counts, (size_t)E, sizeof *counts, cmp_int_desc);
    int in = 0;
    for (int e = 0; e < k && e < E; e++) in += counts[e];
    *share = t > 0 ? (double)in / t : 0;
}

static int cmp_ranked(const void *a, const void *b) {
    const kf_spec_ranked *x = a, *y = b;
    return (x->v > y->v) - (x->v < y->v);
}

// rank (n) of v, 1-based, ties at their average rank; s (n) scratch.
static void ranks(const double *v, int n, kf_spec_ranked *s, double *rank) {
    for (int i = 0; i < n; i++) s[i] = (kf_spec_ranked){v[i], i};
    qsort(s, (size_t)n, sizeof *s, cmp_ranked);
    for (int i = 0; i < n;) {
        int e = i;
        while (e < n && s[e].v == s[i].v) e++;
        for (int k = i; k < e; k++) rank[s[k].i] = 0.5 * (i + e - 1) + 1;
        i = e;
    }
}

double kf_spec_spearman(const double *x, const double *y, int n) {
    if (n < 2) return NAN;
    kf_spec_ranked *s = malloc(sizeof *s * (size_t)n);
    double *rx = malloc(sizeof *rx * (size_t)n), *ry = malloc(sizeof *ry * (size_t)n);
    double r = NAN;
    if (s && rx && ry) {
        ranks(x, n, s, rx);
        ranks(y, n, s, ry);
        double mx = 0, my = 0, sxy = 0, sxx = 0, syy = 0;
        for (int i = 0; i < n; i++) mx += rx[i] / n, my += ry[i] / n;
        for (int i = 0; i < n; i++) {
            sxy += (rx[i] - mx) * (ry[i] - my);
            sxx += (rx[i] - mx) * (rx[i] - mx);
            syy += (ry[i] - my) * (ry[i] - my);
        }
        if (sxx > 0 && syy > 0) r = sxy / sqrt(sxx * syy);
    }
    free(s), free(rx), free(ry);
    return r;
}
