// FFN surgery on one layer and the per-neuron choices behind it: which
// neurons to keep (prune scores, greedy least-squares selection), the merged
// down columns of fold groups (the groups themselves: group.h), and the error
// a new down projection leaves, all from the layer's activation statistics.
//
// Every new FFN is "a subset of the old neurons + a new w_down": a pruned
// layer keeps idx with the old columns (or refitted ones); a folded layer
// keeps one representative per group, whose gate/up rows it copies, with a
// down column that sums the group's columns weighted by least-squares
// coefficients (or refitted). Hence the new activations are columns of the
// old ones on the same input, and every Gram matrix the refit needs is a
// sub-block of the layer's uncentred second moment M = sum a a^T (F,F).
#ifndef KF_TRANSFORM_FFN_H
#define KF_TRANSFORM_FFN_H

#include <stdint.h>

#include "core/status.h"
#include "model/model.h"

// Replaces layer l's FFN by neurons idx (k, distinct, in [0, n_ff)): rows idx
// of w_gate/w_up/b_up, and w_down_new (C,k) or, when NULL, columns idx of the
// old w_down. New tensors are owned by the model.
kf_status kf_ffn_select(kf_model *m, int l, const int *idx, int k, const float *w_down_new, kf_error *err);

typedef enum {
    KF_SCORE_MAGNITUDE = 0, // ||[gate_j; up_j]|| * ||w_down[:, j]||
    KF_SCORE_WANDA,         // sqrt(E a_j^2) * sum_i |w_down[i, j]|   (structured Wanda on the down input)
    KF_SCORE_ACT,           // E |a_j|
    KF_SCORE_RANDOM,        // uniform, seeded
} kf_score_kind;

// Per-neuron importance (F) of layer l. Wanda and activation scores need
// second_moment (F, diagonal read: sum a_j^2) / sum_abs (F) and n rows.
void kf_ffn_scores(const kf_model *m, int l, kf_score_kind kind, const double *sum_sq, const double *sum_abs, int64_t n,
                   uint64_t seed, double *score);
// The k neurons of largest score, in increasing index order (ties: lower index).
kf_status kf_ffn_top_k(const double *score, int F, int k, int *idx, kf_error *err);

// Down columns of the merged neurons (C,k): column g = sum over members j of
// beta_j w_down[:, j], beta_j = cov_jr / cov_rr (1 for r; 0 when var_r = 0).
void kf_ffn_merge_down(const kf_model *m, int l, const double *cov, const int32_t *labels, const int *reps, int k,
                       float *w_down_new);

// Greedy least-squares selection (structured Optimal Brain Surgeon): the k
// neurons (idx, increasing) whose refitted down projection keeps the output
// E||W a - W' a_S||^2 + ridge smallest, found by removing neurons from the
// full set one small batch at a time. With H = M_SS + lambda I and
// V = W M_{:,S} H^-1 the refitted columns, removing neuron j costs
// ||V[:, j]||^2 / (H^-1)_jj; a batch (at most |S|/128 neurons) takes the
// cheapest neurons whose partial correlation (from H^-1) with those already
// in it is below 0.3, so two copies of one neuron never leave together.
// M (F,F) = sum a a^T, w_down (C,F); lambda = max(lambda_rel, 1e-9) * mean
// diag M.
// w_new (C,k), may be NULL: the refitted columns V of the kept neurons, kept
// up to date by the same rank-b updates (equal to kf_refit_solve with that
// lambda). *t_cut (may be NULL): the largest removal cost paid, as a share of
// the layer's output energy tr(W M W^T) -- the layer's fusion threshold.
// removed (F - k, may be NULL): the other neurons in the order they left, so
// that one run to a small width also gives the larger ones (the first F - k'
// removed; exact while batches hold one neuron, F < 256). Cost O(F^3) in
// double.
kf_status kf_ffn_select_ls(const double *M, const float *w_down, int C, int F, int k, double lambda_rel, int *idx,
                           float *w_new, double *t_cut, int *removed, kf_error *err);

// Mean squared FFN-output error per token of replacing w_down (C,F) on
// activations A by w_new (C,k) on A[:, idx]: from M (F,F) = sum a a^T over n
// rows, G = M[idx,idx], X = M[idx,:]. *ref gets E||w_down a||^2 (the scale).
kf_status kf_ffn_error(const double *M, int64_t n, const float *w_down, int C, int F, const int *idx, int k,
                       const float *w_new, double *err_out, double *ref, kf_error *err);

#endif
