// kfuse specialise: which FFN neurons serve which dataset (Pochinkov et al.,
// "Modularity in Transformers", for any model kfuse loads).
//
// For each dataset (a tokenized text): the first `tokens` ids give the
// importance of every FFN neuron (importance.h, windows of calib/'s
// protocol), the next `eval_tokens` ids, never seen by the importance pass,
// give the losses. A task dataset (task.h) gives importance on its training
// sentences and its loss is a probe's error (or cross-entropy) on its
// evaluation sentences. From these:
//   overlap     for each layer, fraction f and pair of datasets, IoU and
//               containment |A∩B|/|A| of their top-f important sets, with a
//               95% bootstrap interval over chunks of calibration windows and
//               the IoU that random sets of the same sizes show (sets.h);
//   pruning     selective pruning: remove in every layer the f most
//               A-specific neurons, ranked by the focus/retain ratio
//               (I_A + eps) / (I_B + eps), and measure the loss on A and on B,
//               against removing as many random neurons;
//   ablation    for the top candidates of each dataset and layer, the
//               measured loss increase when that one neuron is removed, and
//               for every neuron of a text dataset its first-order estimate
//               from one backward pass (kf_spec_first_order).
// The caller runs it once on the trained model and once on a randomly
// initialised one of the same shape (kf_model_randomize) as the control, and
// maps the important sets onto the experts of MoEfied copies
// (kf_spec_expert_map, kf_spec_concentrate).
#ifndef KF_SPECIALISE_SPECIALISE_H
#define KF_SPECIALISE_SPECIALISE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/status.h"
#include "model/model.h"
#include "specialise/importance.h"
#include "specialise/sets.h"
#include "specialise/task.h"

// A dataset: a tokenized text (next-token loss), or a task (task non-NULL:
// ids unused; its loss is a linear probe's error rate or cross-entropy, task.h).
typedef struct {
    const char *name;
    const int32_t *ids; // the tokenized text
    int64_t n_ids;
    const kf_spec_task *task;
} kf_spec_data;

typedef void (*kf_spec_progress_fn)(void *user, const char *stage, int64_t done, int64_t total);

typedef struct {
    int ctx, batch, bos_id;  // windows (calib/'s protocol)
    int64_t tokens;          // ids per dataset for importance
    int64_t eval_tokens;     // the ids after those, for the losses
    kf_imp_kind kind;        // importance of a neuron
    kf_spec_task_loss task_loss; // the loss of task datasets
    const double *fracs;     // fractions f of each layer's neurons (0, 0.5]
    int n_frac;
    int n_chunk;             // chunks of windows the bootstrap resamples (at most the windows)
    int n_boot;              // bootstrap replicates
    int n_null;              // random pairs of sets for the overlap null
    int n_random;            // random removals per fraction (pruning baseline)
    int ablate_top;          // neurons per dataset and layer whose removal is measured
    bool first_order;        // estimate every neuron's ablation cost from a backward pass (text datasets)
    uint64_t seed;
    kf_spec_progress_fn progress;
    void *user;
} kf_spec_opts;

// ctx 256, batch 4, no BOS, 16384 + 8192 tokens, abs, f = 1, 2, 5 %, 32
// chunks, 200 replicates, 2000 null pairs, 3 random removals, top 4 ablated,
// first-order estimate on, seed 1.
void kf_spec_opts_default(kf_spec_opts *o);

// Neurons of layer l removed from a fraction f: max(1, round(f * n_ff)).
int kf_spec_n_of(double f, int n_ff);

// idx (k): the k neurons of one layer most specific to dataset A against B,
// by the focus/retain ratio (I_A + eps) / (I_B + eps) of their importances
// ia, ib (F); eps is a thousandth of the layer's mean importance, so that
// neurons silent on both rank as neutral rather than infinitely specific.
// ratio (F) and scratch (F) are the caller's.
void kf_spec_specific(const double *ia, const double *ib, int F, int k, int32_t *idx, double *ratio,
                      kf_spec_ranked *scratch);

typedef struct {
    double iou, iou_lo, iou_hi; // point estimate, 2.5 and 97.5 bootstrap percentiles
    double contain;             // |A ∩ B| / |A| (row dataset A, column B)
    double null_mean, null_q95, p; // random sets of the same sizes; p of the observed IoU
} kf_spec_overlap;

typedef struct {
    int n_data, n_layer, n_frac, ablate_top;
    int64_t n_neuron;
    int64_t *off;            // (n_layer + 1) flat neuron offsets
    double *fracs;           // (n_frac)
    int64_t *tokens_used, *eval_tokens_used; // (n_data) (tasks: tokens of the training and evaluation sentences)
    int64_t *items_used;     // (n_data, 2) task items (words or sentences) trained and evaluated on; 0 for texts
    double *importance;      // (n_data, n_neuron)
    double *base_loss;       // (n_data) mean NLL on the evaluation windows, nothing removed
    kf_spec_overlap *overlap; // (n_frac, n_layer, n_data, n_data)
    // selective pruning, (n_data focus, n_data retain, n_frac): losses on the
    // focus and on the retain dataset (diagonal unused)
    double *sel_focus, *sel_retain;
    double *rand_mean, *rand_sd; // (n_frac, n_data) random removal of as many neurons
    int *n_removed;          // (n_frac) neurons removed in all layers
    int32_t *ablate_idx;     // (n_data, n_layer, ablate_top) neuron within its layer
    double *ablate_dloss;    // (n_data, n_layer, ablate_top) loss increase when it alone is removed
    double *first_order;     // (n_data, n_neuron) first-order estimate of that increase (kf_spec_first_order,
                             // on the importance tokens); NaN for tasks, NULL when not asked
    double seconds;
} kf_spec_result;

// m is not changed in value; the first-order pass copies its weights into
// memory and its w_down to F32 (kf_spec_first_order), after every loss.
kf_status kf_spec_run(kf_model *m, const kf_spec_data *data, int n_data, const kf_spec_opts *o,
                      kf_spec_result *res, kf_error *err);
void kf_spec_result_free(kf_spec_result *r);

// Experts of a MoEfied copy of m: expert_of (n_neuron, flat as in m) gets the
// expert of each neuron of m's layer l in moe's layer l (-1 on dense layers),
// matched by equal w_up (and w_gate) rows, since moefy only reorders them;
// n_expert (n_layer) and k (n_layer): experts per layer and the number of
// experts a token selects (top_k, or a quarter of the experts for dynamic-k
// layers). Fails when moe is not a MoEfication of m.
kf_status kf_spec_expert_map(const kf_model *m, const kf_model *moe, int32_t *expert_of, int *n_expert, int *k,
                             kf_error *err);

typedef struct {
    double share, entropy;           // of the dataset's top-f important set
    double rand_share, rand_entropy; // means over random sets of the same size
    double p_share;                  // share of random sets at least as concentrated
} kf_spec_conc;

// conc (n_data, n_frac, n_layer) for the important sets of r (dense layers:
// NaN). n_draws random sets per cell.
kf_status kf_spec_concentrate(const kf_spec_result *r, const int32_t *expert_of, const int *n_expert, const int *k,
                              int n_draws, uint64_t seed, kf_spec_conc *conc, kf_error *err);

#endif
