// `kfuse moefy`: turn every dense FFN layer of a model into a mixture of E
// equal experts with a router (MoEfication, Zhang et al. 2021; dynamic-k as
// DSTI, Piórczyński et al. 2023). In place, layer by layer:
//
//   1. statistics (coact and fold splits): one calibration pass recording each
//      layer's FFN activations into kf_moments (co-activation counts for
//      coact), unless a statistics file from `kfuse analyze` is given;
//   2. split (moe/split.h) and reorder each layer so expert e is neurons
//      [e*S, (e+1)*S) -- the dense function is unchanged;
//   3. router sample: a second pass over the first `router_tokens` calibration
//      tokens records, per layer, the FFN input X (n, C) and each expert's
//      output norm Y (n, E) (the contribution the routers predict); the last
//      eighth of the sample is held out;
//   4. routers (moe/router.h): similarity always (as the baseline), then the
//      chosen one trained on the rest; recall of the oracle's top-k on the
//      held-out tokens is reported for both;
//   5. n_expert, router, top_k / coverage set on every layer.
// Calibration windows: calib/'s protocol, ctx tokens, first token replaced by
// bos_id (>= 0), batch per forward call; a statistics file must share them.
#ifndef KF_MOE_MOEFY_H
#define KF_MOE_MOEFY_H

#include <stdint.h>

#include "core/status.h"
#include "model/model.h"
#include "stats/statsfile.h"

typedef enum { KF_SPLIT_KMEANS = 0, KF_SPLIT_COACT, KF_SPLIT_FOLD } kf_split_kind;
typedef enum { KF_MOEFY_SIMILARITY = 0, KF_MOEFY_LINEAR, KF_MOEFY_MLP, KF_MOEFY_ORACLE } kf_moefy_router;

typedef void (*kf_moefy_progress_fn)(void *user, const char *stage, int layer, int n_layer);

typedef struct {
    int n_expert;           // E
    kf_split_kind split;
    kf_moefy_router router;
    int top_k;              // > 0: fixed top-k
    float coverage;         // top_k == 0: dynamic-k coverage in (0, 1]
    int ctx, batch;         // calibration windows and sequences per forward call
    int64_t n_tokens;       // calibration tokens for the statistics pass
    int router_tokens;      // router sample size (tokens)
    int hidden;             // MLP router hidden width
    int epochs;
    float lr;
    double fold_keep;       // fold split: groups = fold_keep * F
    int coact_topk;         // co-activation set size; 0 = max(4, F/32)
    uint64_t seed;
    const kf_statsfile *stats; // analyze statistics of the original model ("layer.<l>.ffn_act"), or NULL
    int64_t max_memory;     // bytes of statistics memory at most (kf_moefy_plan); 0 = no cap
    kf_moefy_progress_fn progress;
    void *progress_user;
} kf_moefy_opts;

// Defaults: 16 experts, kmeans, MLP router, top-4, ctx 256, batch 4, 65536
// statistics tokens, 16384 router tokens, hidden 64, 20 epochs, lr 3e-3,
// fold keep 0.25, seed 1.
void kf_moefy_opts_default(kf_moefy_opts *o);

typedef struct {
    double recall;            // chosen router's recall of the oracle top-k (held-out)
    double recall_similarity; // the similarity router's
    double share;             // mean fraction of experts selected per held-out token
    double loss;              // final training MSE (normalised targets); NaN if untrained
} kf_moefy_layer;

typedef struct {
    int n_layer;
    kf_moefy_layer *layers; // (n_layer)
    int k_eval;             // k of the recall (top_k, or E/4 for dynamic-k)
    int n_train, n_heldout; // router sample split
    int64_t n_calib_tokens; // tokens of the statistics pass (0 without one)
} kf_moefy_report;

void kf_moefy_report_free(kf_moefy_report *r);

// How the statistics pass splits under o->max_memory: layers in consecutive
// groups, one calibration pass each (through the group's last block only),
// each group split into experts and its statistics freed before the next;
// the neurons are reordered after all groups, so the result equals the
// one-pass run's. bytes: the most the statistics use at once (0 when the
// split needs none or they come from a file).
typedef struct {
    int n_groups;
    int *group_first; // (n_groups + 1)
    int64_t bytes, bytes_one_pass, bytes_min;
} kf_moefy_plan;

// Fails with one line naming the bytes needed when one layer does not fit.
kf_status kf_moefy_plan_make(const kf_model *m, const kf_moefy_opts *o, kf_moefy_plan *p, kf_error *err);
void kf_moefy_plan_free(kf_moefy_plan *p);

// ids (n_ids): calibration tokens. The model must be dense; on failure it may
// be partly reordered (still equal to the original as a dense model).
kf_status kf_moefy_run(kf_model *m, const int32_t *ids, int64_t n_ids, int bos_id, const kf_moefy_opts *o,
                       kf_moefy_report *rep, kf_error *err);

#endif
