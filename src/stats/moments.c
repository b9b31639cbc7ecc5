#include "stats/moments.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static size_t moments_n_packed(size_t d) { return d * (d + 1) / 2; }

static int moments_panel_rows(int d) { return d < KF_MOMENTS_PANEL ? d : KF_MOMENTS_PANEL; }

int64_t kf_moments_bytes(int d, int topk, int f32) {
    const int64_t ud = d, np = (int64_t)moments_n_packed((size_t)d), P = moments_panel_rows(d);
    int64_t b = 8 * np + ud * (8 * 3 + 8 * 2 + 4 * 2) + 8 * (KF_MOMENTS_BLOCK + P) * ud;
    if (topk > 0) b += 4 * np + 4 * (int64_t)KF_MOMENTS_BLOCK * topk;
    if (f32) b += 4 * (KF_MOMENTS_BLOCK + P) * ud;
    return b;
}

kf_status kf_moments_init(kf_moments *m, int d, int topk, float eps, kf_error *err) {
    memset(m, 0, sizeof *m);
    if (d <= 0 || d > (1 << 20)) return kf_error_set(err, KF_ERR_ARG, "moments: bad dimension %d", d);
    if (topk < 0 || topk > d) return kf_error_set(err, KF_ERR_ARG, "moments: top-k %d not in [0, %d]", topk, d);
    if (!(eps >= 0)) return kf_error_set(err, KF_ERR_ARG, "moments: eps must be >= 0");
    m->d = d;
    m->topk = topk;
    m->eps = eps;
    size_t ud = (size_t)d, np = moments_n_packed(ud);
    m->shift = calloc(ud, sizeof *m->shift);
    m->sum = calloc(ud, sizeof *m->sum);
    m->sxx = calloc(np, sizeof *m->sxx);
    m->n_pos = calloc(ud, sizeof *m->n_pos);
    m->n_nz = calloc(ud, sizeof *m->n_nz);
    m->sum_abs = calloc(ud, sizeof *m->sum_abs);
    m->max = malloc(ud * sizeof *m->max);
    m->min = malloc(ud * sizeof *m->min);
    m->block = malloc(ud * KF_MOMENTS_BLOCK * sizeof *m->block);
    m->panel = malloc(ud * (size_t)moments_panel_rows(d) * sizeof *m->panel);
    if (topk > 0) {
        m->coact = calloc(np, sizeof *m->coact);
        m->top = malloc((size_t)KF_MOMENTS_BLOCK * topk * sizeof *m->top);
    }
    if (!m->shift || !m->sum || !m->sxx || !m->n_pos || !m->n_nz || !m->sum_abs || !m->max || !m->min ||
        !m->block || !m->panel || (topk > 0 && (!m->coact || !m->top))) {
        kf_moments_free(m);
        return kf_error_set(err, KF_ERR_NOMEM, "moments: out of memory for d = %d", d);
    }
    kf_moments_reset(m);
    return KF_OK;
}

kf_status kf_moments_set_f32(kf_moments *m, kf_error *err) {
    if (m->blockf) return KF_OK;
    size_t ud = (size_t)m->d;
    m->blockf = malloc(ud * KF_MOMENTS_BLOCK * sizeof *m->blockf);
    m->panelf = malloc(ud * (size_t)moments_panel_rows(m->d) * sizeof *m->panelf);
    if (!m->blockf || !m->panelf) {
        free(m->blockf);
        free(m->panelf);
        m->blockf = m->panelf = NULL;
        return kf_error_set(err, KF_ERR_NOMEM, "moments: out of memory for the float products of d = %d", m->d);
    }
    return KF_OK;
}

void kf_moments_free(kf_moments *m) {
    free(m->shift);
    free(m->sum);
    free(m->sxx);
    free(m->n_pos);
    free(m->n_nz);
    free(m->sum_abs);
    free(m->max);
    free(m->min);
    free(m->coact);
    free(m->block);
    free(m->panel);
    free(m->blockf);
    free(m->panelf);
    free(m->top);
    memset(m, 0, sizeof *m);
}

void kf_moments_reset(kf_moments *m) {
    size_t ud = (size_t)m->d;
    m->n = 0;
    m->has_shift = 0;
    memset(m->shift, 0, ud * sizeof *m->shift);
    memset(m->sum, 0, ud * sizeof *m->sum);
    memset(m->sxx, 0, moments_n_packed(ud) * sizeof *m->sxx);
    memset(m->n_pos, 0, ud * sizeof *m->n_pos);
    memset(m->n_nz, 0, ud * sizeof *m->n_nz);
    memset(m->sum_abs, 0, ud * sizeof *m->sum_abs);
    for (size_t j = 0; j < ud; j++) {
        m->max[j] = -INFINITY;
        m->min[j] = INFINITY;
    }
    if (m->coact) memset(m->coact, 0, moments_n_packed(ud) * sizeof *m->coact);
}

// The top-k dimensions of one row x (d) by value, ties going to the lower
// index, written to top (k) in ascending index order.
static void moments_row_topk(const float *x, int d, int k, int *top) {
    int cnt = 0;
    for (int j = 0; j < d; j++) {
        if (cnt == k && !(x[j] > x[top[k - 1]])) continue;
        int p = cnt < k ? cnt++ : k - 1; // slot freed at the end
        while (p > 0 && x[j] > x[top[p - 1]]) {
            top[p] = top[p - 1];
            p--;
        }
        top[p] = j;
    }
    for (int a = 1; a < cnt; a++) { // indices ascending, so pairs are (i <= j)
        int v = top[a], b = a;
        while (b > 0 && top[b - 1] > v) {
            top[b] = top[b - 1];
            b--;
        }
        top[b] = v;
    }
}

// One block X (nb, d), nb <= KF_MOMENTS_BLOCK: shifted copy into m->block and
// the per-dimension counters. Columns are split across threads (each column's
// sums still run over the rows in order, so the result does not depend on
// the thread count); the rows' top-k sets are found in parallel and counted
// serially; both in one parallel region.
static void moments_add_block(kf_moments *m, const float *X, int nb) {
    const int d = m->d, k = m->topk;
    const float eps = m->eps;
    const double *restrict shift = m->shift;
    double *restrict sum = m->sum, *restrict sum_abs = m->sum_abs, *restrict blk = m->block;
    float *restrict blkf = m->blockf; // the shifted rows go here instead in f32 mode
    int64_t *restrict n_pos = m->n_pos, *restrict n_nz = m->n_nz;
    float *restrict mx = m->max, *restrict mn = m->min;
    const int64_t work = (int64_t)nb * d;
#pragma omp parallel if (work >= 32768)
    {
#pragma omp for schedule(static) nowait
        for (int j0 = 0; j0 < d; j0 += 64) {
            const int j1 = j0 + 64 < d ? j0 + 64 : d;
            for (int r = 0; r < nb; r++) {
                const float *restrict x = X + (size_t)r * d;
                if (blkf) {
                    float *restrict yf = blkf + (size_t)r * d;
                    for (int j = j0; j < j1; j++) yf[j] = (float)((double)x[j] - shift[j]);
                } else {
                    double *restrict y = blk + (size_t)r * d;
                    for (int j = j0; j < j1; j++) y[j] = (double)x[j] - shift[j];
                }
                // three loops of one element type each, so that each vectorises
                for (int j = j0; j < j1; j++) {
                    sum[j] += (double)x[j] - shift[j];
                    sum_abs[j] += fabsf(x[j]);
                }
                for (int j = j0; j < j1; j++) {
                    n_pos[j] += x[j] > 0;
                    n_nz[j] += fabsf(x[j]) > eps;
                }
                for (int j = j0; j < j1; j++) {
                    mx[j] = x[j] > mx[j] ? x[j] : mx[j];
                    mn[j] = x[j] < mn[j] ? x[j] : mn[j];
                }
            }
        }
        if (k > 0) {
#pragma omp for schedule(static)
            for (int r = 0; r < nb; r++) moments_row_topk(X + (size_t)r * d, d, k, m->top + (size_t)r * k);
        }
    }
    if (k == 0) return;
    for (int r = 0; r < nb; r++) {
        const int *top = m->top + (size_t)r * k;
        for (int a = 0; a < k; a++)
            for (int b = a; b < k; b++) m->coact[kf_packed_index(d, top[a], top[b])]++;
    }
}

// sxx += block^T block (block (nb, d)), KF_MOMENTS_PANEL rows of sxx at a
// time: the panel's rows [i0, i1) over columns [i0, d) by one gemm into the
// scratch (its part below the diagonal is computed and dropped), then added
// into the packed rows. In f32 mode the products are float (sgemm), the sum
// into sxx double.
static void moments_add_products(kf_moments *m, int nb) {
    const int d = m->d, P = moments_panel_rows(d);
    for (int i0 = 0; i0 < d; i0 += P) {
        const int p = d - i0 < P ? d - i0 : P, w = d - i0;
        if (m->blockf)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, p, w, nb, 1.0f, m->blockf + i0, d, m->blockf + i0, d,
                        0.0f, m->panelf, w);
        else
            cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, p, w, nb, 1.0, m->block + i0, d, m->block + i0, d,
                        0.0, m->panel, w);
        double *restrict sxx = m->sxx;
        const double *restrict pd = m->panel;
        const float *restrict pf = m->panelf;
#pragma omp parallel for schedule(static) if ((int64_t)p * w >= 65536)
        for (int r = 0; r < p; r++) {
            double *restrict row = sxx + kf_packed_index(d, i0 + r, i0 + r); // columns i0+r .. d-1
            const size_t off = (size_t)r * w + r;
            if (pf)
                for (int j = 0; j < w - r; j++) row[j] += pf[off + j];
            else
                for (int j = 0; j < w - r; j++) row[j] += pd[off + j];
        }
    }
}

kf_status kf_moments_add(kf_moments *m, const float *X, int n_rows, kf_error *err) {
    if (n_rows < 0) return kf_error_set(err, KF_ERR_ARG, "moments: negative row count %d", n_rows);
    if (n_rows == 0) return KF_OK;
    if (m->topk > 0 && m->n + n_rows > (int64_t)UINT32_MAX)
        return kf_error_set(err, KF_ERR_ARG, "moments: more than 2^32-1 rows overflow the co-activation counts");
    const int d = m->d;
    if (!m->has_shift) { // shift = mean of the first block
        int nb = n_rows < KF_MOMENTS_BLOCK ? n_rows : KF_MOMENTS_BLOCK;
        for (int r = 0; r < nb; r++)
            for (int j = 0; j < d; j++) m->shift[j] += X[(size_t)r * d + j];
        for (int j = 0; j < d; j++) m->shift[j] /= nb;
        m->has_shift = 1;
    }
    for (int r0 = 0; r0 < n_rows; r0 += KF_MOMENTS_BLOCK) {
        int nb = n_rows - r0 < KF_MOMENTS_BLOCK ? n_rows - r0 : KF_MOMENTS_BLOCK;
        moments_add_block(m, X + (size_t)r0 * d, nb);
        moments_add_products(m, nb);
    }
    m->n += n_rows;
    return KF_OK;
}

kf_status kf_moments_merge(kf_moments *dst, const kf_moments *src, kf_error *err) {
    if (dst->d != src->d || dst->topk != src->topk || dst->eps != src->eps)
        return kf_error_set(err, KF_ERR_ARG, "moments: merge of d=%d/topk=%d/eps=%g into d=%d/topk=%d/eps=%g", src->d,
                            src->topk, (double)src->eps, dst->d, dst->topk, (double)dst->eps);
    if (src->n == 0) return KF_OK;
    if (dst->topk > 0 && dst->n + src->n > (int64_t)UINT32_MAX)
        return kf_error_set(err, KF_ERR_ARG, "moments: merge overflows the co-activation counts");
    const int d = dst->d;
    if (!dst->has_shift) {
        memcpy(dst->shift, src->shift, (size_t)d * sizeof *dst->shift);
        dst->has_shift = 1;
    }
    // Re-centre src on dst's shift: x - s1 = (x - s2) + delta, delta = s2 - s1.
    double n2 = (double)src->n;
    double *delta = dst->block; // scratch (d)
    for (int j = 0; j < d; j++) delta[j] = src->shift[j] - dst->shift[j];
    for (int i = 0; i < d; i++) {
        const double *ms = src->sxx + kf_packed_index(d, i, i) - i; // ms[j], j >= i: element (i, j)
        double *md = dst->sxx + kf_packed_index(d, i, i) - i;
        double si = src->sum[i], di = delta[i];
        for (int j = i; j < d; j++) md[j] += ms[j] + si * delta[j] + di * src->sum[j] + n2 * di * delta[j];
    }
    for (int j = 0; j < d; j++) {
        dst->sum[j] += src->sum[j] + n2 * delta[j];
        dst->n_pos[j] += src->n_pos[j];
        dst->n_nz[j] += src->n_nz[j];
        dst->sum_abs[j] += src->sum_abs[j];
        if (src->max[j] > dst->max[j]) dst->max[j] = src->max[j];
        if (src->min[j] < dst->min[j]) dst->min[j] = src->min[j];
    }
    if (dst->topk > 0) {
        size_t np = moments_n_packed((size_t)d);
        for (size_t p = 0; p < np; p++) dst->coact[p] += src->coact[p];
    }
    dst->n += src->n;
    return KF_OK;
}

kf_status kf_moments_mean(const kf_moments *m, double *mean, kf_error *err) {
    if (m->n < 1) return kf_error_set(err, KF_ERR_ARG, "moments: mean of zero rows");
    for (int j = 0; j < m->d; j++) mean[j] = m->shift[j] + m->sum[j] / (double)m->n;
    return KF_OK;
}

kf_status kf_moments_cov(const kf_moments *m, double *cov, kf_error *err) {
    if (m->n < 2) return kf_error_set(err, KF_ERR_ARG, "moments: covariance needs at least 2 rows, have %lld",
                                      (long long)m->n);
    const int d = m->d;
    double n = (double)m->n;
    for (int i = 0; i < d; i++) {
        const double *row = m->sxx + kf_packed_index(d, i, i) - i; // row[j], j >= i: element (i, j)
        for (int j = i; j < d; j++) {
            double c = (row[j] - m->sum[i] * m->sum[j] / n) / (n - 1);
            cov[(size_t)i * d + j] = c;
            cov[(size_t)j * d + i] = c;
        }
    }
    return KF_OK;
}

kf_status kf_moments_corr(const kf_moments *m, double *corr, kf_error *err) {
    kf_status st = kf_moments_cov(m, corr, err);
    if (st != KF_OK) return st;
    // Standard deviations go on the diagonal first, the 1s last.
    const int d = m->d;
    for (int j = 0; j < d; j++) {
        double v = corr[(size_t)j * d + j];
        corr[(size_t)j * d + j] = v > 0 ? sqrt(v) : 0;
    }
    for (int i = 0; i < d; i++)
        for (int j = 0; j < d; j++) {
            if (i == j) continue;
            double si = corr[(size_t)i * d + i], sj = corr[(size_t)j * d + j];
            double *c = &corr[(size_t)i * d + j];
            *c = si == 0 || sj == 0 ? 0 : fmax(-1.0, fmin(1.0, *c / (si * sj)));
        }
    for (int j = 0; j < d; j++) corr[(size_t)j * d + j] = 1;
    return KF_OK;
}

uint32_t kf_moments_coact(const kf_moments *m, int i, int j) {
    if (i > j) {
        int t = i;
        i = j;
        j = t;
    }
    return m->coact[kf_packed_index(m->d, i, j)];
}
