// Layer similarity (exact linear CKA from the joint covariance) and the
// redundant share of a correlation clustering at the headline thresholds.
#include <math.h>
#include <stdlib.h>

#include "analyze/steps.h"
#include "core/progress.h"

// ||S_ab||_F^2 / (||S_aa||_F ||S_bb||_F) for every pair (a, b).
kf_status kf_analyze_cka_exact(const double *cov, int R, int C, double *cka, kf_error *err) {
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
    if (!nrm) return kf_error_set(err, KF_ERR_NOMEM, "analyze: out of memory for CKA");
    for (int a = 0; a < R; a++) nrm[a] = sqrt(cka[a * R + a]);
    for (int a = 0; a < R; a++)
        for (int b = 0; b < R; b++) {
            double d = nrm[a] * nrm[b];
            cka[a * R + b] = d > 0 ? cka[a * R + b] / d : NAN;
        }
    free(nrm);
    return KF_OK;
}

kf_status kf_analyze_redundancy(const double *corr, int n, kf_linkage *z, double *red, double *secs, kf_error *err) {
    double t0 = kf_time_now();
    kf_status st = kf_corrclust_run(corr, n, z, err);
    *secs = kf_time_now() - t0;
    if (st != KF_OK) return st;
    for (int i = 0; i < KF_ANALYSIS_N_T; i++) red[i] = kf_linkage_redundancy(z, (i + 1) / 10.0);
    return KF_OK;
}
