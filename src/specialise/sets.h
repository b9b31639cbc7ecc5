// Sets of neurons and what their overlap means (kfuse specialise): the top
// neurons by a score, intersection over union and containment, the overlap
// random sets of the same sizes would show (permutation null), and how
// concentrated a set is in the experts of a MoEfied layer.
#ifndef KF_SPECIALISE_SETS_H
#define KF_SPECIALISE_SETS_H

#include <stdint.h>

#include "core/rng.h"

// idx (k) = indices of the k largest of v (n), largest first, ties to the
// lower index. scratch (n) is the caller's.
typedef struct {
    double v;
    int32_t i;
} kf_spec_ranked;
void kf_spec_top_k(const double *v, int n, int k, int32_t *idx, kf_spec_ranked *scratch);

// Sizes of the intersection of two sets of indices below n (each without
// repeats); mark (n) is scratch, left zero.
int kf_spec_intersect(const int32_t *a, int ka, const int32_t *b, int kb, uint8_t *mark);
// |A ∩ B| / |A ∪ B| given the sizes (0 when both are empty).
double kf_spec_iou(int inter, int ka, int kb);

// What the intersection of a random ka-set and a random kb-set of n neurons
// would be (draws Monte Carlo pairs): mean and 95th percentile of the IoU,
// and p = (1 + draws with IoU >= observed) / (1 + draws).
typedef struct {
    double mean, q95, p;
} kf_spec_null;
kf_spec_null kf_spec_overlap_null(int n, int ka, int kb, double observed, int draws, kf_rng *r);

// k distinct indices below n, uniformly (partial Fisher-Yates on perm (n),
// which holds a permutation of 0..n-1 before and after).
void kf_spec_random_set(int n, int k, int32_t *perm, int32_t *out, kf_rng *r);

// Concentration of a set of t neurons over E experts (expert_of maps a
// neuron to its expert): share of the set inside its k most-populated
// experts, and the normalised entropy of its distribution over experts
// (0: all in one expert, 1: spread evenly). counts (E) is scratch.
void kf_spec_concentration(const int32_t *set, int t, const int32_t *expert_of, int E, int k, int *counts,
                           double *share, double *entropy);

// Percentile q in [0, 1] of v (n, sorted in place), linear interpolation.
double kf_spec_percentile(double *v, int n, double q);

// Spearman rank correlation of x and y (n), ties at their average rank; NaN
// when n < 2, when either is constant, or out of memory.
double kf_spec_spearman(const double *x, const double *y, int n);

#endif
