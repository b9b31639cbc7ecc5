// `kfuse analyze`: record a model's activations on calibration tokens
// through the forward hooks, as streamed statistics, then run the analyses
// (layer CKA and Block Influence, correlation clustering of neurons, concept
// clusters by k-means, dynamic per-layer thresholds) into a
// kf_analysis_result (analysis.h; report/ writes it as analysis.json).
//
// Files: pipeline.c runs the two passes over the model (recording, then the
// top contexts of the clusters) and drives the analyses; record_mpi.c
// reduces the recording across MPI ranks; similarity.c holds CKA and the
// redundancy of a correlation clustering, ffn_layer.c everything about one
// layer's FFN neurons; npy.c the .npy dump.
//
// Recording (per forward call of B sequences x ctx tokens, N = B*ctx rows;
// the windows are calib/'s protocol, the one compress, moefy and eval use,
// and it is stamped on the statistics file):
//   BLOCK_IN of layer 0 (embeddings) and BLOCK_OUT of every layer give the
//   R = L+1 residual representations; FFN_ACT gives each layer's neuron
//   activations. Per call: FFN activations -> kf_moments "layer.<l>.ffn_act"
//   (with co-activation counts); residual stream -> one joint kf_moments
//   "resid.all" over the concatenation of all R representations (R*C dims)
//   when R*C <= joint_max_dims (its diagonal blocks are the per-layer
//   statistics, its off-diagonal blocks give exact linear CKA and the
//   cross-layer correlations); wider models get per-layer "resid.<r>" moments
//   and minibatch CKA (kf_cka_mb) instead, and no cross-layer clustering.
//   The joint accumulator costs (R*C)^2/2 multiply-adds per token in double,
//   more than the forward pass of a small model, so it takes every
//   resid_stride-th token (default 4; a fixed subsample by token index, the
//   same however the batches are split): 16k tokens of a 64k run still give
//   n >> R*C for the CKA and the correlations. The FFN statistics and Block
//   Influence take every token.
//   Block Influence per block from the input/output pair. A fixed, seeded
//   sample of tokens (chosen before recording, so independent of how the
//   batches are split) keeps its FFN activations for k-means profiles.
//
// Memory (kf_analyze_plan): with max_memory > 0 the statistics (accumulators,
// activation samples, analysis scratch; not the model's weights) stay under
// it. When everything at once does not fit, the run records in passes: a
// first full pass gathers the residual-stream statistics (CKA, Block
// Influence, residual correlations), then the FFN layers go in consecutive
// groups, one pass each, that run only the group's blocks: the residual
// stream entering a group is the previous group's output, cached in a
// temporary file (N rows x C floats), so all passes together cost about two
// forward passes. Each group is analysed and its statistics written to
// stats_path before the next starts. The numbers equal the one-pass run's
// (the same rows reach the same accumulators). Layer groups run in one
// process only; with --shard-layers under MPI the plan counts each rank's
// share of the layers (one pass).
//
// MPI (built with KF_HAVE_MPI, n_ranks > 1): sequence batches are dealt
// round-robin to ranks; the accumulators are re-centred on the global mean
// and their sums MPI_Allreduce'd; the sampled activations are summed (each
// sample row is filled by exactly one rank). Rank 0 then analyses alone.
// With shard_layers (--shard-layers), each layer's FFN statistics live on
// one rank only, its owner: layers are dealt to ranks balanced by
// kf_moments_bytes (largest first, to the rank holding the fewest bytes), and
// at every layer's FFN activations of every forward call the rows of all
// ranks are sent to the owner (one message per rank, received in rank order
// into one call's buffer, so the owner's memory does not grow with the
// ranks), which alone accumulates them and keeps their sampled activations. The ranks run their calls in
// lock-step rounds (a rank short of a batch joins with no rows), so the
// owner adds the rows in the order of a single process. Sending N x F
// floats per call costs less traffic than reducing F^2/2 second moments and
// needs no full-size accumulator on the other ranks, so FFN statistics
// memory per rank falls as 1/n_ranks. The residual-stream statistics, Block
// Influence and CKA are still MPI_Allreduce'd on every rank. Each owner then
// analyses its layers; rank 0 gathers the layer results, every layer's mean
// and 1/std for the context pass, and (kf_analysis_save_stats) writes the
// statistics file entry by entry as the owners send them: the same files as
// a single process.
// Without MPI running, rank/n_ranks still select this rank's share of the
// batches and nothing is reduced: kf_statsfile_merge of the ranks' statistics
// gives the statistics of the whole run.
#ifndef KF_ANALYZE_PIPELINE_H
#define KF_ANALYZE_PIPELINE_H

#include <stdint.h>

#include "analyze/analysis.h"
#include "core/status.h"
#include "model/model.h"
#include "stats/statsfile.h"
#include "tokenizer/tokenizer.h"

typedef void (*kf_analyze_progress_fn)(void *user, const char *stage, int64_t done, int64_t total);

typedef struct {
    int64_t n_tokens;     // calibration tokens used at most (whole sequences of ctx)
    int ctx;              // tokens per sequence
    int batch;            // sequences per forward call
    int bos_id;           // >= 0: first token of every sequence replaced by it (calib/calib.h); < 0: text as is
    double threshold;     // correlation-clustering cut of the headline numbers
    int k;                // k-means clusters; 0 = chosen by silhouette
    uint64_t seed;
    double epsilon;       // dynamic thresholds: allowed relative FFN output error
    int sample_tokens;    // tokens whose activations are kept (k-means profiles, .npy dump)
    int keep_resid_sample; // also keep the residual stream of the sampled tokens (for .npy)
    int coact_topk;       // co-activation set size; 0 = max(4, n_ff/32)
    int context_tokens;   // tokens of the second pass that finds top contexts
    int n_contexts;       // top contexts kept per cluster
    int context_radius;   // tokens shown on each side of a context's token
    int joint_max_dims;   // largest (L+1)*C recorded as one joint accumulator
    int resid_stride;     // the joint accumulator takes tokens whose index is a multiple of it
    int f64_products;     // second moments summed in double throughout (default: float per block, kf_moments_set_f32)
    int rank, n_ranks;    // MPI rank and size (0, 1 without MPI)
    int shard_layers;     // under MPI: each rank holds only its layers' FFN statistics (see above)
    int64_t max_memory;   // bytes of statistics memory at most; 0 = no cap
    const char *stats_path; // the run writes the statistics file here (needed when layers go in groups)
    kf_analyze_progress_fn progress;
    void *progress_user;
} kf_analyze_opts;

// Defaults: 65536 tokens, ctx 256, batch 4, no BOS, t 0.3, k auto, seed 1, eps 0.05,
// 2048 sampled tokens, 8192 context tokens, 5 contexts of radius 4, joint up
// to 8192 dims with stride 4, float products per block, single process.
void kf_analyze_opts_default(kf_analyze_opts *o);

// How a run splits its recording under o->max_memory.
typedef struct {
    int n_groups;          // FFN layer groups
    int n_passes;          // recording passes over the calibration text (the contexts pass not counted): 1 (one
                           // pass records everything) or 1 + n_groups (the residual stream, then each group)
    int *group_first;      // (n_groups + 1) first layer of each group, then n_layer
    int64_t bytes;         // statistics memory the run uses at most
    int64_t bytes_one_pass; // what one pass holding everything would use
    int64_t bytes_min;     // the least cap that works: max(residual part, one layer with the analysis scratch)
    int64_t resid_bytes;   // residual-stream statistics, buffers and their analysis
    int64_t scratch_bytes; // analysis scratch of one FFN layer (the widest)
    int64_t layer_bytes_max; // statistics of the widest FFN layer
} kf_analyze_plan;

// The plan for m, n_ids calibration ids and o (o->max_memory, o->sample_tokens,
// ...). Fails with one line naming the bytes needed when max_memory is
// below bytes_min, or when groups would be needed under MPI or without
// o->stats_path.
kf_status kf_analyze_plan_make(const kf_model *m, int64_t n_ids, const kf_analyze_opts *o, kf_analyze_plan *p,
                               kf_error *err);
void kf_analyze_plan_free(kf_analyze_plan *p);

typedef struct {
    kf_analysis_result *result; // the analyses; NULL on ranks > 0
    kf_statsfile stats;   // the reduced statistics (all ranks; sharded: this rank's FFN layers and the residual
                          // ones); without entries when layers went in groups (they are in o->stats_path)
    int n_layer, S;       // layers; sampled tokens
    int64_t *sample_pos;  // (S) token index of each sampled token
    float **ffn_sample;   // (n_layer) each (S, n_ff of the layer); sharded: NULL for another rank's layer; with
                          // groups and no keep_resid_sample, NULL (freed)
    float *resid_sample;  // (L+1, S, C) when keep_resid_sample, else NULL
    int resid_dim;        // C
    int rank, n_ranks;    // of this process
    int shard;            // FFN statistics sharded by layer: stats holds this rank's layers only
    int32_t *layer_owner; // (n_layer) rank holding each layer's FFN statistics (all 0 unsharded)
} kf_analysis;

// ids (n_ids) calibration tokens; tok (may be NULL) detokenises contexts.
kf_status kf_analyze_run(const kf_model *m, const kf_tokenizer *tok, const int32_t *ids, int64_t n_ids,
                         const kf_analyze_opts *o, kf_analysis *out, kf_error *err);
void kf_analysis_free(kf_analysis *a);

// Writes the statistics of the whole run to path: rank 0 writes, and when
// sharded every rank must call it (the owners send their layers). A
// one-pass kf_analyze_run calls it with o->stats_path when that is set;
// layer groups write theirs as they go.
kf_status kf_analysis_save_stats(const kf_analysis *a, const char *path, kf_error *err);

// Writes the sampled activations as .npy (v1, little-endian <f4) into dir:
// ffn_act.<l>.npy (S, n_ff), resid.<r>.npy (S, C) when kept, and
// sample_pos.npy (S) <i8 token indices.
kf_status kf_analysis_dump_npy(const kf_analysis *a, const char *dir, kf_error *err);

#endif
