#include "analyze/corrclust.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    float d;
    int32_t order; // position in chain order: makes the sort stable
    int32_t x, y;  // representative leaves of the merged clusters
} raw_merge;

static int cmp_merge(const void *pa, const void *pb) {
    const raw_merge *a = pa, *b = pb;
    int an = isnan(a->d), bn = isnan(b->d); // NaN distances sort last
    if (an != bn) return an - bn;
    if (!an && a->d != b->d) return a->d < b->d ? -1 : 1;
    return (a->order > b->order) - (a->order < b->order);
}

static int32_t uf_find(int32_t *parent, int32_t x) {
    int32_t r = x;
    while (parent[r] != r) r = parent[r];
    while (parent[x] != r) {
        int32_t nx = parent[x];
        parent[x] = r;
        x = nx;
    }
    return r;
}

kf_status kf_linkage_average(float *dist, int n, kf_linkage *z, kf_error *err) {
    memset(z, 0, sizeof *z);
    if (n < 2 || n > 65536) return kf_error_set(err, KF_ERR_ARG, "linkage: %d points not in [2, 65536]", n);
    int32_t *size = malloc((size_t)n * sizeof *size);
    int32_t *chain = malloc((size_t)n * sizeof *chain);
    int32_t *parent = malloc((size_t)(2 * n - 1) * sizeof *parent);
    int32_t *usize = malloc((size_t)(2 * n - 1) * sizeof *usize);
    raw_merge *mg = malloc((size_t)(n - 1) * sizeof *mg);
    z->a = malloc((size_t)(n - 1) * sizeof *z->a);
    z->b = malloc((size_t)(n - 1) * sizeof *z->b);
    z->dist = malloc((size_t)(n - 1) * sizeof *z->dist);
    z->size = malloc((size_t)(n - 1) * sizeof *z->size);
    if (!size || !chain || !parent || !usize || !mg || !z->a || !z->b || !z->dist || !z->size) {
        free(size);
        free(chain);
        free(parent);
        free(usize);
        free(mg);
        kf_linkage_free(z);
        return kf_error_set(err, KF_ERR_NOMEM, "linkage: out of memory for %d points", n);
    }
    z->n = n;
    const int64_t N = n;
    for (int i = 0; i < n; i++) size[i] = 1;
    int len = 0;
    for (int k = 0; k < n - 1; k++) {
        if (len == 0) {
            int i = 0;
            while (size[i] == 0) i++;
            chain[len++] = i;
        }
        int x, y;
        float cur;
        for (;;) {
            x = chain[len - 1];
            y = -1;
            cur = INFINITY;
            if (len > 1) {
                y = chain[len - 2];
                cur = x < y ? dist[kf_condensed_index(N, x, y)] : dist[kf_condensed_index(N, y, x)];
            }
            // Row x of the condensed matrix: i < x lie down column x (stride
            // n-i-2), i > x are contiguous.
            int64_t p = x - 1;
            for (int i = 0; i < x; i++) {
                if (size[i] && dist[p] < cur) {
                    cur = dist[p];
                    y = i;
                }
                p += N - i - 2;
            }
            if (x + 1 < n) {
                const float *row = dist + kf_condensed_index(N, x, x + 1); // row[i-x-1] = d(x,i)
                for (int i = x + 1; i < n; i++)
                    if (size[i] && row[i - x - 1] < cur) {
                        cur = row[i - x - 1];
                        y = i;
                    }
            }
            if (y < 0) { // only NaN distances left: join x with any active point
                for (int i = 0; i < n && y < 0; i++)
                    if (size[i] && i != x) y = i;
                cur = NAN;
            }
            if (len > 1 && y == chain[len - 2]) break;
            chain[len++] = y;
        }
        len -= 2;
        if (x > y) {
            int t = x;
            x = y;
            y = t;
        }
        mg[k] = (raw_merge){cur, k, x, y};
        // The new cluster lives in slot y; slot x is retired.
        double nx = size[x], ny = size[y];
        for (int i = 0; i < n; i++) {
            if (!size[i] || i == x || i == y) continue;
            int64_t ix = i < x ? kf_condensed_index(N, i, x) : kf_condensed_index(N, x, i);
            int64_t iy = i < y ? kf_condensed_index(N, i, y) : kf_condensed_index(N, y, i);
            dist[iy] = (float)((nx * dist[ix] + ny * dist[iy]) / (nx + ny));
        }
        size[y] += size[x];
        size[x] = 0;
    }
    qsort(mg, (size_t)(n - 1), sizeof *mg, cmp_merge);
    // Relabel: cluster ids n+k in sorted order, found through union-find.
    for (int i = 0; i < 2 * n - 1; i++) {
        parent[i] = i;
        usize[i] = 1;
    }
    for (int k = 0; k < n - 1; k++) {
        int32_t rx = uf_find(parent, mg[k].x), ry = uf_find(parent, mg[k].y);
        z->a[k] = rx < ry ? rx : ry;
        z->b[k] = rx < ry ? ry : rx;
        z->dist[k] = mg[k].d;
        z->size[k] = usize[rx] + usize[ry];
        usize[n + k] = z->size[k];
        parent[rx] = parent[ry] = n + k;
    }
    free(size);
    free(chain);
    free(parent);
    free(usize);
    free(mg);
    return KF_OK;
}

void kf_linkage_free(kf_linkage *z) {
    free(z->a);
    free(z->b);
    free(z->dist);
    free(z->size);
    memset(z, 0, sizeof *z);
}

kf_status kf_linkage_cut(const kf_linkage *z, double t, int32_t *labels, int *n_clusters, kf_error *err) {
    const int n = z->n;
    int32_t *leaf = malloc((size_t)(2 * n - 1) * sizeof *leaf); // a leaf of every node
    int32_t *parent = malloc((size_t)n * sizeof *parent);     // union-find over leaves
    int32_t *lab = malloc((size_t)n * sizeof *lab);
    if (!leaf || !parent || !lab) {
        free(leaf);
        free(parent);
        free(lab);
        return kf_error_set(err, KF_ERR_NOMEM, "linkage: out of memory for %d points", n);
    }
    for (int i = 0; i < n; i++) {
        leaf[i] = parent[i] = i;
        lab[i] = -1;
    }
    for (int k = 0; k < n - 1; k++) {
        leaf[n + k] = leaf[z->a[k]];
        if (z->dist[k] <= t) {
            int32_t ra = uf_find(parent, leaf[z->a[k]]), rb = uf_find(parent, leaf[z->b[k]]);
            parent[ra] = rb;
        }
    }
    int k = 0;
    for (int i = 0; i < n; i++) {
        int32_t r = uf_find(parent, i);
        if (lab[r] < 0) lab[r] = k++;
        labels[i] = lab[r];
    }
    *n_clusters = k;
    free(leaf);
    free(parent);
    free(lab);
    return KF_OK;
}

double kf_linkage_redundancy(const kf_linkage *z, double t) {
    int merged = 0;
    for (int k = 0; k < z->n - 1; k++) merged += z->dist[k] <= t;
    return (double)merged / z->n;
}

void kf_corrclust_dist(const double *corr, int n, float *dist) {
    int64_t p = 0;
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++) dist[p++] = (float)(1.0 - fabs(corr[(size_t)i * n + j]));
}

kf_status kf_corrclust_run(const double *corr, int n, kf_linkage *z, kf_error *err) {
    memset(z, 0, sizeof *z);
    if (n < 2 || n > 65536) return kf_error_set(err, KF_ERR_ARG, "corrclust: %d neurons not in [2, 65536]", n);
    float *dist = malloc((size_t)n * (n - 1) / 2 * sizeof *dist);
    if (!dist) return kf_error_set(err, KF_ERR_NOMEM, "corrclust: out of memory for %d neurons", n);
    kf_corrclust_dist(corr, n, dist);
    kf_status st = kf_linkage_average(dist, n, z, err);
    free(dist);
    return st;
}
