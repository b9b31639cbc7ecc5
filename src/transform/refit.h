// Least-squares refit of a FFN down projection after its neurons were merged
// or pruned. With A (n,F) the original layer's activations and A_kept (n,k)
// the activations of the new layer's neurons on the same inputs, the new down
// projection (C,k) is
//   W' = argmin ||A W^T - A_kept W'^T||^2 + lambda ||W'||^2
//      = W X^T (G + lambda I)^-1,   G = A_kept^T A_kept (k,k), X = A_kept^T A (k,F)
// G and X are accumulated in double over streamed row blocks; the system is
// solved with a Cholesky factorisation (LAPACKE dpotrf/dpotrs).
// lambda = lambda_rel * mean(diag G): scale-free ridge, which also keeps G+λI
// positive definite when neurons are dead or duplicated.
// With fewer calibration tokens than kept neurons (n <= k) G has rank <= n and
// a ridge towards zero would shrink every direction the sample does not see.
// There the ridge is centred on the merged/pruned down projection W0 instead:
//   W' = argmin ||A W^T - A_kept W'^T||^2 + lambda ||W' - W0||^2
//      = (W X^T + lambda W0) (G + lambda I)^-1,
// so W' = W0 on directions the sample does not reach and is fitted on the rest.
#ifndef KF_TRANSFORM_REFIT_H
#define KF_TRANSFORM_REFIT_H

#include <stdint.h>

#include "core/status.h"
#include "stats/moments.h"

#define KF_REFIT_BLOCK 128     // rows converted to double per dsyrk/dgemm
#define KF_REFIT_LAMBDA 1e-3   // default lambda_rel

typedef struct {
    int k, F;
    int64_t n;       // rows seen
    double *G;       // (k,k) upper triangle of A_kept^T A_kept
    double *X;       // (k,F) A_kept^T A
    double *bk, *ba; // (KF_REFIT_BLOCK,k), (KF_REFIT_BLOCK,F) scratch
} kf_refit_acc;

kf_status kf_refit_acc_init(kf_refit_acc *a, int k, int F, kf_error *err);
void kf_refit_acc_free(kf_refit_acc *a);
// A_kept (n,k), A (n,F): row r of both is the same token.
void kf_refit_acc_add(kf_refit_acc *a, const float *A_kept, const float *A, int n);

// W' (C,k) from G (k,k; only the upper triangle is read), X (k,F) and the
// original w_down (C,F); w_prior (C,k) is W0 of the centred ridge, or NULL for
// a ridge towards zero (it may alias w_new). Fails when G + lambda I is not
// positive definite.
kf_status kf_refit_solve(const double *G, const double *X, int k, int F, const float *w_down, int C, double lambda_rel,
                         const float *w_prior, float *w_new, kf_error *err);

// Whether a layer keeping k neurons refitted on n tokens uses the centred ridge.
static inline int kf_refit_centred(int64_t n, int k) { return n <= k; }

// The uncentred second moment sum a a^T (F,F, full) of an accumulator.
kf_status kf_refit_second_moment(const kf_moments *mo, double *M, kf_error *err);
// When the new neurons are a subset idx (k) of the old ones (A_kept = A[:, idx]),
// G and X are sub-blocks of M: G = M[idx, idx] (k,k), X = M[idx, :] (k,F).
void kf_refit_gather(const double *M, int F, const int *idx, int k, double *G, double *X);

#endif
