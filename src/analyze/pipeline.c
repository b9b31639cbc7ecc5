#include "analyze/pipeline.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef KF_HAVE_MPI
#include <mpi.h>
#endif

#include "analyze/cka.h"
#include "analyze/corrclust.h"
#include "analyze/kmeans.h"
#include "analyze/threshold.h"
#include "calib/calib.h"
#include "core/file.h"
#include "core/progress.h"
#include "core/rng.h"
#include "runtime/forward.h"
#include "stats/moments.h"

#define N_T 9          // headline thresholds 0.1 .. 0.9
#define N_GRID 101     // dynamic-threshold grid 0.00 .. 1.00
#define MAX_CAND 4     // k-means candidates when k is automatic: 4, 8, 16, 32 (at most n_ff/4)

void kf_analyze_opts_default(kf_analyze_opts *o) {
    memset(o, 0, sizeof *o);
    o->n_tokens = 65536;
    o->ctx = 256;
    o->batch = 4;
    o->threshold = 0.3;
    o->seed = 1;
    o->epsilon = 0.05;
    o->sample_tokens = 2048;
    o->context_tokens = 8192;
    o->n_contexts = 5;
    o->context_radius = 4;
    o->joint_max_dims = 8192;
    o->resid_stride = 4;
    o->bos_id = -1;
    o->n_ranks = 1;
}

// ---------------------------------------------------------------- helpers

// Replaces bytes that are not valid UTF-8 (a context cut through a
// multi-byte character) by '?', so the JSON and HTML stay valid.
static void utf8_sanitize(char *s) {
    unsigned char *p = (unsigned char *)s;
    while (*p) {
        int len = *p < 0x80 ? 1 : (*p >> 5) == 6 ? 2 : (*p >> 4) == 14 ? 3 : (*p >> 3) == 30 ? 4 : 0;
        int ok = len > 0;
        for (int i = 1; ok && i < len; i++) ok = (p[i] & 0xC0) == 0x80;
        if (!ok) {
            *p++ = '?';
            continue;
        }
        p += len;
    }
}

static double seconds_since(double t0) { return kf_time_now() - t0; }

// ---------------------------------------------------------------- recording

typedef struct {
    const kf_model *m;
    int L, C, R, N;          // layers, width, residual representations, rows per call
    int joint;
    int stride;              // joint residual rows: tokens whose index is a multiple of it
    int64_t t0;              // token index of the current call's first row
    kf_moments **ffn;        // (L) owned by stats
    kf_moments *resid_all;   // joint (R*C) or NULL
    kf_moments **resid;      // (R) per representation when not joint
    kf_cka_mb cka;           // minibatch CKA when not joint
    kf_bi_acc *bi;           // (L)
    float *resid_buf;        // (R, N, C) residual stream of the current call
    float *rows;             // (KF_MOMENTS_BLOCK, R*C) concatenated rows
    int S;
    int32_t *slot;           // (N) sample slot of each row of the current call, -1 none
    float **ffn_sample;      // (L) (S, F)
    float *resid_sample;     // (R, S, C) or NULL
    kf_status st;
    kf_error err;
} recorder;

static void rec_store_resid(recorder *r, int rep, const float *x, int n) {
    const size_t C = (size_t)r->C;
    memcpy(r->resid_buf + (size_t)rep * r->N * C, x, (size_t)n * C * sizeof *x);
    if (r->resid_sample)
        for (int i = 0; i < n; i++)
            if (r->slot[i] >= 0)
                memcpy(r->resid_sample + ((size_t)rep * r->S + r->slot[i]) * C, x + i * C, C * sizeof *x);
}

// After the last block of a call: Block Influence, residual moments, CKA.
static void rec_finish_call(recorder *r, int n) {
    const size_t C = (size_t)r->C, NC = (size_t)r->N * C;
    for (int l = 0; l < r->L; l++)
        kf_bi_add(&r->bi[l], r->resid_buf + l * NC, r->resid_buf + (l + 1) * NC, n, r->C);
    if (r->joint) { // rows of tokens whose index is a multiple of the stride, in blocks
        const size_t RC = (size_t)r->R * C;
        int i = (int)((r->stride - r->t0 % r->stride) % r->stride);
        while (i < n && r->st == KF_OK) {
            int nb = 0;
            for (; nb < KF_MOMENTS_BLOCK && i < n; nb++, i += r->stride)
                for (int rep = 0; rep < r->R; rep++)
                    memcpy(r->rows + nb * RC + rep * C, r->resid_buf + rep * NC + (size_t)i * C, C * sizeof(float));
            r->st = kf_moments_add(r->resid_all, r->rows, nb, &r->err);
        }
        return;
    }
    for (int rep = 0; rep < r->R && r->st == KF_OK; rep++)
        r->st = kf_moments_add(r->resid[rep], r->resid_buf + rep * NC, n, &r->err);
    // minibatch CKA on pieces of 256..511 rows (at least 4)
    int np = n / 256 > 0 ? n / 256 : 1;
    for (int p = 0; p < np && r->st == KF_OK; p++) {
        int a = (int)((int64_t)n * p / np), b = (int)((int64_t)n * (p + 1) / np);
        if (b - a < 4) break;
        for (int rep = 0; rep < r->R && r->st == KF_OK; rep++)
            r->st = kf_cka_mb_layer(&r->cka, rep, r->resid_buf + rep * NC + (size_t)a * C, b - a, r->C, &r->err);
        if (r->st == KF_OK) r->st = kf_cka_mb_commit(&r->cka, &r->err);
    }
}

static void rec_hook(void *user, int layer, kf_hook_point p, float *x, int n, int dim) {
    recorder *r = user;
    if (r->st != KF_OK) return;
    if (p == KF_HOOK_BLOCK_IN && layer == 0) {
        rec_store_resid(r, 0, x, n);
    } else if (p == KF_HOOK_FFN_ACT) {
        r->st = kf_moments_add(r->ffn[layer], x, n, &r->err);
        float *smp = r->ffn_sample[layer];
        for (int i = 0; i < n; i++)
            if (r->slot[i] >= 0) memcpy(smp + (size_t)r->slot[i] * dim, x + (size_t)i * dim, (size_t)dim * sizeof *x);
    } else if (p == KF_HOOK_BLOCK_OUT) {
        rec_store_resid(r, layer + 1, x, n);
        if (layer == r->L - 1) rec_finish_call(r, n);
    }
}

// Sorted sample of S distinct token indices in [0, n) (Floyd's algorithm).
static kf_status choose_sample(int64_t n, int S, uint64_t seed, int64_t *pos, kf_error *err) {
    unsigned char *taken = calloc((size_t)(n + 7) / 8, 1);
    if (!taken) return kf_error_set(err, KF_ERR_NOMEM, "analyze: out of memory for the token sample");
    uint64_t s = seed ^ 0x5A17u;
    for (int64_t j = n - S; j < n; j++) {
        int64_t t = (int64_t)(kf_rng_splitmix64(&s) % (uint64_t)(j + 1));
        if (taken[t >> 3] & (1u << (t & 7))) t = j;
        taken[t >> 3] |= (unsigned char)(1u << (t & 7));
    }
    int k = 0;
    for (int64_t t = 0; t < n; t++)
        if (taken[t >> 3] & (1u << (t & 7))) pos[k++] = t;
    free(taken);
    return KF_OK;
}

// Sample slot of every row of the call covering tokens [t0, t0 + n).
static void fill_slots(int32_t *slot, int64_t t0, int n, const int64_t *pos, int S) {
    int lo = 0, hi = S; // first sample >= t0
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (pos[mid] < t0) lo = mid + 1;
        else hi = mid;
    }
    for (int i = 0; i < n; i++) slot[i] = -1;
    for (int k = lo; k < S && pos[k] < t0 + n; k++) slot[pos[k] - t0] = k;
}

#ifdef KF_HAVE_MPI
// Sums one accumulator over all ranks: each rank's sums are first re-centred
// on the global mean (kf_moments_merge into an empty accumulator with that
// shift), so the shifted sums add up.
static kf_status mpi_reduce_moments(kf_moments *m, kf_error *err) {
    const int d = m->d;
    int64_t n_all = 0;
    MPI_Allreduce(&m->n, &n_all, 1, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
    if (n_all == 0) return KF_OK;
    kf_moments c;
    kf_status st = kf_moments_init(&c, d, m->topk, m->eps, err);
    if (st != KF_OK) return st;
    for (int j = 0; j < d; j++) c.shift[j] = m->n > 0 ? (double)m->n * m->shift[j] + m->sum[j] : 0;
    MPI_Allreduce(MPI_IN_PLACE, c.shift, d, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    for (int j = 0; j < d; j++) c.shift[j] /= (double)n_all;
    c.has_shift = 1;
    st = kf_moments_merge(&c, m, err);
    if (st != KF_OK) {
        kf_moments_free(&c);
        return st;
    }
    MPI_Allreduce(MPI_IN_PLACE, c.sum, d, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    for (int i = 0; i < d; i++) // upper triangle, row by row
        MPI_Allreduce(MPI_IN_PLACE, c.sxx + (size_t)i * d + i, d - i, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, c.n_pos, d, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, c.n_nz, d, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, c.sum_abs, d, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, c.max, d, MPI_FLOAT, MPI_MAX, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, c.min, d, MPI_FLOAT, MPI_MIN, MPI_COMM_WORLD);
    if (c.topk > 0) {
        size_t np = (size_t)d * (d + 1) / 2;
        for (size_t p0 = 0; p0 < np; p0 += (size_t)1 << 28) {
            size_t cnt = np - p0 < ((size_t)1 << 28) ? np - p0 : (size_t)1 << 28;
            MPI_Allreduce(MPI_IN_PLACE, c.coact + p0, (int)cnt, MPI_UINT32_T, MPI_SUM, MPI_COMM_WORLD);
        }
    }
    c.n = n_all;
    kf_moments old = *m;
    *m = c;
    kf_moments_free(&old);
    return KF_OK;
}

static void mpi_sum_floats(float *x, size_t n) {
    for (size_t p0 = 0; p0 < n; p0 += (size_t)1 << 28) {
        size_t cnt = n - p0 < ((size_t)1 << 28) ? n - p0 : (size_t)1 << 28;
        MPI_Allreduce(MPI_IN_PLACE, x + p0, (int)cnt, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    }
}

static kf_status mpi_reduce(recorder *r, kf_error *err) {
    for (int l = 0; l < r->L; l++) {
        kf_status st = mpi_reduce_moments(r->ffn[l], err);
        if (st != KF_OK) return st;
        mpi_sum_floats(r->ffn_sample[l], (size_t)r->S * r->m->layers[l].n_ff);
        MPI_Allreduce(MPI_IN_PLACE, &r->bi[l].sum_cos, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
        MPI_Allreduce(MPI_IN_PLACE, &r->bi[l].n, 1, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
    }
    if (r->resid_sample) mpi_sum_floats(r->resid_sample, (size_t)r->R * r->S * r->C);
    if (r->joint) return mpi_reduce_moments(r->resid_all, err);
    for (int rep = 0; rep < r->R; rep++) {
        kf_status st = mpi_reduce_moments(r->resid[rep], err);
        if (st != KF_OK) return st;
    }
    MPI_Allreduce(MPI_IN_PLACE, r->cka.hsic, r->R * r->R, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, &r->cka.n_batches, 1, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
    return KF_OK;
}
#endif

// ---------------------------------------------------------------- JSON helpers

static cJSON *jarr(const double *v, int n) { return cJSON_CreateDoubleArray(v, n); }

static cJSON *jmat(const double *v, int rows, int cols) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < rows; i++) cJSON_AddItemToArray(a, jarr(v + (size_t)i * cols, cols));
    return a;
}

static cJSON *jints(const int32_t *v, int n) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(v[i]));
    return a;
}

// ---------------------------------------------------------------- analyses

typedef struct {
    int k;
    int32_t *labels; // (F)
} clustering;

// k-means of the rows of X (F, d) with k given or chosen by silhouette among
// powers of two; writes the "activation" / "weight" object of one layer.
static kf_status concept_clusters(const float *X, int F, int d, const double *corr, const kf_analyze_opts *o,
                                  clustering *out, cJSON *obj, kf_error *err) {
    int cand[MAX_CAND], nc = 0;
    if (o->k > 0) cand[nc++] = o->k < F ? o->k : F;
    else
        for (int k = 4; k <= 32 && nc < MAX_CAND; k *= 2)
            if (k <= F / 4) cand[nc++] = k;
    if (nc == 0) cand[nc++] = F >= 2 ? 2 : 1;
    kf_kmeans_opts ko = {.max_iter = 30, .n_init = 3, .seed = o->seed, .balanced = 0};
    int k_max = 1;
    for (int c = 0; c < nc; c++) k_max = cand[c] > k_max ? cand[c] : k_max;
    float *centres = malloc((size_t)k_max * d * sizeof *centres);
    int32_t *labels = malloc((size_t)F * sizeof *labels), *best = malloc((size_t)F * sizeof *best);
    double sil[MAX_CAND], obj_best = NAN, sil_best = -INFINITY;
    int k_best = cand[0];
    kf_status st = KF_OK;
    if (!centres || !labels || !best) {
        st = kf_error_set(err, KF_ERR_NOMEM, "analyze: out of memory for k-means");
        goto done;
    }
    for (int c = 0; c < nc; c++) {
        double objective, s = NAN;
        st = kf_kmeans_fit(X, F, d, cand[c], &ko, centres, labels, &objective, err);
        if (st != KF_OK) goto done;
        int nonempty = 0;
        for (int i = 0; i < F && nonempty < 2; i++) nonempty = labels[i] != labels[0] ? 2 : 1;
        if (cand[c] >= 2 && nonempty == 2) {
            st = kf_silhouette(X, F, d, labels, cand[c], F <= 1024 ? 0 : 1024, o->seed, &s, NULL, err);
            if (st != KF_OK) goto done;
        }
        sil[c] = s;
        if (c == 0 || (isfinite(s) && s > sil_best)) {
            sil_best = isfinite(s) ? s : -INFINITY;
            k_best = cand[c];
            obj_best = objective;
            memcpy(best, labels, (size_t)F * sizeof *best);
        }
    }
    out->k = k_best;
    out->labels = best;
    best = NULL;
    {
        int k = k_best;
        double *sizes = calloc((size_t)k, sizeof *sizes), *mac = calloc((size_t)k, sizeof *mac);
        double *npair = calloc((size_t)k, sizeof *npair);
        if (!sizes || !mac || !npair) {
            free(sizes), free(mac), free(npair);
            st = kf_error_set(err, KF_ERR_NOMEM, "analyze: out of memory for cluster summaries");
            goto done;
        }
        for (int i = 0; i < F; i++) {
            int ci = out->labels[i];
            sizes[ci]++;
            for (int j = i + 1; j < F; j++)
                if (out->labels[j] == ci) {
                    mac[ci] += fabs(corr[(size_t)i * F + j]);
                    npair[ci]++;
                }
        }
        for (int c = 0; c < k; c++) mac[c] = npair[c] > 0 ? mac[c] / npair[c] : NAN;
        double kc[MAX_CAND];
        for (int c = 0; c < nc; c++) kc[c] = cand[c];
        cJSON_AddNumberToObject(obj, "k", k);
        cJSON_AddNumberToObject(obj, "silhouette", isfinite(sil_best) ? sil_best : NAN);
        cJSON_AddNumberToObject(obj, "objective", obj_best);
        cJSON_AddItemToObject(obj, "k_candidates", jarr(kc, nc));
        cJSON_AddItemToObject(obj, "silhouette_by_k", jarr(sil, nc));
        cJSON_AddItemToObject(obj, "sizes", jarr(sizes, k));
        cJSON_AddItemToObject(obj, "mean_abs_corr", jarr(mac, k));
        cJSON_AddItemToObject(obj, "labels", jints(out->labels, F));
        free(sizes), free(mac), free(npair);
    }
done:
    free(centres);
    free(labels);
    free(best);
    return st;
}

// Per-layer dynamic threshold: the largest grid t whose cut, and every
// smaller one, keeps the relative FFN output error <= eps.
static kf_status dynamic_threshold(const kf_model *m, int l, const kf_moments *mo, const kf_linkage *z,
                                   const kf_analyze_opts *o, cJSON *layers, double *t_headline_err, kf_error *err) {
    const int F = m->layers[l].n_ff, C = m->n_embd;
    const size_t uF = (size_t)F;
    double *cov = malloc(uF * uF * sizeof *cov), *mean = malloc(uF * sizeof *mean);
    int32_t *labels = malloc(uF * sizeof *labels);
    double errs[N_GRID];
    kf_thresh_layer th = {0};
    kf_status st = KF_OK;
    if (!cov || !mean || !labels) {
        st = kf_error_set(err, KF_ERR_NOMEM, "analyze: out of memory for thresholds of layer %d", l);
        goto done;
    }
    if ((st = kf_moments_cov(mo, cov, err)) != KF_OK || (st = kf_moments_mean(mo, mean, err)) != KF_OK) goto done;
    double pop = (double)(mo->n - 1) / (double)mo->n; // unbiased -> population covariance
    for (size_t i = 0; i < uF * uF; i++) cov[i] *= pop;
    if ((st = kf_thresh_init(&th, m->layers[l].w_down.data, C, F, cov, mean, err)) != KF_OK) goto done;
    int j_best = -1, width = F, ok = 1;
    double err_best = 0;
    for (int j = 0; j < N_GRID; j++) {
        int nc;
        if ((st = kf_linkage_cut(z, j / 100.0, labels, &nc, err)) != KF_OK) goto done;
        if ((st = kf_thresh_error(&th, labels, nc, &errs[j], NULL, err)) != KF_OK) goto done;
        if (ok && errs[j] <= o->epsilon) {
            j_best = j;
            width = nc;
            err_best = errs[j];
        } else {
            ok = 0;
        }
    }
    for (int i = 0; i < N_T; i++) t_headline_err[i] = errs[(i + 1) * 10];
    cJSON *e = cJSON_CreateObject();
    cJSON_AddNumberToObject(e, "layer", l);
    cJSON_AddNumberToObject(e, "n_ff", F);
    cJSON_AddNumberToObject(e, "t", j_best >= 0 ? j_best / 100.0 : NAN);
    cJSON_AddNumberToObject(e, "width", width);
    cJSON_AddNumberToObject(e, "rel_err", err_best);
    cJSON_AddItemToObject(e, "err_curve", jarr(errs, N_GRID));
    cJSON_AddItemToArray(layers, e);
done:
    kf_thresh_free(&th);
    free(cov);
    free(mean);
    free(labels);
    return st;
}

// Linkage of corr (n,n), timed; redundancy at the headline thresholds into red (N_T).
static kf_status cluster_corr(const double *corr, int n, kf_linkage *z, double *red, double *secs, kf_error *err) {
    double t0 = kf_time_now();
    kf_status st = kf_corrclust_run(corr, n, z, err);
    *secs = seconds_since(t0);
    if (st != KF_OK) return st;
    for (int i = 0; i < N_T; i++) red[i] = kf_linkage_redundancy(z, (i + 1) / 10.0);
    return KF_OK;
}

// ---------------------------------------------------------------- contexts

typedef struct {
    int k, M;
    const int32_t *labels; // (F)
    double *size;          // (k)
    double *score;         // (k, M) descending
    int64_t *pos;          // (k, M), -1 empty
} topctx;

typedef struct {
    topctx *act, *wgt;   // (L) each
    double **mu, **isd; // (L) each (F)
    double *csum;        // (max k) scratch
    float *z;            // (max F) scratch
    int64_t t0;          // token index of the call's first row
    const kf_analyze_opts *o;
} ctxpass;

static void topctx_push(topctx *tc, int c, double s, int64_t pos) {
    double *sc = tc->score + (size_t)c * tc->M;
    int64_t *ps = tc->pos + (size_t)c * tc->M;
    if (ps[tc->M - 1] >= 0 && s <= sc[tc->M - 1]) return;
    int p = tc->M - 1;
    while (p > 0 && (ps[p - 1] < 0 || s > sc[p - 1])) {
        sc[p] = sc[p - 1];
        ps[p] = ps[p - 1];
        p--;
    }
    sc[p] = s;
    ps[p] = pos;
}

static void topctx_row(topctx *tc, const float *z, int F, double *csum, int64_t pos) {
    memset(csum, 0, (size_t)tc->k * sizeof *csum);
    for (int j = 0; j < F; j++) csum[tc->labels[j]] += z[j];
    for (int c = 0; c < tc->k; c++)
        if (tc->size[c] > 0) topctx_push(tc, c, csum[c] / tc->size[c], pos);
}

static void ctx_hook(void *user, int layer, kf_hook_point p, float *x, int n, int dim) {
    ctxpass *cp = user;
    const double *mu = cp->mu[layer], *isd = cp->isd[layer];
    for (int i = 0; i < n; i++) {
        if (cp->o->bos_id >= 0 && (cp->t0 + i) % cp->o->ctx == 0) continue; // BOS, not the text's token there
        const float *a = x + (size_t)i * dim;
        for (int j = 0; j < dim; j++) cp->z[j] = (float)((a[j] - mu[j]) * isd[j]);
        topctx_row(&cp->act[layer], cp->z, dim, cp->csum, cp->t0 + i);
        topctx_row(&cp->wgt[layer], cp->z, dim, cp->csum, cp->t0 + i);
    }
}

static kf_status topctx_init(topctx *tc, const clustering *cl, int F, int M, kf_error *err) {
    tc->k = cl->k;
    tc->M = M;
    tc->labels = cl->labels;
    tc->size = calloc((size_t)cl->k, sizeof *tc->size);
    tc->score = calloc((size_t)cl->k * M, sizeof *tc->score);
    tc->pos = malloc((size_t)cl->k * M * sizeof *tc->pos);
    if (!tc->size || !tc->score || !tc->pos) return kf_error_set(err, KF_ERR_NOMEM, "analyze: out of memory for contexts");
    for (size_t i = 0; i < (size_t)cl->k * M; i++) tc->pos[i] = -1;
    for (int j = 0; j < F; j++) tc->size[cl->labels[j]]++;
    return KF_OK;
}

static void topctx_free(topctx *tc) {
    free(tc->size);
    free(tc->score);
    free(tc->pos);
}

// Text of ids[a, b) as the tokenizer writes it after token prev.
static void detok(const kf_tokenizer *tok, const int32_t *ids, int64_t a, int64_t b, int32_t prev, char *out,
                  size_t cap) {
    size_t len = 0;
    out[0] = 0;
    for (int64_t i = a; i < b && len + 1 < cap; i++) {
        len += kf_tokenizer_decode_piece(tok, prev, ids[i], out + len, cap - len);
        prev = ids[i];
    }
    utf8_sanitize(out);
}

static cJSON *contexts_json(const topctx *tc, const kf_tokenizer *tok, const int32_t *ids, int64_t n_ids, int radius) {
    cJSON *all = cJSON_CreateArray();
    char left[512], mid[128], right[512];
    for (int c = 0; c < tc->k; c++) {
        cJSON *list = cJSON_CreateArray();
        for (int q = 0; q < tc->M; q++) {
            int64_t pos = tc->pos[(size_t)c * tc->M + q];
            if (pos < 0) break;
            int64_t a = pos - radius > 0 ? pos - radius : 0, b = pos + 1 + radius < n_ids ? pos + 1 + radius : n_ids;
            cJSON *e = cJSON_CreateObject();
            cJSON_AddNumberToObject(e, "pos", (double)pos);
            cJSON_AddNumberToObject(e, "score", tc->score[(size_t)c * tc->M + q]);
            if (tok) {
                detok(tok, ids, a, pos, a > 0 ? ids[a - 1] : -1, left, sizeof left);
                detok(tok, ids, pos, pos + 1, pos > 0 ? ids[pos - 1] : -1, mid, sizeof mid);
                detok(tok, ids, pos + 1, b, ids[pos], right, sizeof right);
                cJSON_AddStringToObject(e, "left", left);
                cJSON_AddStringToObject(e, "token", mid);
                cJSON_AddStringToObject(e, "right", right);
            }
            cJSON_AddItemToObject(e, "ids", jints(ids + a, (int)(b - a)));
            cJSON_AddItemToArray(list, e);
        }
        cJSON_AddItemToArray(all, list);
    }
    return all;
}

// ---------------------------------------------------------------- driver

static void progress(const kf_analyze_opts *o, const char *stage, int64_t done, int64_t total) {
    if (o->progress) o->progress(o->progress_user, stage, done, total);
}

static void recorder_free(recorder *r) {
    free(r->resid);
    free(r->ffn);
    kf_cka_mb_free(&r->cka);
    free(r->bi);
    free(r->resid_buf);
    free(r->rows);
    free(r->slot);
}

static kf_status recorder_init(recorder *r, const kf_model *m, const kf_analyze_opts *o, kf_analysis *a,
                               kf_error *err) {
    memset(r, 0, sizeof *r);
    r->m = m;
    r->L = m->n_layer;
    r->C = m->n_embd;
    r->R = m->n_layer + 1;
    r->N = o->batch * o->ctx;
    r->joint = (int64_t)r->R * r->C <= o->joint_max_dims;
    r->stride = o->resid_stride;
    r->S = a->S;
    r->ffn_sample = a->ffn_sample;
    r->resid_sample = a->resid_sample;
    r->ffn = calloc((size_t)r->L, sizeof *r->ffn);
    r->resid = calloc((size_t)r->R, sizeof *r->resid);
    r->bi = calloc((size_t)r->L, sizeof *r->bi);
    r->resid_buf = malloc((size_t)r->R * r->N * r->C * sizeof *r->resid_buf);
    r->slot = malloc((size_t)r->N * sizeof *r->slot);
    if (r->joint) r->rows = malloc((size_t)KF_MOMENTS_BLOCK * r->R * r->C * sizeof *r->rows);
    if (!r->ffn || !r->resid || !r->bi || !r->resid_buf || !r->slot || (r->joint && !r->rows))
        return kf_error_set(err, KF_ERR_NOMEM, "analyze: out of memory for the recorder");
    char name[64];
    kf_status st;
    for (int l = 0; l < r->L; l++) {
        int F = m->layers[l].n_ff, topk = o->coact_topk > 0 ? o->coact_topk : F / 32 > 4 ? F / 32 : 4;
        if (topk > F) topk = F;
        snprintf(name, sizeof name, "layer.%d.ffn_act", l);
        if ((st = kf_statsfile_add(&a->stats, name, F, topk, 1e-6f, &r->ffn[l], err)) != KF_OK) return st;
        if (!o->f64_products && (st = kf_moments_set_f32(r->ffn[l], err)) != KF_OK) return st;
    }
    if (r->joint) {
        if ((st = kf_statsfile_add(&a->stats, "resid.all", r->R * r->C, 0, 1e-6f, &r->resid_all, err)) != KF_OK)
            return st;
        return o->f64_products ? KF_OK : kf_moments_set_f32(r->resid_all, err);
    }
    for (int rep = 0; rep < r->R; rep++) {
        snprintf(name, sizeof name, "resid.%d", rep);
        if ((st = kf_statsfile_add(&a->stats, name, r->C, 0, 1e-6f, &r->resid[rep], err)) != KF_OK) return st;
        if (!o->f64_products && (st = kf_moments_set_f32(r->resid[rep], err)) != KF_OK) return st;
    }
    return kf_cka_mb_init(&r->cka, r->R, r->N < 256 ? r->N : 511, err);
}

// The calibration protocol of the recording pass; the context pass runs the
// same windows, its first context_tokens ones, on one rank.
static kf_calib_protocol rec_protocol(const kf_analyze_opts *o) {
    return (kf_calib_protocol){.ctx = o->ctx, .batch = o->batch, .bos_id = o->bos_id, .max_tokens = o->n_tokens,
                               .rank = o->rank, .n_ranks = o->n_ranks};
}

typedef struct {
    recorder *r;
    const kf_analyze_opts *o;
    const int64_t *sample_pos;
} rec_run;

static kf_status rec_before(void *user, kf_calib_batch *b, kf_error *err) {
    (void)err;
    rec_run *rr = user;
    rr->r->t0 = b->first * b->ctx;
    fill_slots(rr->r->slot, rr->r->t0, b->n * b->ctx, rr->sample_pos, rr->r->S);
    return KF_OK;
}

static kf_status rec_after(void *user, kf_calib_batch *b, kf_error *err) {
    rec_run *rr = user;
    if (rr->r->st != KF_OK) {
        *err = rr->r->err;
        return rr->r->st;
    }
    progress(rr->o, "recording", b->done * b->ctx, b->total * b->ctx);
    return KF_OK;
}

// Runs this rank's share of the calibration batches through the model.
static kf_status record(recorder *r, kf_ctx *ctx, const kf_model *m, const int32_t *ids, int64_t n_ids,
                        const kf_analyze_opts *o, const int64_t *sample_pos, kf_error *err) {
    const kf_calib_protocol p = rec_protocol(o);
    progress(o, "recording", 0, kf_calib_n_rank_windows(&p, n_ids) * o->ctx); // starts the clock of the rate and ETA
    kf_ctx_set_hook(ctx, rec_hook, r, (1u << KF_HOOK_BLOCK_IN) | (1u << KF_HOOK_FFN_ACT) | (1u << KF_HOOK_BLOCK_OUT));
    rec_run rr = {r, o, sample_pos};
    kf_calib_sink sink = {.before = rec_before, .after = rec_after, .user = &rr};
    kf_status st = kf_calib_run(ctx, m, ids, n_ids, &p, &sink, err);
    kf_ctx_set_hook(ctx, NULL, NULL, 0);
    return st;
}

static kf_status check_opts(const kf_model *m, const int32_t *ids, int64_t n_ids, const kf_analyze_opts *o,
                            kf_error *err) {
    if (o->ctx < 4 || o->batch < 1 || (int64_t)o->ctx * o->batch > (1 << 24))
        return kf_error_set(err, KF_ERR_ARG, "analyze: bad context %d or batch %d", o->ctx, o->batch);
    if (m->pos == KF_POS_LEARNED && o->ctx > m->n_ctx_train)
        return kf_error_set(err, KF_ERR_ARG, "analyze: ctx %d exceeds the model's %d positions", o->ctx, m->n_ctx_train);
    int64_t n_use = o->n_tokens < n_ids ? o->n_tokens : n_ids;
    if (n_use / o->ctx < 1)
        return kf_error_set(err, KF_ERR_ARG, "analyze: %lld calibration tokens, need at least one sequence of %d",
                            (long long)n_use, o->ctx);
    if (!(o->threshold >= 0 && o->threshold <= 1) || !(o->epsilon > 0) || o->k < 0 || o->sample_tokens < 1 ||
        o->n_contexts < 1 || o->context_radius < 0 || o->resid_stride < 1 || o->rank < 0 || o->rank >= o->n_ranks)
        return kf_error_set(err, KF_ERR_ARG, "analyze: bad option (threshold, epsilon, k, sample or rank)");
    for (int64_t i = 0; i < n_use; i++)
        if (ids[i] < 0 || ids[i] >= m->n_vocab)
            return kf_error_set(err, KF_ERR_ARG, "analyze: token %lld has id %d outside the vocabulary of %d",
                                (long long)i, ids[i], m->n_vocab);
    return KF_OK;
}

// Per-neuron mean and 1/std of one accumulator (0 for a constant neuron).
static void mean_isd(const kf_moments *mo, double *mu, double *isd) {
    double n = (double)mo->n;
    for (int j = 0; j < mo->d; j++) {
        mu[j] = mo->shift[j] + mo->sum[j] / n;
        double var = n > 1 ? (mo->sxx[(size_t)j * mo->d + j] - mo->sum[j] * mo->sum[j] / n) / (n - 1) : 0;
        isd[j] = var > 0 ? 1 / sqrt(var) : 0;
    }
}

static kf_status ctx_before(void *user, kf_calib_batch *b, kf_error *err) {
    (void)err;
    ((ctxpass *)user)->t0 = b->first * b->ctx;
    return KF_OK;
}

static kf_status ctx_after(void *user, kf_calib_batch *b, kf_error *err) {
    (void)err;
    progress(((ctxpass *)user)->o, "contexts", b->done * b->ctx, b->total * b->ctx);
    return KF_OK;
}

// The second, short pass: the top-activating tokens of every cluster.
static kf_status find_contexts(const kf_model *m, kf_ctx *ctx, const kf_tokenizer *tok, const int32_t *ids,
                               int64_t n_rec, const kf_moments *const *ffn, const clustering *act,
                               const clustering *wgt, cJSON **act_obj, cJSON **wgt_obj, const kf_analyze_opts *o,
                               kf_error *err) {
    const int L = m->n_layer;
    int max_F = 0, max_k = 1;
    for (int l = 0; l < L; l++) {
        if (m->layers[l].n_ff > max_F) max_F = m->layers[l].n_ff;
        if (act[l].k > max_k) max_k = act[l].k;
        if (wgt[l].k > max_k) max_k = wgt[l].k;
    }
    ctxpass cp = {0};
    cp.act = calloc((size_t)L, sizeof *cp.act);
    cp.wgt = calloc((size_t)L, sizeof *cp.wgt);
    cp.mu = calloc((size_t)L, sizeof *cp.mu);
    cp.isd = calloc((size_t)L, sizeof *cp.isd);
    cp.csum = malloc((size_t)max_k * sizeof *cp.csum);
    cp.z = malloc((size_t)max_F * sizeof *cp.z);
    kf_status st = KF_OK;
    if (!cp.act || !cp.wgt || !cp.mu || !cp.isd || !cp.csum || !cp.z) {
        st = kf_error_set(err, KF_ERR_NOMEM, "analyze: out of memory for the context pass");
        goto done;
    }
    for (int l = 0; l < L; l++) {
        int F = m->layers[l].n_ff;
        cp.mu[l] = malloc((size_t)F * sizeof **cp.mu);
        cp.isd[l] = malloc((size_t)F * sizeof **cp.isd);
        if (!cp.mu[l] || !cp.isd[l]) {
            st = kf_error_set(err, KF_ERR_NOMEM, "analyze: out of memory for the context pass");
            goto done;
        }
        mean_isd(ffn[l], cp.mu[l], cp.isd[l]);
        if ((st = topctx_init(&cp.act[l], &act[l], F, o->n_contexts, err)) != KF_OK ||
            (st = topctx_init(&cp.wgt[l], &wgt[l], F, o->n_contexts, err)) != KF_OK)
            goto done;
    }
    kf_calib_protocol p = rec_protocol(o);
    p.rank = 0, p.n_ranks = 1;
    p.max_tokens = o->context_tokens < n_rec ? o->context_tokens : n_rec;
    if (p.max_tokens < o->ctx) p.max_tokens = o->ctx;
    cp.o = o;
    progress(o, "contexts", 0, kf_calib_n_windows(&p, n_rec) * o->ctx);
    kf_ctx_set_hook(ctx, ctx_hook, &cp, 1u << KF_HOOK_FFN_ACT);
    st = kf_calib_run(ctx, m, ids, n_rec, &p, &(kf_calib_sink){.before = ctx_before, .after = ctx_after, .user = &cp},
                      err);
    kf_ctx_set_hook(ctx, NULL, NULL, 0);
    if (st == KF_OK)
        for (int l = 0; l < L; l++) {
            cJSON_AddItemToObject(act_obj[l], "contexts", contexts_json(&cp.act[l], tok, ids, n_rec, o->context_radius));
            cJSON_AddItemToObject(wgt_obj[l], "contexts", contexts_json(&cp.wgt[l], tok, ids, n_rec, o->context_radius));
        }
done:
    for (int l = 0; l < L && cp.act && cp.wgt && cp.mu && cp.isd; l++) {
        topctx_free(&cp.act[l]);
        topctx_free(&cp.wgt[l]);
        free(cp.mu[l]);
        free(cp.isd[l]);
    }
    free(cp.act);
    free(cp.wgt);
    free(cp.mu);
    free(cp.isd);
    free(cp.csum);
    free(cp.z);
    return st;
}

// Activation profiles (F, S): neuron j's sampled activations, standardised
// over the sample (a constant neuron gets a zero profile).
static void activation_profiles(const float *smp, int S, int F, float *X) {
    for (int j = 0; j < F; j++) {
        double s = 0, ss = 0;
        for (int t = 0; t < S; t++) s += smp[(size_t)t * F + j];
        double mu = s / S;
        for (int t = 0; t < S; t++) {
            double d = smp[(size_t)t * F + j] - mu;
            ss += d * d;
        }
        double isd = ss > 0 ? 1 / sqrt(ss / S) : 0;
        for (int t = 0; t < S; t++) X[(size_t)j * S + t] = (float)((smp[(size_t)t * F + j] - mu) * isd);
    }
}

// Weight vectors (F, D): row j of w_gate and w_up concatenated (w_up alone
// when not gated), scaled to unit length so clusters group directions.
static int weight_vectors(const kf_layer *ly, int C, float *X) {
    const int F = ly->n_ff, gated = kf_tensor_present(&ly->w_gate), D = gated ? 2 * C : C;
    for (int j = 0; j < F; j++) {
        float *x = X + (size_t)j * D;
        if (gated) memcpy(x, ly->w_gate.data + (size_t)j * C, (size_t)C * sizeof *x);
        memcpy(x + (gated ? C : 0), ly->w_up.data + (size_t)j * C, (size_t)C * sizeof *x);
        double nn = 0;
        for (int i = 0; i < D; i++) nn += (double)x[i] * x[i];
        float inv = nn > 0 ? (float)(1 / sqrt(nn)) : 0;
        for (int i = 0; i < D; i++) x[i] *= inv;
    }
    return D;
}

// Exact linear CKA of every pair of representations from the joint
// covariance cov (RC,RC): ||S_ab||_F^2 / (||S_aa||_F ||S_bb||_F).
static void cka_from_cov(const double *cov, int R, int C, double *cka) {
    const size_t RC = (size_t)R * C;
    for (int a = 0; a < R; a++)
        for (int b = a; b < R; b++) {
            double f = 0;
            for (int i = 0; i < C; i++) {
                const double *row = cov + ((size_t)a * C + i) * RC + (size_t)b * C;
                for (int j = 0; j < C; j++) f += row[j] * row[j];
            }
            cka[a * R + b] = cka[b * R + a] = f;
        }
    double *nrm = malloc((size_t)R * sizeof *nrm);
    if (!nrm) return;
    for (int a = 0; a < R; a++) nrm[a] = sqrt(cka[a * R + a]);
    for (int a = 0; a < R; a++)
        for (int b = 0; b < R; b++) {
            double d = nrm[a] * nrm[b];
            cka[a * R + b] = d > 0 ? cka[a * R + b] / d : NAN;
        }
    free(nrm);
}

kf_status kf_analyze_run(const kf_model *m, const kf_tokenizer *tok, const int32_t *ids, int64_t n_ids,
                         const kf_analyze_opts *o, kf_analysis *out, kf_error *err) {
    memset(out, 0, sizeof *out);
    kf_status st = check_opts(m, ids, n_ids, o, err);
    if (st != KF_OK) return st;
    const int L = m->n_layer, C = m->n_embd, R = L + 1;
    const int64_t n_use = o->n_tokens < n_ids ? o->n_tokens : n_ids, n_seq = n_use / o->ctx, n_rec = n_seq * o->ctx;
    kf_calib_protocol proto = rec_protocol(o);
    proto.max_tokens = kf_calib_n_rank_windows(&proto, n_ids) * o->ctx; // the tokens these statistics hold
    kf_statsfile_init(&out->stats, kf_model_fingerprint(m), &proto);
    out->n_layer = L;
    out->resid_dim = C;
    out->S = o->sample_tokens < n_rec ? o->sample_tokens : (int)n_rec;
    out->sample_pos = malloc((size_t)out->S * sizeof *out->sample_pos);
    out->ffn_sample = calloc((size_t)L, sizeof *out->ffn_sample);
    if (!out->sample_pos || !out->ffn_sample) return kf_error_set(err, KF_ERR_NOMEM, "analyze: out of memory");
    for (int l = 0; l < L; l++)
        if (!(out->ffn_sample[l] = calloc((size_t)out->S * m->layers[l].n_ff, sizeof(float))))
            return kf_error_set(err, KF_ERR_NOMEM, "analyze: out of memory for the activation sample");
    if (o->keep_resid_sample && !(out->resid_sample = calloc((size_t)R * out->S * C, sizeof(float))))
        return kf_error_set(err, KF_ERR_NOMEM, "analyze: out of memory for the residual sample");
    if ((st = choose_sample(n_rec, out->S, o->seed, out->sample_pos, err)) != KF_OK) return st;

    recorder rec;
    kf_ctx *ctx = NULL;
    clustering *act = calloc((size_t)L, sizeof *act), *wgt = calloc((size_t)L, sizeof *wgt);
    cJSON **act_obj = calloc((size_t)L, sizeof *act_obj), **wgt_obj = calloc((size_t)L, sizeof *wgt_obj);
    double *cka = malloc((size_t)R * R * sizeof *cka), *big = NULL, *corr = NULL;
    float *X = NULL;
    cJSON *root = NULL;
    kf_linkage z = {0};
    if ((st = recorder_init(&rec, m, o, out, err)) != KF_OK) goto done;
    if (!act || !wgt || !act_obj || !wgt_obj || !cka) {
        st = kf_error_set(err, KF_ERR_NOMEM, "analyze: out of memory");
        goto done;
    }
    if ((st = kf_ctx_init(&ctx, m, o->batch * o->ctx, 0, err)) != KF_OK) goto done;

    double t_rec = kf_time_now();
    if ((st = record(&rec, ctx, m, ids, n_ids, o, out->sample_pos, err)) != KF_OK) goto done;
#ifdef KF_HAVE_MPI
    int mpi_up = 0;
    MPI_Initialized(&mpi_up);
    if (o->n_ranks > 1 && mpi_up && (st = mpi_reduce(&rec, err)) != KF_OK) goto done;
    if (o->n_ranks > 1 && mpi_up) out->stats.protocol.max_tokens = n_rec;
#endif
    double rec_s = seconds_since(t_rec);
    if (o->rank != 0) goto done;

    double t_an = kf_time_now(), thr_s = 0, km_s = 0;
    root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "schema", "kfuse-analysis/1");
    {
        cJSON *mo = cJSON_AddObjectToObject(root, "model");
        char fp[24];
        snprintf(fp, sizeof fp, "%016llx", (unsigned long long)out->stats.fingerprint);
        cJSON_AddStringToObject(mo, "path", m->path);
        cJSON_AddStringToObject(mo, "arch", kf_arch_name(m->arch));
        cJSON_AddStringToObject(mo, "fingerprint", fp);
        cJSON_AddNumberToObject(mo, "n_layer", L);
        cJSON_AddNumberToObject(mo, "n_embd", C);
        cJSON_AddNumberToObject(mo, "n_params", (double)kf_model_n_params(m));
        cJSON *ff = cJSON_AddArrayToObject(mo, "n_ff");
        for (int l = 0; l < L; l++) cJSON_AddItemToArray(ff, cJSON_CreateNumber(m->layers[l].n_ff));
        cJSON *ca = cJSON_AddObjectToObject(root, "calibration");
        cJSON_AddNumberToObject(ca, "n_tokens_available", (double)n_ids);
        cJSON_AddNumberToObject(ca, "n_tokens", (double)n_rec);
        cJSON_AddNumberToObject(ca, "n_sequences", (double)n_seq);
        cJSON_AddNumberToObject(ca, "ctx", o->ctx);
        cJSON_AddNumberToObject(ca, "batch", o->batch);
        cJSON_AddNumberToObject(ca, "ranks", o->n_ranks);
        cJSON_AddNumberToObject(ca, "sample_tokens", out->S);
        cJSON_AddNumberToObject(ca, "seed", (double)o->seed);
        cJSON_AddNumberToObject(ca, "record_seconds", rec_s);
        cJSON_AddNumberToObject(ca, "tokens_per_s", rec_s > 0 ? (double)n_rec / rec_s : 0);
        cJSON *op = cJSON_AddObjectToObject(root, "options");
        cJSON_AddNumberToObject(op, "threshold", o->threshold);
        cJSON_AddNumberToObject(op, "k", o->k);
        cJSON_AddNumberToObject(op, "epsilon", o->epsilon);
        cJSON_AddNumberToObject(op, "coact_topk", rec.ffn[0]->topk);
        cJSON_AddNumberToObject(op, "context_tokens", (double)o->context_tokens);
        cJSON_AddNumberToObject(op, "resid_stride", o->resid_stride);
        cJSON_AddBoolToObject(op, "f64_products", o->f64_products != 0);
        cJSON_AddNumberToObject(op, "resid_tokens", rec.joint ? (double)rec.resid_all->n : (double)n_rec);
    }

    // Layer level: CKA and Block Influence.
    progress(o, "analysis: CKA", 0, 1);
    const size_t RC = (size_t)R * C;
    if (rec.joint) {
        if (!(big = malloc(RC * RC * sizeof *big))) {
            st = kf_error_set(err, KF_ERR_NOMEM, "analyze: out of memory for the residual covariance");
            goto done;
        }
        if ((st = kf_moments_cov(rec.resid_all, big, err)) != KF_OK) goto done;
        cka_from_cov(big, R, C, cka);
    } else if ((st = kf_cka_mb_value(&rec.cka, cka, err)) != KF_OK) {
        goto done;
    }
    {
        cJSON *ly = cJSON_AddObjectToObject(root, "layers");
        cJSON *lbl = cJSON_AddArrayToObject(ly, "labels");
        cJSON_AddItemToArray(lbl, cJSON_CreateString("emb"));
        for (int l = 0; l < L; l++) {
            char s[16];
            snprintf(s, sizeof s, "L%d", l);
            cJSON_AddItemToArray(lbl, cJSON_CreateString(s));
        }
        cJSON_AddStringToObject(ly, "cka_method", rec.joint ? "exact" : "minibatch");
        cJSON_AddItemToObject(ly, "cka", jmat(cka, R, R));
        double bi[1024];
        for (int l = 0; l < L && l < 1024; l++)
            if ((st = kf_bi_value(&rec.bi[l], &bi[l], err)) != KF_OK) goto done;
        cJSON_AddItemToObject(ly, "block_influence", jarr(bi, L < 1024 ? L : 1024));
    }

    // Neuron level: correlation clustering of the residual stream.
    cJSON *red = cJSON_AddObjectToObject(root, "redundancy");
    {
        double tg[N_T];
        for (int i = 0; i < N_T; i++) tg[i] = (i + 1) / 10.0;
        cJSON_AddItemToObject(red, "t", jarr(tg, N_T));
        double *rr = malloc((size_t)R * N_T * sizeof *rr), *rs = malloc((size_t)R * sizeof *rs), secs, ra[N_T];
        if (!rr || !rs || !(corr = malloc((size_t)C * C * sizeof *corr))) {
            free(rr), free(rs);
            st = kf_error_set(err, KF_ERR_NOMEM, "analyze: out of memory for residual clustering");
            goto done;
        }
        if (rec.joint && (st = kf_moments_corr(rec.resid_all, big, err)) != KF_OK) goto red_done;
        for (int rep = 0; rep < R; rep++) {
            progress(o, "analysis: residual clustering", rep, R + 1);
            if (rec.joint) {
                for (int i = 0; i < C; i++)
                    memcpy(corr + (size_t)i * C, big + ((size_t)rep * C + i) * RC + (size_t)rep * C, (size_t)C * sizeof *corr);
            } else if ((st = kf_moments_corr(rec.resid[rep], corr, err)) != KF_OK) {
                goto red_done;
            }
            if ((st = cluster_corr(corr, C, &z, rr + rep * N_T, &rs[rep], err)) != KF_OK) goto red_done;
            kf_linkage_free(&z);
        }
        cJSON_AddItemToObject(red, "resid", jmat(rr, R, N_T));
        cJSON_AddItemToObject(red, "resid_seconds", jarr(rs, R));
        if (rec.joint) {
            if ((st = cluster_corr(big, (int)RC, &z, ra, &secs, err)) != KF_OK) goto red_done;
            cJSON_AddItemToObject(red, "resid_all", jarr(ra, N_T));
            cJSON_AddNumberToObject(red, "resid_all_at_threshold", kf_linkage_redundancy(&z, o->threshold));
            cJSON_AddNumberToObject(red, "resid_all_n", (double)RC);
            cJSON_AddNumberToObject(red, "resid_all_seconds", secs);
            kf_linkage_free(&z);
        } else {
            cJSON_AddNullToObject(red, "resid_all");
        }
    red_done:
        free(rr);
        free(rs);
        free(corr);
        corr = NULL;
        free(big);
        big = NULL;
        if (st != KF_OK) goto done;
    }

    // FFN neurons: clustering, dynamic thresholds, concept clusters.
    {
        double *rf = malloc((size_t)L * N_T * sizeof *rf), *rft = malloc((size_t)L * sizeof *rft);
        double *fs = malloc((size_t)L * sizeof *fs), *et = malloc((size_t)L * N_T * sizeof *et);
        cJSON *thr = cJSON_AddObjectToObject(root, "thresholds");
        cJSON_AddNumberToObject(thr, "epsilon", o->epsilon);
        cJSON_AddNumberToObject(thr, "grid_step", 0.01);
        cJSON *thl = cJSON_AddArrayToObject(thr, "layers");
        cJSON *neu = cJSON_AddArrayToObject(root, "neurons");
        cJSON *clu = cJSON_AddObjectToObject(root, "clusters");
        cJSON *cll = cJSON_AddArrayToObject(clu, "layers");
        int max_F = 0;
        for (int l = 0; l < L; l++)
            if (m->layers[l].n_ff > max_F) max_F = m->layers[l].n_ff;
        size_t xd = (size_t)(out->S > 2 * C ? out->S : 2 * C);
        corr = malloc((size_t)max_F * max_F * sizeof *corr);
        X = malloc((size_t)max_F * xd * sizeof *X);
        if (!rf || !rft || !fs || !et || !corr || !X) {
            st = kf_error_set(err, KF_ERR_NOMEM, "analyze: out of memory for FFN analysis");
            goto ffn_done;
        }
        for (int l = 0; l < L; l++) {
            const int F = m->layers[l].n_ff;
            const kf_moments *mo = rec.ffn[l];
            progress(o, "analysis: FFN layers", l, L);
            if ((st = kf_moments_corr(mo, corr, err)) != KF_OK) goto ffn_done;
            if ((st = cluster_corr(corr, F, &z, rf + l * N_T, &fs[l], err)) != KF_OK) goto ffn_done;
            rft[l] = kf_linkage_redundancy(&z, o->threshold);
            double t_th = kf_time_now();
            st = dynamic_threshold(m, l, mo, &z, o, thl, et + l * N_T, err);
            thr_s += seconds_since(t_th);
            kf_linkage_free(&z);
            if (st != KF_OK) goto ffn_done;

            double fsum = 0, asum = 0;
            int dead = 0;
            for (int j = 0; j < F; j++) {
                fsum += (double)mo->n_pos[j] / (double)mo->n;
                asum += mo->sum_abs[j] / (double)mo->n;
                dead += mo->n_nz[j] == 0;
            }
            cJSON *ne = cJSON_CreateObject();
            cJSON_AddNumberToObject(ne, "layer", l);
            cJSON_AddNumberToObject(ne, "n_ff", F);
            cJSON_AddNumberToObject(ne, "act_freq_mean", fsum / F);
            cJSON_AddNumberToObject(ne, "mean_abs_act", asum / F);
            cJSON_AddNumberToObject(ne, "dead", dead);
            cJSON_AddItemToArray(neu, ne);

            cJSON *cl = cJSON_CreateObject();
            cJSON_AddNumberToObject(cl, "layer", l);
            act_obj[l] = cJSON_AddObjectToObject(cl, "activation");
            wgt_obj[l] = cJSON_AddObjectToObject(cl, "weight");
            cJSON_AddItemToArray(cll, cl);
            double t_km = kf_time_now();
            activation_profiles(out->ffn_sample[l], out->S, F, X);
            if ((st = concept_clusters(X, F, out->S, corr, o, &act[l], act_obj[l], err)) != KF_OK) goto ffn_done;
            int D = weight_vectors(&m->layers[l], C, X);
            if ((st = concept_clusters(X, F, D, corr, o, &wgt[l], wgt_obj[l], err)) != KF_OK) goto ffn_done;
            km_s += seconds_since(t_km);
        }
        cJSON_AddItemToObject(red, "ffn", jmat(rf, L, N_T));
        cJSON_AddItemToObject(red, "ffn_at_threshold", jarr(rft, L));
        cJSON_AddItemToObject(red, "ffn_seconds", jarr(fs, L));
        cJSON_AddItemToObject(thr, "err_at_t", jmat(et, L, N_T));
    ffn_done:
        free(rf);
        free(rft);
        free(fs);
        free(et);
        if (st != KF_OK) goto done;
    }
    double an_s = seconds_since(t_an);

    double t_ctx = kf_time_now();
    if ((st = find_contexts(m, ctx, tok, ids, n_rec, (const kf_moments *const *)rec.ffn, act, wgt, act_obj, wgt_obj, o,
                            err)) != KF_OK)
        goto done;
    {
        cJSON *tm = cJSON_AddObjectToObject(root, "timing");
        cJSON_AddNumberToObject(tm, "record_seconds", rec_s);
        cJSON_AddNumberToObject(tm, "analysis_seconds", an_s);
        cJSON_AddNumberToObject(tm, "thresholds_seconds", thr_s);
        cJSON_AddNumberToObject(tm, "kmeans_seconds", km_s);
        cJSON_AddNumberToObject(tm, "contexts_seconds", seconds_since(t_ctx));
    }
    out->json = root;
    root = NULL;
done:
    cJSON_Delete(root);
    kf_linkage_free(&z);
    for (int l = 0; l < L && act && wgt; l++) {
        free(act[l].labels);
        free(wgt[l].labels);
    }
    free(act);
    free(wgt);
    free(act_obj);
    free(wgt_obj);
    free(cka);
    free(big);
    free(corr);
    free(X);
    kf_ctx_free(ctx);
    recorder_free(&rec);
    return st;
}

void kf_analysis_free(kf_analysis *a) {
    cJSON_Delete(a->json);
    kf_statsfile_free(&a->stats);
    for (int l = 0; l < a->n_layer && a->ffn_sample; l++) free(a->ffn_sample[l]);
    free(a->ffn_sample);
    free(a->resid_sample);
    free(a->sample_pos);
    memset(a, 0, sizeof *a);
}

// ---------------------------------------------------------------- .npy

// NumPy format v1: magic, version 1.0, u16 header length, a dict padded
// with spaces and a newline so that the data starts at a multiple of 64.
static kf_status npy_write(const char *path, const char *descr, const void *data, size_t elem, int64_t rows,
                           int64_t cols, kf_error *err) {
    char dict[160], shape[64];
    if (cols >= 0) snprintf(shape, sizeof shape, "(%lld, %lld)", (long long)rows, (long long)cols);
    else snprintf(shape, sizeof shape, "(%lld,)", (long long)rows);
    int n = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }", descr, shape);
    int total = 10 + n + 1, pad = (64 - total % 64) % 64;
    FILE *f = fopen(path, "wb");
    if (!f) return kf_error_set(err, KF_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    unsigned hl = (unsigned)(n + pad + 1);
    unsigned char head[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(hl & 0xFF), (unsigned char)(hl >> 8)};
    size_t count = (size_t)rows * (size_t)(cols >= 0 ? cols : 1);
    int ok = fwrite(head, 1, 10, f) == 10 && fwrite(dict, 1, (size_t)n, f) == (size_t)n;
    for (int i = 0; ok && i < pad; i++) ok = fputc(' ', f) != EOF;
    ok = ok && fputc('\n', f) != EOF && fwrite(data, elem, count, f) == count;
    if (fclose(f) != 0) ok = 0;
    return ok ? KF_OK : kf_error_set(err, KF_ERR_IO, "%s: write failed", path);
}

kf_status kf_analysis_dump_npy(const kf_analysis *a, const char *dir, kf_error *err) {
    char path[1024], name[64];
    kf_status st;
    for (int l = 0; l < a->n_layer; l++) {
        snprintf(name, sizeof name, "ffn_act.%d.npy", l);
        if (!kf_path_join(path, sizeof path, dir, name))
            return kf_error_set(err, KF_ERR_ARG, "%s: path too long", dir);
        int64_t F = (int64_t)(a->stats.n > l ? a->stats.entries[l]->m.d : 0);
        if ((st = npy_write(path, "<f4", a->ffn_sample[l], sizeof(float), a->S, F, err)) != KF_OK) return st;
    }
    for (int r = 0; a->resid_sample && r <= a->n_layer; r++) {
        snprintf(name, sizeof name, "resid.%d.npy", r);
        if (!kf_path_join(path, sizeof path, dir, name))
            return kf_error_set(err, KF_ERR_ARG, "%s: path too long", dir);
        if ((st = npy_write(path, "<f4", a->resid_sample + (size_t)r * a->S * a->resid_dim, sizeof(float), a->S,
                            a->resid_dim, err)) != KF_OK)
            return st;
    }
    if (!kf_path_join(path, sizeof path, dir, "sample_pos.npy"))
        return kf_error_set(err, KF_ERR_ARG, "%s: path too long", dir);
    return npy_write(path, "<i8", a->sample_pos, sizeof(int64_t), a->S, -1, err);
}
