// `kfuse compress`: fold or prune FFN neurons, or drop whole blocks, with an
// optional least-squares refit of each changed down projection, layer by layer.
//
// Progressive schedule (default): for l = 0 .. L-1, the calibration windows
// run through the model as it is now (layers < l already compressed), the
// FFN activations of layer l are accumulated (kf_moments), layer l is
// grouped/pruned from those statistics and refitted so that its output on its
// *current* input matches the original layer's, then the next layer is done.
// Errors of earlier layers are thus seen by later ones. With a statistics
// file (from `kfuse analyze`), every layer uses the file's statistics of the
// original model instead and no calibration pass is made.
//
// Allocation (target params): from the original model's statistics, the error
// E||delta FFN out||^2 of each layer at widths F*j/16 (j = 1..16) is measured
// for the chosen method; neurons are then removed greedily, one step of one
// layer at a time, where the error added per parameter saved is smallest,
// until the target is met.
//
// Search (max perplexity increase): bisection on the kept parameter fraction,
// each trial an allocation + compression of a fresh copy of the model,
// measured on validation windows held out of the calibration text.
//
// One concern per file: layer_stats.c (calibration passes, Block Influence),
// group.c (fold groups), plan.c (a layer's plan, allocation, search), ffn.c
// (FFN surgery), block.c (drop/merge blocks), refit.c, compress.c (driver).
#ifndef KF_TRANSFORM_COMPRESS_H
#define KF_TRANSFORM_COMPRESS_H

#include <stdint.h>

#include "core/status.h"
#include "model/model.h"
#include "stats/statsfile.h"
#include "transform/ffn.h"
#include "transform/group.h"

typedef enum {
    KF_CMP_FOLD = 0,
    KF_CMP_PRUNE_MAGNITUDE,
    KF_CMP_PRUNE_WANDA,
    KF_CMP_PRUNE_ACT,
    KF_CMP_RANDOM,
    KF_CMP_DROP_LAYERS,
    KF_CMP_PRUNE_TASK,     // keep the neurons of largest task_scores (a probe's ranking), then refit
} kf_cmp_method;

typedef void (*kf_compress_progress_fn)(void *user, const char *stage, int layer, int n_layer);

typedef struct {
    kf_cmp_method method;
    kf_group_kind group;
    int refit;             // least-squares refit of w_down
    double lambda_rel;     // ridge of the refit, relative to mean diag of the Gram
    uint64_t seed;
    int ctx, batch;        // calibration windows: tokens per sequence, sequences per forward call
    const int *widths;     // (n_layer) target FFN widths, or NULL
    const double *thresholds; // (n_layer) fold: correlation-distance cut per layer, or NULL
    int n_drop;            // drop-layers: blocks to remove
    int merge;             // drop-layers: fold each removed block's FFN into its kept neighbour
                           // instead of deleting it (only its attention is removed)
    const kf_statsfile *stats; // statistics of the original model (kf_analyze), or NULL
    const double *const *task_scores; // prune-task: (n_layer) scores (F_l) of the original model's neurons
    int64_t max_memory;    // bytes of statistics memory at most (kf_compress_layer_bytes); 0 = no cap
    int recompute;         // each layer's calibration pass runs the model from the embeddings instead of
                           // from the residual stream entering the layer, cached on disk (the default)
    kf_compress_progress_fn progress;
    void *progress_user;
} kf_compress_opts;

void kf_compress_opts_default(kf_compress_opts *o);

typedef struct {
    int layer;       // index in the original model
    int n_ff_before, n_ff_after;
    double t_cut;    // fold: correlation groups: distance of the last merge applied; ls groups: largest
                     // removal cost as a share of the layer's output energy (NaN for prune)
    double rel_err;  // E||delta FFN out||^2 / E||FFN out||^2 on the layer's calibration input
    int refit_centred; // refitted from no more tokens than kept neurons: ridge centred on the merge (refit.h)
} kf_compress_layer;

typedef struct {
    int n_layer_before;
    kf_compress_layer *layers; // (n_layer_before)
    int n_dropped;
    int *dropped;              // (n_dropped) original indices of removed blocks, increasing
    int *merged_into;          // (n_dropped) with merge: original index of the block that took its FFN
    double *block_influence;   // (n_layer_before) drop-layers only, else NULL
    int64_t n_calib_tokens;
} kf_compress_report;

void kf_compress_report_free(kf_compress_report *r);

// Compresses m in place. ids (n_ids): calibration tokens (calib/'s windows
// of ctx, first token replaced by bos_id when >= 0); may be NULL when a
// statistics file replaces the calibration pass or the method needs none.
// Layers go in order, each from statistics recorded on the model as
// compressed so far: one calibration pass per layer that runs only the
// blocks from the cached residual stream (a temporary file of N rows x C
// floats, advanced block by block), about two forward passes in all; the
// result equals the run with o->recompute (every pass from the embeddings).
kf_status kf_compress_run(kf_model *m, const int32_t *ids, int64_t n_ids, int bos_id, const kf_compress_opts *o,
                          kf_compress_report *rep, kf_error *err);

// Appends the FFN of block src to the FFN of block dst (dst's width grows by
// src's), rescaling src's input weights for dst's normalisation; src itself
// is left in place (drop-layers --merge removes it afterwards). Exact when
// the two FFNs would see the same residual stream.
kf_status kf_compress_merge_ffn(kf_model *m, int dst, int src, kf_error *err);

// Greedy allocation of FFN widths (n_layer) that keeps at most target_params
// parameters in all (a fraction of nothing: an absolute count), using the
// original model's statistics collected from ids (or o->stats).
kf_status kf_compress_allocate(const kf_model *m, const int32_t *ids, int64_t n_ids, int bos_id,
                               const kf_compress_opts *o, int64_t target_params, int *widths, kf_error *err);

// Memory for statistics and planning of compressing layer l under o (its
// activation moments and the per-layer matrices of the method and the refit;
// compress keeps one layer's at a time), and the most over the layers whose
// width changes (widths, or every layer when NULL): what --max-memory must
// allow. kf_compress_run fails before any work when o->max_memory is below.
int64_t kf_compress_layer_bytes(const kf_model *m, int l, const kf_compress_opts *o);
int64_t kf_compress_bytes(const kf_model *m, const kf_compress_opts *o, const int *widths, int *worst_layer);

// Parameters of one FFN neuron of layer l (rows of gate/up, bias, down column).
int64_t kf_compress_neuron_params(const kf_model *m, int l);

// Block Influence of every block (n_layer): 1 - mean cos(block input, block
// output), with analyze's accumulator (kf_bi_add), on the windows of ctx.
kf_status kf_compress_block_influence(const kf_model *m, const int32_t *ids, int64_t n_ids, int bos_id, int ctx,
                                      int batch, double *bi, kf_error *err);

// --max-ppl-increase: the smallest kept parameter fraction (of 6 bisection
// trials in [0.05, 1], the first at 0.5) whose model, loaded afresh from path,
// allocated (kf_compress_allocate) and compressed (kf_compress_run) on cal
// with opts o, keeps the perplexity on val within max_inc percent of the
// original's. on_trial (may be NULL) hears each measured trial.
typedef void (*kf_compress_trial_fn)(void *user, double keep, double ppl, double limit);

typedef struct {
    double keep; // the fraction found
    double ppl0; // validation perplexity of the original
    double ppl;  // of the model at keep
} kf_compress_search_result;

kf_status kf_compress_search(const char *path, const int32_t *cal, int64_t n_cal, const int32_t *val, int64_t n_val,
                             int bos_id, const kf_compress_opts *o, double max_inc, kf_compress_trial_fn on_trial,
                             void *user, kf_compress_search_result *res, kf_error *err);

#endif
