#include "analyze/threshold.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

kf_status kf_thresh_init(kf_thresh_layer *t, const float *w_down, int C, int F, double *cov, const double *mean,
                         kf_error *err) {
    memset(t, 0, sizeof *t);
    t->cov = cov;
    if (C < 1 || F < 1) {
        kf_thresh_free(t);
        return kf_error_set(err, KF_ERR_ARG, "threshold: bad shape (%d, %d)", C, F);
    }
    size_t uF = (size_t)F;
    t->F = F;
    t->G = malloc(uF * uF * sizeof *t->G);
    t->sd = malloc(uF * sizeof *t->sd);
    t->beta = malloc(uF * sizeof *t->beta);
    t->rep = malloc(uF * sizeof *t->rep);
    t->moved = malloc(uF * sizeof *t->moved);
    t->order = malloc(uF * sizeof *t->order);
    t->start = malloc((uF + 1) * sizeof *t->start);
    float *Gf = malloc(uF * uF * sizeof *Gf);
    if (!t->G || !t->cov || !t->sd || !t->beta || !t->rep || !t->moved || !t->order || !t->start || !Gf) {
        free(Gf);
        kf_thresh_free(t);
        return kf_error_set(err, KF_ERR_NOMEM, "threshold: out of memory for %d neurons", F);
    }
    // G (F,F) = W^T W with W (C,F): upper triangle by ssyrk, mirrored.
    cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, F, C, 1.0f, w_down, F, 0.0f, Gf, F);
    for (size_t i = 0; i < uF; i++)
        for (size_t j = i; j < uF; j++) t->G[i * uF + j] = t->G[j * uF + i] = Gf[i * uF + j];
    free(Gf);
    // denom = tr(G Sigma) + mu^T G mu
    double d = 0;
    for (size_t i = 0; i < uF; i++) {
        t->sd[i] = sqrt(cov[i * uF + i] > 0 ? cov[i * uF + i] : 0);
        double gm = 0;
        for (size_t j = 0; j < uF; j++) {
            d += t->G[i * uF + j] * cov[i * uF + j];
            gm += t->G[i * uF + j] * mean[j];
        }
        d += mean[i] * gm;
    }
    t->denom = d;
    return KF_OK;
}

void kf_thresh_free(kf_thresh_layer *t) {
    free(t->G);
    free(t->cov);
    free(t->sd);
    free(t->beta);
    free(t->rep);
    free(t->moved);
    free(t->order);
    free(t->start);
    memset(t, 0, sizeof *t);
}

kf_status kf_thresh_error(kf_thresh_layer *t, const int32_t *labels, int n_clusters, double *rel_err, int *reps,
                          kf_error *err) {
    const int F = t->F;
    const size_t uF = (size_t)F;
    if (n_clusters < 1 || n_clusters > F)
        return kf_error_set(err, KF_ERR_ARG, "threshold: %d clusters for %d neurons", n_clusters, F);
    // Group neurons by cluster (counting sort).
    memset(t->start, 0, (uF + 1) * sizeof *t->start);
    for (int j = 0; j < F; j++) {
        if (labels[j] < 0 || labels[j] >= n_clusters)
            return kf_error_set(err, KF_ERR_ARG, "threshold: label %d of neuron %d not in [0, %d)", labels[j], j,
                                n_clusters);
        t->start[labels[j] + 1]++;
    }
    for (int c = 0; c < n_clusters; c++) t->start[c + 1] += t->start[c];
    for (int j = 0; j < F; j++) t->order[t->start[labels[j]]++] = j;
    for (int c = n_clusters; c > 0; c--) t->start[c] = t->start[c - 1];
    t->start[0] = 0;

    // Representative: the member with the largest sum of rho^2 to the others
    // (members are in increasing index order within a cluster).
    for (int c = 0; c < n_clusters; c++) {
        int a = t->start[c], b = t->start[c + 1], best = -1;
        double best_s = -1;
        for (int p = a; p < b; p++) {
            int i = t->order[p];
            double s = 0;
            for (int q = a; q < b; q++) {
                int j = t->order[q];
                if (j == i) continue;
                double den = t->sd[i] * t->sd[j];
                if (den > 0) {
                    double rho = t->cov[(size_t)i * uF + j] / den;
                    s += rho * rho;
                }
            }
            if (s > best_s * (1 + 1e-9) + 1e-12) { // near-ties go to the lower index, whatever the rounding
                best_s = s;
                best = i;
            }
        }
        if (reps) reps[c] = best;
        for (int p = a; p < b; p++) {
            int j = t->order[p];
            double vr = t->cov[(size_t)best * uF + best];
            t->rep[j] = best;
            t->beta[j] = j == best ? 1.0 : vr > 0 ? t->cov[(size_t)j * uF + best] / vr : 0.0;
        }
    }

    // Sigma_e(i,j) = S_ij - b_j S_{i,rj} - b_i S_{ri,j} + b_i b_j S_{ri,rj}; num = sum G_ij Sigma_e(i,j).
    // A representative has r = itself and b = 1, which makes its row and
    // column of Sigma_e zero: the sum runs over the moved neurons only.
    int nm = 0;
    for (int j = 0; j < F; j++)
        if (t->rep[j] != j) t->moved[nm++] = j;
    double num = 0;
#pragma omp parallel for reduction(+ : num) schedule(dynamic, 16)
    for (int p = 0; p < nm; p++) {
        const int i = t->moved[p];
        const double *Si = t->cov + (size_t)i * uF, *Sri = t->cov + (size_t)t->rep[i] * uF, *Gi = t->G + (size_t)i * uF;
        double bi = t->beta[i], acc = 0;
        for (int q = 0; q < nm; q++) {
            int j = t->moved[q], rj = t->rep[j];
            double bj = t->beta[j];
            acc += Gi[j] * (Si[j] - bj * Si[rj] - bi * Sri[j] + bi * bj * Sri[rj]);
        }
        num += acc;
    }
    if (num < 0) num = 0;
    *rel_err = t->denom > 0 ? num / t->denom : 0;
    return KF_OK;
}
