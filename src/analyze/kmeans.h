// k-means (Lloyd) on the rows of X (n,d), with k-means++ initialisation,
// restarts, a balanced (equal-size) variant for MoEfication-style expert
// construction, and the silhouette score.
//
// Distances for the assignment step are ||x||^2 - 2 x.c + ||c||^2 with x.c
// from one cblas_sgemm over all rows; ties go to the lower cluster index.
// Centres are means accumulated in double; the objective is recomputed in
// double from the differences, not from the expansion.
//
// Lloyd iteration: assign; stop if no label changed; else move each centre to
// the mean of its points. An empty cluster takes the point farthest from its
// own centre among clusters with more than one point (one point per empty
// cluster, farthest first). After max_iter updates without convergence one
// last assignment is made, so labels always belong to the returned centres.
//
// Balanced assignment: with n = q k + r, r clusters get q+1 points and the
// rest q. All (point, cluster) pairs are visited by increasing distance (ties
// by point, then cluster) and a pair is taken when the point is free and the
// cluster still has room. This greedy is not the optimal balanced assignment,
// but it is deterministic and O(nk log nk).
#ifndef KF_ANALYZE_KMEANS_H
#define KF_ANALYZE_KMEANS_H

#include <stdint.h>

#include "core/status.h"

#define KF_KMEANS_BLOCK 256 // rows per block of the silhouette distances

typedef struct {
    int max_iter;  // centre updates at most (e.g. 100)
    int n_init;    // k-means++ restarts; the best objective is kept
    uint64_t seed; // restart r uses a generator seeded from (seed, r)
    int balanced;  // equal-size clusters
} kf_kmeans_opts;

// Lloyd from the given centres (k,d), updated in place; labels (n) in 0..k-1.
// Needs 1 <= k <= n. *objective = sum of squared distances to the assigned
// centres; *iters = centre updates made (may be NULL).
kf_status kf_kmeans_lloyd(const float *X, int n, int d, int k, float *centres, int32_t *labels, int max_iter,
                          int balanced, double *objective, int *iters, kf_error *err);

// k-means++ seeding (D^2 sampling, one candidate per step): centres (k,d).
kf_status kf_kmeans_pp(const float *X, int n, int d, int k, uint64_t seed, float *centres, kf_error *err);

// n_init restarts of k-means++ then Lloyd; keeps the lowest objective.
kf_status kf_kmeans_fit(const float *X, int n, int d, int k, const kf_kmeans_opts *opts, float *centres,
                        int32_t *labels, double *objective, kf_error *err);

// Mean silhouette (Euclidean) of the labelling (labels in 0..k-1, at least
// two non-empty clusters). sample <= 0 or >= n: exact over all n points,
// O(n^2 d). Otherwise over `sample` distinct points drawn with the seed, each
// scored against all n points, O(sample n d). A point alone in its cluster
// scores 0 (as scikit-learn). values (n), may be NULL: per-point scores,
// NaN for points not sampled.
kf_status kf_silhouette(const float *X, int n, int d, const int32_t *labels, int k, int sample, uint64_t seed,
                        double *score, double *values, kf_error *err);

#endif
