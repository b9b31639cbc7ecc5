#include "analyze/cka.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

// ||S||_F^2 of a symmetric (d,d) matrix stored in its upper triangle (stride ld).
static double sym_frob2(const double *S, int d, int ld) {
    double diag = 0, off = 0;
    for (int i = 0; i < d; i++) {
        const double *r = S + (size_t)i * ld;
        diag += r[i] * r[i];
        for (int j = i + 1; j < d; j++) off += r[j] * r[j];
    }
    return diag + 2 * off;
}

// <A,B>_F of two symmetric (d,d) matrices stored in their upper triangles.
static double sym_dot(const double *A, const double *B, int d) {
    double diag = 0, off = 0;
    for (int i = 0; i < d; i++) {
        const double *a = A + (size_t)i * d, *b = B + (size_t)i * d;
        diag += a[i] * b[i];
        for (int j = i + 1; j < d; j++) off += a[j] * b[j];
    }
    return diag + 2 * off;
}

// Xc (n,d) = X - column mean, in double.
static void center_cols(const float *X, int n, int d, double *Xc) {
    for (int j = 0; j < d; j++) Xc[j] = 0;
    double *mean = Xc; // row 0 holds the running sums until the end
    for (int i = 0; i < n; i++)
        for (int j = 0; j < d; j++) mean[j] += X[(size_t)i * d + j];
    for (int j = 0; j < d; j++) mean[j] /= n;
    for (int i = n - 1; i >= 0; i--) // row 0 last: it still holds the mean
        for (int j = 0; j < d; j++) Xc[(size_t)i * d + j] = X[(size_t)i * d + j] - mean[j];
}

kf_status kf_cka_linear(const float *X, const float *Y, int n, int dx, int dy, double *cka, kf_error *err) {
    if (n < 2 || dx < 1 || dy < 1) return kf_error_set(err, KF_ERR_ARG, "cka: bad shapes n=%d dx=%d dy=%d", n, dx, dy);
    double fx = dx, fy = dy, fn = n;
    int feature = fx * fy + 0.5 * (fx * fx + fy * fy) <= 0.5 * fn * (fx + fy) + fn;
    size_t nx = (size_t)n * dx, ny = (size_t)n * dy;
    size_t nm = feature ? (size_t)dx * dy + (size_t)dx * dx + (size_t)dy * dy : 2 * (size_t)n * n;
    double *Xc = malloc((nx + ny + nm) * sizeof *Xc);
    if (!Xc) return kf_error_set(err, KF_ERR_NOMEM, "cka: out of memory (n=%d dx=%d dy=%d)", n, dx, dy);
    double *Yc = Xc + nx, *M = Yc + ny;
    center_cols(X, n, dx, Xc);
    center_cols(Y, n, dy, Yc);
    double num, nxx, nyy;
    if (feature) {
        double *Sxy = M, *Sxx = Sxy + (size_t)dx * dy, *Syy = Sxx + (size_t)dx * dx;
        // Sxy (dx,dy) = Xc^T Yc; Sxx (dx,dx) = Xc^T Xc; Syy (dy,dy) = Yc^T Yc
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, dx, dy, n, 1.0, Xc, dx, Yc, dy, 0.0, Sxy, dy);
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, dx, n, 1.0, Xc, dx, 0.0, Sxx, dx);
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, dy, n, 1.0, Yc, dy, 0.0, Syy, dy);
        num = 0;
        for (size_t i = 0; i < (size_t)dx * dy; i++) num += Sxy[i] * Sxy[i];
        nxx = sym_frob2(Sxx, dx, dx);
        nyy = sym_frob2(Syy, dy, dy);
    } else {
        // Kx = Xc Xc^T, Ky = Yc Yc^T (n,n) are already double-centred, and
        // ||Xc^T Yc||^2 = <Kx,Ky>, ||Xc^T Xc||^2 = ||Kx||^2.
        double *Kx = M, *Ky = M + (size_t)n * n;
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, n, dx, 1.0, Xc, dx, 0.0, Kx, n);
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, n, dy, 1.0, Yc, dy, 0.0, Ky, n);
        num = sym_dot(Kx, Ky, n);
        nxx = sym_frob2(Kx, n, n);
        nyy = sym_frob2(Ky, n, n);
    }
    free(Xc);
    if (!(nxx > 0) || !(nyy > 0)) return kf_error_set(err, KF_ERR_ARG, "cka: a representation is constant over the rows");
    *cka = num / (sqrt(nxx) * sqrt(nyy));
    return KF_OK;
}

kf_status kf_cka_acc_init(kf_cka_acc *a, int dx, int dy, kf_error *err) {
    memset(a, 0, sizeof *a);
    if (dx < 1 || dy < 1 || dx > (1 << 16) || dy > (1 << 16))
        return kf_error_set(err, KF_ERR_ARG, "cka: bad widths %d, %d", dx, dy);
    a->dx = dx;
    a->dy = dy;
    size_t x = dx, y = dy;
    a->shx = calloc(x, sizeof(double));
    a->shy = calloc(y, sizeof(double));
    a->ux = calloc(x, sizeof(double));
    a->uy = calloc(y, sizeof(double));
    a->sxx = calloc(x * x, sizeof(double));
    a->syy = calloc(y * y, sizeof(double));
    a->sxy = calloc(x * y, sizeof(double));
    a->bx = malloc(KF_CKA_BLOCK * x * sizeof(double));
    a->by = malloc(KF_CKA_BLOCK * y * sizeof(double));
    if (!a->shx || !a->shy || !a->ux || !a->uy || !a->sxx || !a->syy || !a->sxy || !a->bx || !a->by) {
        kf_cka_acc_free(a);
        return kf_error_set(err, KF_ERR_NOMEM, "cka: out of memory for widths %d, %d", dx, dy);
    }
    return KF_OK;
}

void kf_cka_acc_free(kf_cka_acc *a) {
    free(a->shx);
    free(a->shy);
    free(a->ux);
    free(a->uy);
    free(a->sxx);
    free(a->syy);
    free(a->sxy);
    free(a->bx);
    free(a->by);
    memset(a, 0, sizeof *a);
}

// b (nb,d) = X (nb,d) - shift; u += column sums of b.
static void shift_block(const float *X, int nb, int d, const double *shift, double *b, double *u) {
    for (int r = 0; r < nb; r++)
        for (int j = 0; j < d; j++) {
            double v = (double)X[(size_t)r * d + j] - shift[j];
            b[(size_t)r * d + j] = v;
            u[j] += v;
        }
}

static void first_block_mean(const float *X, int nb, int d, double *mean) {
    for (int r = 0; r < nb; r++)
        for (int j = 0; j < d; j++) mean[j] += X[(size_t)r * d + j];
    for (int j = 0; j < d; j++) mean[j] /= nb;
}

void kf_cka_acc_add(kf_cka_acc *a, const float *X, const float *Y, int n) {
    if (n <= 0) return;
    const int dx = a->dx, dy = a->dy;
    if (!a->has_shift) {
        int nb = n < KF_CKA_BLOCK ? n : KF_CKA_BLOCK;
        first_block_mean(X, nb, dx, a->shx);
        first_block_mean(Y, nb, dy, a->shy);
        a->has_shift = 1;
    }
    for (int r0 = 0; r0 < n; r0 += KF_CKA_BLOCK) {
        int nb = n - r0 < KF_CKA_BLOCK ? n - r0 : KF_CKA_BLOCK;
        shift_block(X + (size_t)r0 * dx, nb, dx, a->shx, a->bx, a->ux);
        shift_block(Y + (size_t)r0 * dy, nb, dy, a->shy, a->by, a->uy);
        // sxx += bx^T bx, syy += by^T by, sxy (dx,dy) += bx^T (dx,nb) by (nb,dy)
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, dx, nb, 1.0, a->bx, dx, 1.0, a->sxx, dx);
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, dy, nb, 1.0, a->by, dy, 1.0, a->syy, dy);
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, dx, dy, nb, 1.0, a->bx, dx, a->by, dy, 1.0, a->sxy, dy);
    }
    a->n += n;
}

// dst (rows,cols) += src re-centred from shifts s_src to s_dst:
// sum (x-s_dst)(y-s_dst)^T = M + ua db^T + da ub^T + n2 da db^T with
// da = sa_src - sa_dst, db likewise, ua/ub the src sums. Upper triangle only
// when upper is set.
static void recentre_add(double *dst, const double *src, int rows, int cols, int upper, const double *ua,
                         const double *ub, const double *da, const double *db, double n2) {
    for (int i = 0; i < rows; i++)
        for (int j = upper ? i : 0; j < cols; j++)
            dst[(size_t)i * cols + j] += src[(size_t)i * cols + j] + ua[i] * db[j] + da[i] * ub[j] + n2 * da[i] * db[j];
}

kf_status kf_cka_acc_merge(kf_cka_acc *dst, const kf_cka_acc *src, kf_error *err) {
    if (dst->dx != src->dx || dst->dy != src->dy)
        return kf_error_set(err, KF_ERR_ARG, "cka: merge of widths (%d,%d) into (%d,%d)", src->dx, src->dy, dst->dx,
                            dst->dy);
    if (src->n == 0) return KF_OK;
    const int dx = dst->dx, dy = dst->dy;
    if (!dst->has_shift) {
        memcpy(dst->shx, src->shx, (size_t)dx * sizeof(double));
        memcpy(dst->shy, src->shy, (size_t)dy * sizeof(double));
        dst->has_shift = 1;
    }
    double *da = dst->bx, *db = dst->by, n2 = (double)src->n; // scratch (dx), (dy)
    for (int j = 0; j < dx; j++) da[j] = src->shx[j] - dst->shx[j];
    for (int j = 0; j < dy; j++) db[j] = src->shy[j] - dst->shy[j];
    recentre_add(dst->sxx, src->sxx, dx, dx, 1, src->ux, src->ux, da, da, n2);
    recentre_add(dst->syy, src->syy, dy, dy, 1, src->uy, src->uy, db, db, n2);
    recentre_add(dst->sxy, src->sxy, dx, dy, 0, src->ux, src->uy, da, db, n2);
    for (int j = 0; j < dx; j++) dst->ux[j] += src->ux[j] + n2 * da[j];
    for (int j = 0; j < dy; j++) dst->uy[j] += src->uy[j] + n2 * db[j];
    dst->n += src->n;
    return KF_OK;
}

kf_status kf_cka_acc_value(const kf_cka_acc *a, double *cka, kf_error *err) {
    if (a->n < 2) return kf_error_set(err, KF_ERR_ARG, "cka: needs at least 2 rows, have %lld", (long long)a->n);
    const int dx = a->dx, dy = a->dy;
    double n = (double)a->n, num = 0, nxx = 0, nyy = 0;
    // Centred products: C = S - u u'^T / n.
    for (int i = 0; i < dx; i++)
        for (int j = 0; j < dy; j++) {
            double c = a->sxy[(size_t)i * dy + j] - a->ux[i] * a->uy[j] / n;
            num += c * c;
        }
    for (int i = 0; i < dx; i++)
        for (int j = i; j < dx; j++) {
            double c = a->sxx[(size_t)i * dx + j] - a->ux[i] * a->ux[j] / n;
            nxx += (i == j ? 1 : 2) * c * c;
        }
    for (int i = 0; i < dy; i++)
        for (int j = i; j < dy; j++) {
            double c = a->syy[(size_t)i * dy + j] - a->uy[i] * a->uy[j] / n;
            nyy += (i == j ? 1 : 2) * c * c;
        }
    if (!(nxx > 0) || !(nyy > 0)) return kf_error_set(err, KF_ERR_ARG, "cka: a representation is constant over the rows");
    *cka = num / (sqrt(nxx) * sqrt(nyy));
    return KF_OK;
}

kf_status kf_cka_mb_init(kf_cka_mb *a, int L, int B, kf_error *err) {
    memset(a, 0, sizeof *a);
    if (L < 1 || L > 4096 || B < 4 || B > 65536) return kf_error_set(err, KF_ERR_ARG, "cka: bad L=%d or B=%d", L, B);
    a->L = L;
    a->B = B;
    size_t l = L, b = B;
    a->have = calloc(l, 1);
    a->K = malloc(l * b * b * sizeof(double));
    a->rs = malloc(l * b * sizeof(double));
    a->hsic = calloc(l * l, sizeof(double));
    a->xb = malloc(b * KF_CKA_MB_COLS * sizeof(double));
    a->colmean = malloc(KF_CKA_MB_COLS * sizeof(double));
    if (!a->have || !a->K || !a->rs || !a->hsic || !a->xb || !a->colmean) {
        kf_cka_mb_free(a);
        return kf_error_set(err, KF_ERR_NOMEM, "cka: out of memory for L=%d, B=%d", L, B);
    }
    return KF_OK;
}

void kf_cka_mb_free(kf_cka_mb *a) {
    free(a->have);
    free(a->K);
    free(a->rs);
    free(a->hsic);
    free(a->xb);
    free(a->colmean);
    memset(a, 0, sizeof *a);
}

kf_status kf_cka_mb_layer(kf_cka_mb *a, int l, const float *X, int n, int d, kf_error *err) {
    if (l < 0 || l >= a->L) return kf_error_set(err, KF_ERR_ARG, "cka: layer %d not in [0, %d)", l, a->L);
    if (n < 4 || n > a->B || d < 1) return kf_error_set(err, KF_ERR_ARG, "cka: bad batch n=%d (needs 4..%d), d=%d", n, a->B, d);
    if (a->n_cur != 0 && n != a->n_cur)
        return kf_error_set(err, KF_ERR_ARG, "cka: layer %d has %d rows, the batch has %d", l, n, a->n_cur);
    if (a->have[l]) return kf_error_set(err, KF_ERR_ARG, "cka: layer %d set twice in one batch", l);
    // K (n,n) = Xc Xc^T, built from chunks of columns converted to double and
    // centred on the batch mean (HSIC_1 is invariant to the centring).
    double *K = a->K + (size_t)l * a->B * a->B;
    for (int c0 = 0; c0 < d; c0 += KF_CKA_MB_COLS) {
        int w = d - c0 < KF_CKA_MB_COLS ? d - c0 : KF_CKA_MB_COLS;
        for (int j = 0; j < w; j++) a->colmean[j] = 0;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < w; j++) a->colmean[j] += X[(size_t)i * d + c0 + j];
        for (int j = 0; j < w; j++) a->colmean[j] /= n;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < w; j++) a->xb[(size_t)i * w + j] = X[(size_t)i * d + c0 + j] - a->colmean[j];
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, n, w, 1.0, a->xb, w, c0 == 0 ? 0.0 : 1.0, K, n);
    }
    double *rs = a->rs + (size_t)l * a->B;
    for (int i = 0; i < n; i++) {
        K[(size_t)i * n + i] = 0;
        for (int j = i + 1; j < n; j++) K[(size_t)j * n + i] = K[(size_t)i * n + j];
    }
    for (int i = 0; i < n; i++) {
        double s = 0;
        for (int j = 0; j < n; j++) s += K[(size_t)i * n + j];
        rs[i] = s;
    }
    a->have[l] = 1;
    a->n_cur = n;
    return KF_OK;
}

kf_status kf_cka_mb_commit(kf_cka_mb *a, kf_error *err) {
    for (int l = 0; l < a->L; l++)
        if (!a->have[l]) return kf_error_set(err, KF_ERR_ARG, "cka: layer %d missing from the batch", l);
    const int n = a->n_cur, L = a->L;
    const size_t nn = (size_t)n * n;
    double dn = n;
    // HSIC_1(K,M) = [tr(KM) + (1'K1)(1'M1)/((n-1)(n-2)) - 2/(n-2) 1'KM1] / (n(n-3)), diag(K) = diag(M) = 0
    for (int l = 0; l < L; l++) {
        const double *Kl = a->K + (size_t)l * a->B * a->B, *rl = a->rs + (size_t)l * a->B;
        double sl = 0;
        for (int i = 0; i < n; i++) sl += rl[i];
        for (int m = l; m < L; m++) {
            const double *Km = a->K + (size_t)m * a->B * a->B, *rm = a->rs + (size_t)m * a->B;
            double tr = 0, sm = 0, rr = 0;
            for (size_t p = 0; p < nn; p++) tr += Kl[p] * Km[p];
            for (int i = 0; i < n; i++) {
                sm += rm[i];
                rr += rl[i] * rm[i];
            }
            double h = (tr + sl * sm / ((dn - 1) * (dn - 2)) - 2 / (dn - 2) * rr) / (dn * (dn - 3));
            a->hsic[(size_t)l * L + m] += h;
            if (m != l) a->hsic[(size_t)m * L + l] += h;
        }
    }
    memset(a->have, 0, (size_t)L);
    a->n_cur = 0;
    a->n_batches++;
    return KF_OK;
}

kf_status kf_cka_mb_merge(kf_cka_mb *dst, const kf_cka_mb *src, kf_error *err) {
    if (dst->L != src->L) return kf_error_set(err, KF_ERR_ARG, "cka: merge of %d layers into %d", src->L, dst->L);
    for (size_t p = 0; p < (size_t)dst->L * dst->L; p++) dst->hsic[p] += src->hsic[p];
    dst->n_batches += src->n_batches;
    return KF_OK;
}

kf_status kf_cka_mb_value(const kf_cka_mb *a, double *cka, kf_error *err) {
    if (a->n_batches < 1) return kf_error_set(err, KF_ERR_ARG, "cka: no committed batch");
    const int L = a->L;
    for (int l = 0; l < L; l++)
        for (int m = 0; m < L; m++) {
            double hl = a->hsic[(size_t)l * L + l], hm = a->hsic[(size_t)m * L + m];
            cka[(size_t)l * L + m] = hl > 0 && hm > 0 ? a->hsic[(size_t)l * L + m] / sqrt(hl * hm) : NAN;
        }
    return KF_OK;
}

void kf_bi_add(kf_bi_acc *a, const float *in, const float *out, int n, int C) {
    for (int t = 0; t < n; t++) {
        const float *x = in + (size_t)t * C, *y = out + (size_t)t * C;
        double xy = 0, xx = 0, yy = 0;
        for (int j = 0; j < C; j++) {
            xy += (double)x[j] * y[j];
            xx += (double)x[j] * x[j];
            yy += (double)y[j] * y[j];
        }
        a->sum_cos += xx > 0 && yy > 0 ? xy / (sqrt(xx) * sqrt(yy)) : 0;
    }
    if (n > 0) a->n += n;
}

void kf_bi_merge(kf_bi_acc *dst, const kf_bi_acc *src) {
    dst->sum_cos += src->sum_cos;
    dst->n += src->n;
}

kf_status kf_bi_value(const kf_bi_acc *a, double *bi, kf_error *err) {
    if (a->n < 1) return kf_error_set(err, KF_ERR_ARG, "block influence: no tokens");
    *bi = 1 - a->sum_cos / (double)a->n;
    return KF_OK;
}
