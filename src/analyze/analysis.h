// The result of `kfuse analyze` as plain C data: every number of
// analysis.json (schema: docs/analysis-json.md), sized from the model.
// report/analysis_json.c converts it to and from that file and
// report/analysis_report.c draws report.html from it. Undefined numbers are
// NaN (null in the JSON).
#ifndef KF_ANALYZE_ANALYSIS_H
#define KF_ANALYZE_ANALYSIS_H

#include <stdint.h>

#include "core/status.h"

#define KF_ANALYSIS_N_T 9      // headline thresholds t = 0.1, 0.2, ..., 0.9
#define KF_ANALYSIS_N_GRID 101 // dynamic-threshold grid t = 0.00, 0.01, ..., 1.00

// One top context of a cluster: the token at pos and its neighbours.
typedef struct {
    int64_t pos;              // token index in the calibration tokens
    double score;             // mean standardised activation of the cluster's members there
    char *left, *token, *right; // detokenised text; all NULL when there was no tokenizer
    int n_ids;
    int32_t *ids;             // (n_ids) token ids of left + token + right
} kf_analysis_context;

typedef struct {
    int size;                 // member neurons
    double mean_abs_corr;     // mean |rho| over pairs of members; NaN for one member
    int n_contexts;
    kf_analysis_context *contexts; // (n_contexts) by score, descending
} kf_analysis_cluster;

// k-means of one layer's neurons (on activation profiles or weight vectors).
typedef struct {
    int k;                    // clusters used
    double silhouette;        // of the chosen clustering; NaN when undefined
    double objective;
    int n_candidates;
    int *k_candidates;        // (n_candidates) k tried
    double *silhouette_by_k;  // (n_candidates)
    kf_analysis_cluster *clusters; // (k)
    int32_t *labels;          // (n_ff of the layer) cluster of each neuron
} kf_analysis_kmeans;

typedef struct {
    int n_ff;
    double block_influence;
    // correlation clustering of the FFN neurons
    double redundancy[KF_ANALYSIS_N_T];   // redundant share at each headline t
    double redundancy_at_threshold;       // at the run's threshold
    double clustering_seconds;
    // dynamic threshold
    double t;                             // NaN when even t = 0 exceeds epsilon
    int width;                            // clusters at t (n_ff when t is NaN)
    double rel_err;                       // relative error at t
    double err_curve[KF_ANALYSIS_N_GRID];
    double err_at_t[KF_ANALYSIS_N_T];     // relative error at the headline t
    // activation statistics
    double act_freq_mean, mean_abs_act;
    int dead;
    kf_analysis_kmeans activation, weight;
} kf_analysis_layer;

typedef struct {
    // model
    char *model_path, *arch;
    uint64_t fingerprint;
    int n_layer, n_embd;                  // L, C; R = L + 1 residual representations
    int64_t n_params;
    // calibration
    int64_t n_tokens_available, n_tokens, n_sequences;
    int ctx, batch, ranks, sample_tokens;
    int bos_id;                           // first token of every window (-1: windows as in the text)
    uint64_t seed;
    double record_seconds, tokens_per_s;
    // statistics memory (analyze --shard-layers: each rank holds its layers' FFN statistics)
    int shard_layers;                     // 1: FFN statistics sharded by layer across the ranks
    int32_t *layer_owner;                 // (L) rank that held each layer's FFN statistics (0 without sharding)
    int64_t *rank_ffn_stats_bytes;        // (ranks) bytes of FFN statistics each rank held at once
                                          // (kf_moments_bytes; with layer groups, the largest group's)
    int64_t resid_stats_bytes;            // bytes of residual-stream statistics, held by every rank
    // options
    double threshold, epsilon;
    int k, coact_topk, resid_stride, f64_products;
    int64_t context_tokens, resid_tokens;
    // layer similarity and residual-stream redundancy
    int cka_exact;                        // 1: exact from the joint covariance, 0: minibatch
    double *cka;                          // (R, R)
    double *resid_redundancy;             // (R, N_T)
    double *resid_seconds;                // (R)
    int has_resid_all;                    // whole stream across layers (exact CKA mode only)
    double resid_all[KF_ANALYSIS_N_T], resid_all_at_threshold, resid_all_seconds;
    int64_t resid_all_n;
    double grid_step;                     // of the dynamic-threshold grid
    kf_analysis_layer *layers;            // (L)
    // timing (seconds)
    double analysis_seconds, thresholds_seconds, kmeans_seconds, contexts_seconds;
} kf_analysis_result;

// Allocates the per-layer and per-representation arrays of n_layer layers
// and the per-rank bytes of n_ranks ranks (numbers zero, k-means empty); r
// must be freed even on failure.
kf_status kf_analysis_result_init(kf_analysis_result *r, int n_layer, int n_ranks, kf_error *err);
// Allocates km's k clusters and n_ff labels (zero, no contexts).
kf_status kf_analysis_kmeans_init(kf_analysis_kmeans *km, int k, int n_candidates, int n_ff, kf_error *err);
// Allocates c's n contexts (zero: no text, no ids).
kf_status kf_analysis_cluster_init_contexts(kf_analysis_cluster *c, int n, kf_error *err);
void kf_analysis_result_free(kf_analysis_result *r);

#endif
