#include "analyze/kmeans.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"

static double sqdist(const float *x, const float *c, int d) {
    double s = 0;
    for (int j = 0; j < d; j++) {
        double t = (double)x[j] - c[j];
        s += t * t;
    }
    return s;
}

typedef struct {
    float d;
    int32_t i, j;
} km_pair;

static int cmp_pair(const void *pa, const void *pb) {
    const km_pair *a = pa, *b = pb;
    if (a->d != b->d) return a->d < b->d ? -1 : 1;
    if (a->i != b->i) return a->i < b->i ? -1 : 1;
    return (a->j > b->j) - (a->j < b->j);
}

typedef struct {
    float *xx;     // (n) squared row norms
    float *cc;     // (k) squared centre norms
    float *D;      // (n,k) squared distances
    float *mind;   // (n) squared distance to the assigned centre
    int32_t *prev; // (n) labels of the previous assignment
    double *sums;  // (k,d)
    int64_t *cnt;  // (k)
    km_pair *pairs; // (n*k) balanced only
    int32_t *fill; // (k) balanced only
} km_work;

static void work_free(km_work *w) {
    free(w->xx);
    free(w->cc);
    free(w->D);
    free(w->mind);
    free(w->prev);
    free(w->sums);
    free(w->cnt);
    free(w->pairs);
    free(w->fill);
}

static int work_init(km_work *w, int n, int d, int k, int balanced) {
    memset(w, 0, sizeof *w);
    size_t un = n, uk = k;
    w->xx = malloc(un * sizeof *w->xx);
    w->cc = malloc(uk * sizeof *w->cc);
    w->D = malloc(un * uk * sizeof *w->D);
    w->mind = malloc(un * sizeof *w->mind);
    w->prev = malloc(un * sizeof *w->prev);
    w->sums = malloc(uk * d * sizeof *w->sums);
    w->cnt = malloc(uk * sizeof *w->cnt);
    if (balanced) {
        w->pairs = malloc(un * uk * sizeof *w->pairs);
        w->fill = malloc(uk * sizeof *w->fill);
    }
    if (!w->xx || !w->cc || !w->D || !w->mind || !w->prev || !w->sums || !w->cnt ||
        (balanced && (!w->pairs || !w->fill))) {
        work_free(w);
        return 0;
    }
    return 1;
}

// D (nb,k) = squared distances of rows X (nb,d) to centres C (k,d).
static void block_dist(const float *X, const float *xx, int nb, int d, int k, const float *C, const float *cc,
                       float *D) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nb, k, d, -2.0f, X, d, C, d, 0.0f, D, k);
    for (int i = 0; i < nb; i++)
        for (int j = 0; j < k; j++) {
            float v = D[(size_t)i * k + j] + xx[i] + cc[j];
            D[(size_t)i * k + j] = v > 0 ? v : 0;
        }
}

// out (rows) = squared norms of the rows of A (rows,d).
static void row_norms(const float *A, int rows, int d, float *out) {
    for (int i = 0; i < rows; i++) {
        double s = 0;
        for (int t = 0; t < d; t++) s += (double)A[(size_t)i * d + t] * A[(size_t)i * d + t];
        out[i] = (float)s;
    }
}

// One sgemm over all n rows: block-wise calls paid a thread barrier each.
static void assign_nearest(const float *X, int n, int d, int k, const float *C, km_work *w, int32_t *labels) {
    row_norms(C, k, d, w->cc);
    block_dist(X, w->xx, n, d, k, C, w->cc, w->D);
    for (int i = 0; i < n; i++) {
        const float *row = w->D + (size_t)i * k;
        int best = 0;
        for (int j = 1; j < k; j++)
            if (row[j] < row[best]) best = j;
        labels[i] = best;
        w->mind[i] = row[best];
    }
}

static void assign_balanced(const float *X, int n, int d, int k, const float *C, km_work *w, int32_t *labels) {
    row_norms(C, k, d, w->cc);
    block_dist(X, w->xx, n, d, k, C, w->cc, w->D);
    size_t np = (size_t)n * k;
    for (size_t p = 0; p < np; p++) w->pairs[p] = (km_pair){w->D[p], (int32_t)(p / k), (int32_t)(p % k)};
    qsort(w->pairs, np, sizeof *w->pairs, cmp_pair);
    int q = n / k, r = n % k, n_big = 0, left = n;
    for (int i = 0; i < n; i++) labels[i] = -1;
    for (int j = 0; j < k; j++) w->fill[j] = 0;
    for (size_t p = 0; p < np && left > 0; p++) {
        int i = w->pairs[p].i, j = w->pairs[p].j;
        if (labels[i] >= 0) continue;
        if (w->fill[j] == q + 1 || (w->fill[j] == q && n_big == r)) continue;
        if (w->fill[j] == q) n_big++;
        w->fill[j]++;
        labels[i] = j;
        w->mind[i] = w->pairs[p].d;
        left--;
    }
}

// Centres = means of their points; empty clusters are refilled as documented.
static void update_centres(const float *X, int n, int d, int k, float *C, km_work *w, int32_t *labels) {
    memset(w->sums, 0, (size_t)k * d * sizeof *w->sums);
    memset(w->cnt, 0, (size_t)k * sizeof *w->cnt);
    for (int i = 0; i < n; i++) w->cnt[labels[i]]++;
    // Threads own column slices of the sums: no races, and every column is
    // summed over the points in the same order as a single thread would.
#pragma omp parallel for schedule(static) if ((double)n * d > 1e6)
    for (int t0 = 0; t0 < d; t0 += 256) {
        int t1 = t0 + 256 < d ? t0 + 256 : d;
        for (int i = 0; i < n; i++) {
            double *s = w->sums + (size_t)labels[i] * d;
            const float *x = X + (size_t)i * d;
            for (int t = t0; t < t1; t++) s[t] += x[t];
        }
    }
    for (int j = 0; j < k; j++) {
        if (w->cnt[j] > 0) continue;
        int far = -1;
        for (int i = 0; i < n; i++)
            if (w->mind[i] >= 0 && w->cnt[labels[i]] > 1 && (far < 0 || w->mind[i] > w->mind[far])) far = i;
        if (far < 0) continue; // cannot happen for k <= n
        const float *x = X + (size_t)far * d;
        double *so = w->sums + (size_t)labels[far] * d, *sn = w->sums + (size_t)j * d;
        for (int t = 0; t < d; t++) {
            so[t] -= x[t];
            sn[t] += x[t];
        }
        w->cnt[labels[far]]--;
        w->cnt[j]++;
        labels[far] = j;
        w->mind[far] = -1;
    }
    for (int j = 0; j < k; j++)
        for (int t = 0; t < d; t++)
            C[(size_t)j * d + t] = (float)(w->sums[(size_t)j * d + t] / (double)w->cnt[j]);
}

static kf_status check_args(int n, int d, int k, kf_error *err) {
    if (n < 1 || d < 1 || k < 1 || k > n || (double)n * k > 1e9)
        return kf_error_set(err, KF_ERR_ARG, "kmeans: bad sizes n=%d d=%d k=%d", n, d, k);
    return KF_OK;
}

kf_status kf_kmeans_lloyd(const float *X, int n, int d, int k, float *centres, int32_t *labels, int max_iter,
                          int balanced, double *objective, int *iters, kf_error *err) {
    kf_status st = check_args(n, d, k, err);
    if (st != KF_OK) return st;
    km_work w;
    if (!work_init(&w, n, d, k, balanced))
        return kf_error_set(err, KF_ERR_NOMEM, "kmeans: out of memory (n=%d d=%d k=%d)", n, d, k);
    row_norms(X, n, d, w.xx);
    int it = 0;
    for (;;) {
        if (balanced) assign_balanced(X, n, d, k, centres, &w, labels);
        else assign_nearest(X, n, d, k, centres, &w, labels);
        if (it > 0 && memcmp(labels, w.prev, (size_t)n * sizeof *labels) == 0) break;
        if (it == max_iter) break;
        update_centres(X, n, d, k, centres, &w, labels);
        memcpy(w.prev, labels, (size_t)n * sizeof *labels);
        it++;
    }
    double obj = 0;
    for (int i = 0; i < n; i++) obj += sqdist(X + (size_t)i * d, centres + (size_t)labels[i] * d, d);
    *objective = obj;
    if (iters) *iters = it;
    work_free(&w);
    return KF_OK;
}

kf_status kf_kmeans_pp(const float *X, int n, int d, int k, uint64_t seed, float *centres, kf_error *err) {
    kf_status st = check_args(n, d, k, err);
    if (st != KF_OK) return st;
    double *D = malloc((size_t)n * sizeof *D); // squared distance to the nearest chosen centre
    float *xx = malloc((size_t)n * sizeof *xx), *xc = malloc((size_t)n * sizeof *xc);
    if (!D || !xx || !xc) {
        free(D);
        free(xx);
        free(xc);
        return kf_error_set(err, KF_ERR_NOMEM, "kmeans: out of memory (n=%d)", n);
    }
    row_norms(X, n, d, xx);
    kf_rng rng;
    kf_rng_seed(&rng, seed);
    int pick = kf_rng_below(&rng, n);
    for (int c = 0; c < k; c++) {
        if (c > 0) {
            double total = 0;
            for (int i = 0; i < n; i++) total += D[i];
            if (total > 0) {
                double u = kf_rng_uniform(&rng) * total, acc = 0;
                pick = n - 1;
                for (int i = 0; i < n; i++) {
                    acc += D[i];
                    if (acc > u && D[i] > 0) {
                        pick = i;
                        break;
                    }
                }
            } else {
                pick = kf_rng_below(&rng, n); // all points coincide with chosen centres
            }
        }
        const float *x = X + (size_t)pick * d;
        memcpy(centres + (size_t)c * d, x, (size_t)d * sizeof *centres);
        // ||x_i - x||^2 = ||x_i||^2 - 2 x_i.x + ||x||^2, x_i.x for all rows in one sgemv
        // (a memory-bound pass over X instead of n scalar distance loops).
        cblas_sgemv(CblasRowMajor, CblasNoTrans, n, d, 1.0f, X, d, x, 1, 0.0f, xc, 1);
        for (int i = 0; i < n; i++) {
            double s = (double)xx[i] - 2.0 * xc[i] + xx[pick];
            if (s < 0 || i == pick) s = 0;
            if (c == 0 || s < D[i]) D[i] = s;
        }
    }
    free(D);
    free(xx);
    free(xc);
    return KF_OK;
}

kf_status kf_kmeans_fit(const float *X, int n, int d, int k, const kf_kmeans_opts *opts, float *centres,
                        int32_t *labels, double *objective, kf_error *err) {
    kf_status st = check_args(n, d, k, err);
    if (st != KF_OK) return st;
    if (opts->n_init < 1 || opts->max_iter < 0)
        return kf_error_set(err, KF_ERR_ARG, "kmeans: n_init %d must be >= 1, max_iter %d >= 0", opts->n_init,
                            opts->max_iter);
    float *C = malloc((size_t)k * d * sizeof *C);
    int32_t *lab = malloc((size_t)n * sizeof *lab);
    if (!C || !lab) {
        free(C);
        free(lab);
        return kf_error_set(err, KF_ERR_NOMEM, "kmeans: out of memory (n=%d d=%d k=%d)", n, d, k);
    }
    double best = INFINITY;
    for (int r = 0; r < opts->n_init && st == KF_OK; r++) {
        uint64_t s = opts->seed ^ (0x9e3779b97f4a7c15ull * (uint64_t)(r + 1));
        double obj;
        st = kf_kmeans_pp(X, n, d, k, kf_rng_splitmix64(&s), C, err);
        if (st == KF_OK) st = kf_kmeans_lloyd(X, n, d, k, C, lab, opts->max_iter, opts->balanced, &obj, NULL, err);
        if (st == KF_OK && (r == 0 || obj < best)) {
            best = obj;
            memcpy(centres, C, (size_t)k * d * sizeof *C);
            memcpy(labels, lab, (size_t)n * sizeof *lab);
        }
    }
    free(C);
    free(lab);
    if (st == KF_OK) *objective = best;
    return st;
}

kf_status kf_silhouette(const float *X, int n, int d, const int32_t *labels, int k, int sample, uint64_t seed,
                        double *score, double *values, kf_error *err) {
    if (n < 2 || d < 1 || k < 2) return kf_error_set(err, KF_ERR_ARG, "silhouette: bad sizes n=%d d=%d k=%d", n, d, k);
    for (int i = 0; i < n; i++)
        if (labels[i] < 0 || labels[i] >= k)
            return kf_error_set(err, KF_ERR_ARG, "silhouette: label %d of point %d not in [0, %d)", labels[i], i, k);
    const int B = KF_KMEANS_BLOCK;
    int m = sample <= 0 || sample >= n ? n : sample;
    int32_t *idx = malloc((size_t)n * sizeof *idx);
    int64_t *cnt = calloc((size_t)k, sizeof *cnt);
    double *mean = calloc((size_t)d, sizeof *mean);
    double *xs = malloc((size_t)B * d * sizeof *xs);    // sampled rows, centred
    double *xb = malloc((size_t)B * d * sizeof *xb);    // block of all rows, centred
    double *ns = malloc((size_t)B * sizeof *ns);        // their squared norms
    double *nb = malloc((size_t)B * sizeof *nb);
    double *G = malloc((size_t)B * B * sizeof *G);      // dot products (B,B)
    double *csum = malloc((size_t)B * k * sizeof *csum); // distance sums per cluster
    if (!idx || !cnt || !mean || !xs || !xb || !ns || !nb || !G || !csum) {
        free(idx); free(cnt); free(mean); free(xs); free(xb); free(ns); free(nb); free(G); free(csum);
        return kf_error_set(err, KF_ERR_NOMEM, "silhouette: out of memory (n=%d d=%d k=%d)", n, d, k);
    }
    for (int i = 0; i < n; i++) {
        idx[i] = i;
        cnt[labels[i]]++;
        for (int t = 0; t < d; t++) mean[t] += X[(size_t)i * d + t];
    }
    for (int t = 0; t < d; t++) mean[t] /= n;
    int nonempty = 0;
    for (int c = 0; c < k; c++) nonempty += cnt[c] > 0;
    kf_status st = KF_OK;
    if (nonempty < 2) st = kf_error_set(err, KF_ERR_ARG, "silhouette: needs at least 2 non-empty clusters");
    if (st == KF_OK && m < n) { // partial Fisher-Yates: idx[0..m) is a uniform sample
        kf_rng rng;
        kf_rng_seed(&rng, seed);
        for (int i = 0; i < m; i++) {
            int j = i + kf_rng_below(&rng, n - i);
            int32_t t = idx[i];
            idx[i] = idx[j];
            idx[j] = t;
        }
    }
    if (values)
        for (int i = 0; i < n; i++) values[i] = NAN;
    double total = 0;
    for (int s0 = 0; s0 < m && st == KF_OK; s0 += B) {
        int ms = m - s0 < B ? m - s0 : B;
        for (int a = 0; a < ms; a++) {
            double q = 0;
            for (int t = 0; t < d; t++) {
                double v = X[(size_t)idx[s0 + a] * d + t] - mean[t];
                xs[(size_t)a * d + t] = v;
                q += v * v;
            }
            ns[a] = q;
        }
        memset(csum, 0, (size_t)ms * k * sizeof *csum);
        for (int r0 = 0; r0 < n; r0 += B) {
            int rb = n - r0 < B ? n - r0 : B;
            for (int b = 0; b < rb; b++) {
                double q = 0;
                for (int t = 0; t < d; t++) {
                    double v = X[(size_t)(r0 + b) * d + t] - mean[t];
                    xb[(size_t)b * d + t] = v;
                    q += v * v;
                }
                nb[b] = q;
            }
            // G (ms,rb) = xs xb^T
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, ms, rb, d, 1.0, xs, d, xb, d, 0.0, G, rb);
            for (int a = 0; a < ms; a++)
                for (int b = 0; b < rb; b++) {
                    if (r0 + b == idx[s0 + a]) continue;
                    double q = ns[a] + nb[b] - 2 * G[(size_t)a * rb + b];
                    csum[(size_t)a * k + labels[r0 + b]] += q > 0 ? sqrt(q) : 0;
                }
        }
        for (int a = 0; a < ms; a++) {
            int i = idx[s0 + a], li = labels[i];
            double s = 0;
            if (cnt[li] > 1) {
                double ai = csum[(size_t)a * k + li] / (double)(cnt[li] - 1), bi = INFINITY;
                for (int c = 0; c < k; c++)
                    if (c != li && cnt[c] > 0 && csum[(size_t)a * k + c] / (double)cnt[c] < bi)
                        bi = csum[(size_t)a * k + c] / (double)cnt[c];
                double mx = ai > bi ? ai : bi;
                s = mx > 0 ? (bi - ai) / mx : 0;
            }
            total += s;
            if (values) values[i] = s;
        }
    }
    if (st == KF_OK) *score = total / m;
    free(idx); free(cnt); free(mean); free(xs); free(xb); free(ns); free(nb); free(G); free(csum);
    return st;
}
