// Splitting one FFN layer's F neurons into E experts of equal size S = F / E
// (MoEfication), and reordering the weights so that each expert is one
// contiguous neuron range.
//
//   kmeans  balanced k-means on the neurons' input weights, [gate row, up row]
//           (the up row alone for ungated FFNs): parameter clustering.
//   coact   a balanced partition of the co-activation graph (edge weight =
//           how often two neurons are both among a token's top-activated
//           ones, from kf_moments) by METIS k-way, then exact balance.
//   fold    the correlation groups `kfuse compress --method fold` merges
//           (average linkage on 1 - |rho|, cut to F * keep groups), packed
//           whole, largest first, into the expert with most room left; a
//           group larger than the room is split over experts.
// Every split returns labels (F) in [0, E) with exactly S neurons per label.
#ifndef KF_MOE_SPLIT_H
#define KF_MOE_SPLIT_H

#include <stdint.h>

#include "core/status.h"
#include "model/model.h"
#include "stats/moments.h"

kf_status kf_moe_split_kmeans(const kf_model *m, int l, int E, uint64_t seed, int32_t *labels, kf_error *err);
// mo: the layer's FFN activation statistics with co-activation counts (topk > 0).
kf_status kf_moe_split_coact(const kf_moments *mo, int E, uint64_t seed, int32_t *labels, kf_error *err);
// mo: the layer's FFN activation statistics (n >= 2).
kf_status kf_moe_split_fold(const kf_moments *mo, int E, double keep, int32_t *labels, kf_error *err);

// Reorders layer l's neurons so that expert e is [e*S, (e+1)*S) (members in
// increasing original index); labels must be balanced. Sets nothing else:
// the layer stays dense until n_expert is set. perm (F), may be NULL:
// perm[new index] = old index.
kf_status kf_moe_permute_layer(kf_model *m, int l, const int32_t *labels, int E, int *perm, kf_error *err);

#endif
