// The small classifier of a probe run, exported beside the model truncated
// after the last layer LayerSelector kept (`kfuse probe --export DIR`,
// `kfuse classify DIR`; docs/probe-export.md).
//
// A classifier is the final probe of Dalvi's pipeline: feature columns cols
// (in the full model's feature layout, which the truncated model shares for
// the blocks it keeps), the training rows' mean and 1/std of each, and the
// multinomial logistic regression on the standardised columns. Prediction
// standardises exactly as the probe did ((float)((x - mean) * inv_std) in
// double) so that the same features give the same predictions.
#ifndef KF_PROBE_CLASSIFIER_H
#define KF_PROBE_CLASSIFIER_H

#include <stdbool.h>
#include <stdint.h>

#include "core/status.h"
#include "model/model.h"
#include "probe/features.h"
#include "probe/logreg.h"
#include "task/task.h"

// Largest --random-init seed a classifier (and probe.json) records exactly (JSON numbers are doubles).
#define KF_CLASSIFIER_MAX_SEED (1L << 53)

typedef struct {
    char task[64];            // "conllu:UPOS", "tsv:label"
    kf_task_kind kind;
    char text_column[64];     // sentence tasks
    kf_feat_kind features;
    kf_feat_agg agg;
    bool f16;                 // the probe's features were stored as f16 (rounded the same way here)
    int batch_tokens;         // the probe's extraction batches (same batches, same sums)
    kf_label_set labels;      // (K) in the probe's order
    int n_layer_full;         // layers of the model probed
    int n_layer_kept;         // layers of the exported model
    int ls_blocks;            // feature blocks LayerSelector kept
    bool random_init;         // the probed model was re-initialised (probe --random-init init_seed):
    uint64_t init_seed;       // the full model for a comparison is re-initialised the same way
    int n_cols;
    int64_t *cols;            // (n_cols) feature columns
    double *mean, *inv_std;   // (n_cols)
    kf_logreg lr;             // (K, n_cols)
    double probe_dev_acc, probe_test_acc; // the probe's final accuracies (probe.json)
} kf_classifier;

// Layers a model must keep for features of blocks 0 .. ls_blocks-1:
// residual block b leaves layer b-1 (block 0 = embeddings; at least one layer
// is kept, as a model needs one), FFN block b is layer b.
int kf_classifier_layers_needed(kf_feat_kind kind, int ls_blocks);

// Cuts m to its first n_layer layers (1 <= n_layer <= m->n_layer); the
// final norm and LM head stay, so the result is an ordinary model.
kf_status kf_model_truncate(kf_model *m, int n_layer, kf_error *err);

// Writes c as JSON (schema "kfuse-classifier/1"; temp-and-rename).
kf_status kf_classifier_write(const kf_classifier *c, const char *path, kf_error *err);
// Reads and checks a classifier file; errors name the file and the problem.
kf_status kf_classifier_read(kf_classifier *c, const char *path, kf_error *err);
void kf_classifier_free(kf_classifier *c);

// pred (x->n_rows) for the rows of x, a feature file of a model whose
// layout has at least the classifier's columns.
kf_status kf_classifier_predict(const kf_classifier *c, const kf_features *x, int32_t *pred, kf_error *err);



// Task scores of m's FFN neurons from a probe folder.
// KF_TASK_SCORE_WEIGHT (`kfuse probe MODEL --features ffn -o DIR`, with or
// without --blocks-only): neuron j of layer l scores sum_k |W_kj| of layer
// l's probe (DIR/block_weights.npy, (K, sum F_l); the probes' features are
// standardised, so the weights of one layer are comparable); DIR/probe.json
// must say features "ffn". KF_TASK_SCORE_ABLATION (`kfuse probe ...
// --ablation -o DIR`, any features): the first-order estimate of the task
// probe's loss increase when the neuron is zeroed (DIR/ablation_scores.npy,
// (1, sum F_l)). DIR/probe.json must give m's layer count, the scores m's FFN
// widths. scores: (n_layer) malloc'd arrays of F_l, freed with kf_task_scores_free.
typedef enum { KF_TASK_SCORE_WEIGHT = 0, KF_TASK_SCORE_ABLATION } kf_task_score;
kf_status kf_task_scores_read(const char *dir, kf_task_score kind, const kf_model *m, double ***scores, kf_error *err);
void kf_task_scores_free(double **scores, int n_layer);
#endif
