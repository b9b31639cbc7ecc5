// Correlation clustering of neurons (Dalvi et al. 2020): agglomerative
// clustering with average linkage (UPGMA) on the distance 1 - |Pearson rho|,
// cut at a distance threshold t. Neurons that fall into one cluster are
// redundant with each other.
//
// Algorithm: nearest-neighbour chain on a condensed float distance matrix
// with Lance-Williams updates d(k, i+j) = (n_i d(k,i) + n_j d(k,j))/(n_i+n_j).
// Average linkage is reducible, so the chain finds the same merges as the
// greedy closest-pair algorithm. Time O(n^2) (O(n) chain steps in all, each an
// O(n) row scan, plus an O(n) update per merge); memory n(n-1)/2 floats
// (242 MB for n = 11008) plus O(n). The merge list is then sorted by distance
// and relabelled as scipy.cluster.hierarchy.linkage does, and ties follow
// scipy's rule (the chain keeps its previous element on a tie).
#ifndef KF_ANALYZE_CORRCLUST_H
#define KF_ANALYZE_CORRCLUST_H

#include <stdint.h>

#include "core/status.h"

// Merge tree in scipy's Z layout: merge k joins clusters a[k] < b[k], where
// an id below n is a leaf and id n+m is the cluster formed by merge m.
typedef struct {
    int n;          // leaves
    int32_t *a, *b; // (n-1)
    float *dist;    // (n-1) linkage distance, non-decreasing
    int32_t *size;  // (n-1) leaves in the cluster formed
} kf_linkage;

// Index of pair (i < j) in a condensed distance vector of n points (as scipy's pdist).
static inline int64_t kf_condensed_index(int64_t n, int64_t i, int64_t j) {
    return n * i - i * (i + 1) / 2 + (j - i - 1);
}

// dist (n(n-1)/2) condensed distances; it is overwritten (used as workspace).
// 2 <= n <= 65536.
kf_status kf_linkage_average(float *dist, int n, kf_linkage *z, kf_error *err);
void kf_linkage_free(kf_linkage *z);

// Flat clusters at threshold t (scipy fcluster criterion 'distance': merges
// with distance <= t are applied). labels (n) get 0..k-1 in order of first
// appearance; *n_clusters = k.
kf_status kf_linkage_cut(const kf_linkage *z, double t, int32_t *labels, int *n_clusters, kf_error *err);
// Redundancy share at t: (n - clusters)/n, the fraction of neurons another
// neuron of their cluster stands for.
double kf_linkage_redundancy(const kf_linkage *z, double t);

// dist (n(n-1)/2) = 1 - |corr_ij| for i < j, corr (n,n).
void kf_corrclust_dist(const double *corr, int n, float *dist);
// Condensed 1 - |rho| from corr (n,n), then average linkage.
kf_status kf_corrclust_run(const double *corr, int n, kf_linkage *z, kf_error *err);

#endif
