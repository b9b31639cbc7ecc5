// Dynamic per-layer thresholds: how far a layer's FFN neurons can be merged
// before its output moves by more than a relative error eps.
//
// Merging a cluster keeps one representative neuron r and predicts every
// other member j by least squares from the second moments:
//   â_j = beta_j a_r + c_j,  beta_j = cov_jr / cov_rr,  c_j = mu_j - beta_j mu_r
// so the error e = a - â is zero-mean with e = P (a - mu), where P = I - B and
// B holds beta_j at (j, r(j)) for non-representatives. With G = W_down^T W_down
// (F,F) and Sigma the (population) covariance of a:
//   E||W_down e||^2 = tr(G P Sigma P^T)
//   E||W_down a||^2 = tr(G (Sigma + mu mu^T))
// and the relative error is their ratio. Both need only the statistics, never
// the activations. Rows and columns of P Sigma P^T that belong to a
// representative are zero, so only non-representatives enter the sum.
// The representative of a cluster is the member that best
// predicts the others (largest sum of rho^2 to the other members; near-ties go
// to the lower index).
#ifndef KF_ANALYZE_THRESHOLD_H
#define KF_ANALYZE_THRESHOLD_H

#include <stdint.h>

#include "core/status.h"

typedef struct {
    int F;          // neurons
    double *G;      // (F,F) W_down^T W_down
    double *cov;    // (F,F) population covariance of the activations
    double *sd;     // (F) standard deviations
    double denom;   // E||W_down a||^2
    double *beta;   // (F) scratch: coefficient of each neuron on its representative
    int *rep;       // (F) scratch: representative of each neuron
    int *moved;     // (F) scratch: the non-representative neurons
    int *order;     // (F) scratch: neurons grouped by cluster
    int *start;     // (F+1) scratch: first position of each cluster in order
} kf_thresh_layer;

// w_down (C,F) row-major; cov (F,F) population covariance, malloc'd: t takes
// it over (kf_thresh_free frees it, also after a failure), so a layer of F
// neurons holds one F^2 covariance, not two; mean (F).
kf_status kf_thresh_init(kf_thresh_layer *t, const float *w_down, int C, int F, double *cov, const double *mean,
                         kf_error *err);
void kf_thresh_free(kf_thresh_layer *t);

// Relative output error of merging each cluster of labels (F, values in
// [0, n_clusters)) into its representative. reps (n_clusters) receives the
// representative of each cluster when non-NULL.
kf_status kf_thresh_error(kf_thresh_layer *t, const int32_t *labels, int n_clusters, double *rel_err, int *reps,
                          kf_error *err);

#endif
