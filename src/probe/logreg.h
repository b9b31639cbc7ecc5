// Multinomial logistic regression with an elastic-net penalty: the linear
// probe of Dalvi et al. (2019, 2020) and NeuroX. It minimises
//
//   F(W, b) = (1/N) sum_i s_i (logsumexp(z_i) - z_i[y_i]) + l1 |W|_1 + l2 |W|_2^2,
//   z_i = W x_i + b,  W (K, D), b (K) (the bias is not penalised),
//
// with s_i = 1, or s_i = N / (K' n_{y_i}) for balanced class weights (K' the
// classes present in training, n_c their counts: scikit-learn's
// class_weight='balanced'). In scikit-learn's terms this is
// LogisticRegression(penalty='elasticnet', l1_ratio = l1/(l1+2 l2),
// C = 1/(N (l1+2 l2))) divided by N C.
//
// Solver: OWL-QN (Andrew & Gao 2007), L-BFGS on the smooth part with the
// pseudo-gradient of the L1 term, directions kept in the orthant of the
// current point and a backtracking line search that projects each trial
// point onto that orthant (so weights reach exact zeros). It starts at zero
// and uses every row each step: the result is a function of the data alone.
// Classes absent from the training rows get zero weights and a bias of
// -1e30, so they are never predicted.
#ifndef KF_PROBE_LOGREG_H
#define KF_PROBE_LOGREG_H

#include <stdbool.h>
#include <stdint.h>

#include "core/status.h"

typedef struct {
    double l1, l2;   // Dalvi's lambda_1 = lambda_2 = 1e-5
    bool balanced;   // class weights N / (K' n_c)
    int max_iter;    // OWL-QN iterations (default 500)
    double tol;      // stop when the mean decrease of F over the last 5 iterations < tol |F| (default 1e-7)
    int history;     // L-BFGS pairs (default 10)
} kf_logreg_opts;

kf_logreg_opts kf_logreg_defaults(void);

typedef struct {
    int n_classes, dim;
    float *w;          // (K, D)
    float *b;          // (K)
    double objective;  // F at the solution
    int iters;
    bool converged;    // the tolerance was met (else max_iter, or no descent left)
} kf_logreg;

// X (N, D) row-major, y (N) in [0, K).
kf_status kf_logreg_train(kf_logreg *out, const float *X, const int32_t *y, int64_t N, int D, int K,
                          const kf_logreg_opts *o, kf_error *err);
void kf_logreg_free(kf_logreg *m);

// F(W, b) of a model on data, with the options' penalty and class weights.
double kf_logreg_objective(const kf_logreg *m, const float *X, const int32_t *y, int64_t N, const kf_logreg_opts *o);

// pred (N) = argmax_k z_i[k]. Returns KF_ERR_NOMEM only.
kf_status kf_logreg_predict(const kf_logreg *m, const float *X, int64_t N, int32_t *pred, kf_error *err);

// The smooth part f = F - l1 |W|_1 at parameters theta = (W (K,D), b (K)) in
// double, and its gradient g (K*D + K); exposed for the gradient test.
// z (N, K) is workspace; sw (N) the sample weights.
double kf_logreg_smooth(const double *theta, const float *X, const int32_t *y, const float *sw, int64_t N, int D,
                        int K, double l2, float *z, float *wf, double *g);

#endif
