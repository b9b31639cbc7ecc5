// Task files (probe issue, docs/tasks.md) as datasets of kfuse specialise.
//
// A task dataset has a training part and an evaluation part (sentence
// ranges of encoded task files, task/encode.h). On the training part the
// FFN activations give each neuron's importance (importance.h, chunk of
// sentence s = (s - s0) * n_chunk / (s1 - s0), BOS rows excluded) and the
// residual stream leaving the last block, at each item's last sub-word
// (Dalvi et al.'s feature), trains a linear probe once: features z-scored
// with the training mean and deviation, then multinomial logistic regression
// (probe/logreg.h, Dalvi's l1 = l2 = 1e-5). The task's "loss" is that fixed
// probe's error rate (or cross-entropy) on the evaluation part's features,
// extracted again with the chosen neurons removed.
#ifndef KF_SPECIALISE_TASK_H
#define KF_SPECIALISE_TASK_H

#include <stdint.h>

#include "core/status.h"
#include "model/model.h"
#include "probe/logreg.h"
#include "specialise/ablate.h"
#include "specialise/importance.h"
#include "task/encode.h"

// Sentences [s0, s1) of tok, and the label (y indexed by tok's item) of each item.
typedef struct {
    const kf_task_tokens *tok;
    const int32_t *y; // (tok->n_items)
    int s0, s1;
} kf_spec_task_part;

typedef struct {
    kf_spec_task_part train, eval;
    int n_labels;
} kf_spec_task;

typedef enum { KF_SPEC_TASK_ERROR = 0, KF_SPEC_TASK_XENT } kf_spec_task_loss;

// "error", "xent" -> kind; -1 when unknown.
int kf_spec_task_loss_parse(const char *s);
const char *kf_spec_task_loss_name(kf_spec_task_loss k);

// Items of a part, and its tokens with BOS rows left out.
int64_t kf_spec_part_items(const kf_spec_task_part *p);
int64_t kf_spec_part_tokens(const kf_spec_task_part *p);

// Runs the sentences of p through m (in order of length, 1024 rows per
// forward call, padded on the right), with mask's neurons zeroed (NULL:
// none). acts non-NULL: adds every FFN layer's activations of the real
// tokens into it (its n_chunk chunks over the part's sentences). feats
// non-NULL: (items of p, n_embd) the last block's output at each item's last
// sub-word, row i for the part's item i.
kf_status kf_spec_task_run(const kf_model *m, const kf_spec_task_part *p, const kf_spec_mask *mask, kf_spec_acts *acts,
                           float *feats, kf_error *err);

typedef struct {
    kf_logreg lr;
    int dim;
    float *mean, *inv_sd; // (dim) z-scoring of the features
} kf_spec_probe;

// Trains the probe on feats (n, dim), labels y in [0, K); feats are z-scored
// in place. opts NULL: kf_logreg_defaults() (Dalvi's penalty, 500 iterations).
kf_status kf_spec_probe_train(kf_spec_probe *pr, float *feats, const int32_t *y, int64_t n, int dim, int K,
                              const kf_logreg_opts *opts, kf_error *err);
// Error rate or mean cross-entropy (nats) of the probe on feats (n, dim),
// which are z-scored in place.
double kf_spec_probe_loss(const kf_spec_probe *pr, float *feats, const int32_t *y, int64_t n, kf_spec_task_loss kind);
void kf_spec_probe_free(kf_spec_probe *pr);

// First-order estimate of the increase of the probe's mean cross-entropy L
// on part p (features: the last block's output at each item's last sub-word,
// as kf_spec_task_run's) when each FFN neuron is zeroed: fo_j = -sum over
// p's tokens of a_j dL/da_j, flat over layers as importance.h, (sum F_l).
// One forward and one backward of src/train per batch (sentences by length,
// in buckets of T = a power of two, 1024 / T sequences), the backward
// starting from dL/dx at the item rows; loss: L of the model as it is.
// m's weights are copied into memory and its w_down converted to F32
// (as kf_spec_first_order).
kf_status kf_spec_task_first_order(kf_model *m, const kf_spec_task_part *p, const kf_spec_probe *pr, double *fo,
                                   double *loss, kf_error *err);

#endif
