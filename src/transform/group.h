// Fold groups: which of a layer's FFN neurons merge into which kept one.
// The strategies (kf_group_kind) are run by kf_compress_run for
// --method fold (transform/group.c); the correlation clustering below is
// also used on its own.
#ifndef KF_TRANSFORM_GROUP_H
#define KF_TRANSFORM_GROUP_H

#include <stdint.h>

#include "core/status.h"

typedef enum {
    KF_GROUP_CORR = 0,      // average linkage on 1 - |rho|
    KF_GROUP_KMEANS_ACT,    // k-means on each neuron's correlation profile (row of the correlation matrix)
    KF_GROUP_KMEANS_WEIGHT, // k-means on [gate row, up row]
    KF_GROUP_CORR_ENERGY,   // average linkage on (1 - rho^2) min(e_i, e_j) / max e, e_j = E[a_j^2] ||w_down[:,j]||^2
    KF_GROUP_LS,            // representatives by greedy least-squares selection (kf_ffn_select_ls), each other
                            // neuron joins the representative it is most correlated with
} kf_group_kind;

// Groups (labels F in [0,k)) -> representatives reps (k): the member with the
// largest sum of rho^2 to its group, as the analyze thresholds do.
void kf_ffn_representatives(const double *corr, int F, const int32_t *labels, int k, int *reps);
// Average-linkage clustering on 1 - |rho| cut to exactly k groups (the first
// F-k merges); *t_cut = distance of the last merge applied (0 when k == F).
kf_status kf_ffn_group_corr_k(const double *corr, int F, int k, int32_t *labels, double *t_cut, kf_error *err);
// The same clustering cut at distance t (scipy fcluster 'distance'); *k = groups.
kf_status kf_ffn_group_corr_t(const double *corr, int F, double t, int32_t *labels, int *k, kf_error *err);

#endif
