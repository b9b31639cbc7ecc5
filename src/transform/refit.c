#include "transform/refit.h"

#include <cblas.h>
#include <lapacke.h>
#include <stdlib.h>
#include <string.h>

kf_status kf_refit_acc_init(kf_refit_acc *a, int k, int F, kf_error *err) {
    memset(a, 0, sizeof *a);
    if (k < 1 || F < 1) return kf_error_set(err, KF_ERR_ARG, "refit: bad sizes k=%d F=%d", k, F);
    a->k = k;
    a->F = F;
    a->G = calloc((size_t)k * k, sizeof *a->G);
    a->X = calloc((size_t)k * F, sizeof *a->X);
    a->bk = malloc(sizeof *a->bk * KF_REFIT_BLOCK * (size_t)k);
    a->ba = malloc(sizeof *a->ba * KF_REFIT_BLOCK * (size_t)F);
    if (!a->G || !a->X || !a->bk || !a->ba) {
        kf_refit_acc_free(a);
        return kf_error_set(err, KF_ERR_NOMEM, "refit: out of memory for k=%d F=%d", k, F);
    }
    return KF_OK;
}

void kf_refit_acc_free(kf_refit_acc *a) {
    free(a->G);
    free(a->X);
    free(a->bk);
    free(a->ba);
    memset(a, 0, sizeof *a);
}

void kf_refit_acc_add(kf_refit_acc *a, const float *A_kept, const float *A, int n) {
    const int k = a->k, F = a->F;
    for (int r0 = 0; r0 < n; r0 += KF_REFIT_BLOCK) {
        int nb = n - r0 < KF_REFIT_BLOCK ? n - r0 : KF_REFIT_BLOCK;
        for (int64_t i = 0; i < (int64_t)nb * k; i++) a->bk[i] = A_kept[(int64_t)r0 * k + i];
        for (int64_t i = 0; i < (int64_t)nb * F; i++) a->ba[i] = A[(int64_t)r0 * F + i];
        // G += bk^T bk (k,k); X += bk^T ba (k,F)
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, k, nb, 1.0, a->bk, k, 1.0, a->G, k);
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, k, F, nb, 1.0, a->bk, k, a->ba, F, 1.0, a->X, F);
    }
    a->n += n;
}

kf_status kf_refit_solve(const double *G, const double *X, int k, int F, const float *w_down, int C, double lambda_rel,
                         const float *w_prior, float *w_new, kf_error *err) {
    if (k < 1 || F < 1 || C < 1 || !(lambda_rel >= 0))
        return kf_error_set(err, KF_ERR_ARG, "refit: bad sizes or lambda (k=%d F=%d C=%d)", k, F, C);
    double *H = malloc(sizeof *H * (size_t)k * k), *Wd = malloc(sizeof *Wd * (size_t)C * F);
    double *R = malloc(sizeof *R * (size_t)k * C);
    kf_status s = KF_OK;
    if (!H || !Wd || !R) {
        s = kf_error_set(err, KF_ERR_NOMEM, "refit: out of memory for k=%d F=%d C=%d", k, F, C);
        goto done;
    }
    double tr = 0;
    for (int i = 0; i < k; i++) tr += G[(size_t)i * k + i];
    double lambda = lambda_rel * (tr > 0 ? tr / k : 1.0);
    for (int i = 0; i < k; i++) {
        for (int j = 0; j < i; j++) H[(size_t)i * k + j] = 0;
        for (int j = i; j < k; j++) H[(size_t)i * k + j] = G[(size_t)i * k + j];
        H[(size_t)i * k + i] += lambda;
    }
    for (int64_t i = 0; i < (int64_t)C * F; i++) Wd[i] = w_down[i];
    // R = X W^T (k,C): the right-hand sides of (G + lambda I) W'^T = X W^T
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, k, C, F, 1.0, X, F, Wd, F, 0.0, R, C);
    if (w_prior) // centred ridge: + lambda W0^T
        for (int i = 0; i < k; i++)
            for (int c = 0; c < C; c++) R[(size_t)i * C + c] += lambda * w_prior[(size_t)c * k + i];
    lapack_int info = LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'U', k, H, k);
    if (info != 0) {
        s = kf_error_set(err, KF_ERR_INTERNAL,
                         "refit: Gram matrix plus ridge is not positive definite (dpotrf info %d); raise lambda",
                         (int)info);
        goto done;
    }
    info = LAPACKE_dpotrs(LAPACK_ROW_MAJOR, 'U', k, C, H, k, R, C);
    if (info != 0) {
        s = kf_error_set(err, KF_ERR_INTERNAL, "refit: dpotrs failed (info %d)", (int)info);
        goto done;
    }
    for (int c = 0; c < C; c++)
        for (int i = 0; i < k; i++) w_new[(size_t)c * k + i] = (float)R[(size_t)i * C + c];
done:
    free(H);
    free(Wd);
    free(R);
    return s;
}

kf_status kf_refit_second_moment(const kf_moments *mo, double *M, kf_error *err) {
    const int d = mo->d;
    if (mo->n < 1) return kf_error_set(err, KF_ERR_ARG, "refit: statistics hold no rows");
    // sum a a^T = Sxx + s u^T + u s^T + n s s^T with u = sum (a - s)
    const double *s = mo->shift, *u = mo->sum;
    double n = (double)mo->n;
    for (int i = 0; i < d; i++)
        for (int j = i; j < d; j++) {
            double v = mo->sxx[kf_packed_index(d, i, j)] + s[i] * u[j] + u[i] * s[j] + n * s[i] * s[j];
            M[(size_t)i * d + j] = v;
            M[(size_t)j * d + i] = v;
        }
    return KF_OK;
}

void kf_refit_gather(const double *M, int F, const int *idx, int k, double *G, double *X) {
    for (int a = 0; a < k; a++) {
        const double *row = M + (size_t)idx[a] * F;
        for (int b = 0; b < k; b++) G[(size_t)a * k + b] = row[idx[b]];
        memcpy(X + (size_t)a * F, row, sizeof *X * (size_t)F);
    }
}
