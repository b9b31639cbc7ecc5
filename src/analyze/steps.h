// The analyses of kf_analyze_run (pipeline.c), one item at a time so that
// the driver reports progress between them; internal to analyze/.
#ifndef KF_ANALYZE_STEPS_H
#define KF_ANALYZE_STEPS_H

#include "analyze/analysis.h"
#include "analyze/corrclust.h"
#include "analyze/pipeline.h"
#include "stats/moments.h"

// Exact linear CKA of every pair of the R representations of C dims from
// their joint covariance cov (RC, RC) into cka (R, R).
kf_status kf_analyze_cka_exact(const double *cov, int R, int C, double *cka, kf_error *err);

// Average-linkage tree z of corr (n, n), timed into secs; the redundant share
// at the headline thresholds into red (KF_ANALYSIS_N_T).
kf_status kf_analyze_redundancy(const double *corr, int n, kf_linkage *z, double *red, double *secs, kf_error *err);

// Everything about the FFN neurons of layer l: correlation clustering,
// dynamic threshold, activation statistics, k-means on activation profiles
// (from sample (S, n_ff)) and on weight vectors. corr (max n_ff^2) and X
// (max n_ff * max(S, 2C)) are scratch, W (C * max n_ff) too when the
// weights are kept in a dtype other than F32 (else may be NULL); adds the seconds spent on the
// threshold and on k-means to *thr_s and *km_s.
kf_status kf_analyze_ffn_layer(const kf_model *m, int l, const kf_moments *mo, const float *sample, int S,
                               const kf_analyze_opts *o, double *corr, float *X, float *W, kf_analysis_layer *out,
                               double *thr_s, double *km_s, kf_error *err);

#endif
