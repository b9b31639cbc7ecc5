// Resumable checkpoints of a recovery run (recover.h): the trainable
// parameters, AdamW's moments and step count, the data sampler's random
// state and the curves so far, so that a resumed run continues exactly where
// the saved one was (bit for bit at one thread).
//
// A checkpoint folder holds
//   latest                   the step of the newest complete checkpoint (text)
//   step-<S>.safetensors     F32 tensors w.<param>, m.<param>, v.<param>
//   step-<S>.json            {"step", "adam_t", "rng": [4 hex words], "run": {fingerprint},
//                             "loss", "kl", "ce", "grad_norm", "lr": [S values],
//                             "evals": [{"step", "kl_mean", "n_scored"}], "seconds": {...}}
// `latest` is replaced only after both files of a step are complete, and the
// older pair is removed after that, so an interrupted save leaves the last
// complete checkpoint in place.
#ifndef KF_TRAIN_CHECKPOINT_H
#define KF_TRAIN_CHECKPOINT_H

#include <stdbool.h>
#include <stdint.h>

#include "core/rng.h"
#include "core/status.h"
#include "train/adamw.h"
#include "train/recover.h"
#include "train/train.h"

// What must be equal for a checkpoint to be resumed: the run's shape and
// schedule, and the training text (its length and a hash of its ids).
typedef struct {
    int64_t steps, n_ids;
    uint64_t ids_hash;
    int batch, ctx;
    float lr, min_lr_ratio, warmup_share, clip, kl_weight, ce_weight;
    uint64_t seed;
} kf_ckpt_run;

// FNV-1a over the ids' bytes.
uint64_t kf_ckpt_hash_ids(const int32_t *ids, int64_t n);

// Writes the state after `step` steps (r holds the curves of steps
// 0..step-1 and the evaluations so far).
kf_status kf_ckpt_save(const char *dir, const kf_ckpt_run *run, int64_t step, const kf_param *ps, int n_ps,
                       kf_adamw *opt, const kf_rng *rng, const kf_recover_result *r, kf_error *err);
// The step of dir's newest checkpoint, or 0 when dir holds none.
kf_status kf_ckpt_latest(const char *dir, int64_t *step, kf_error *err);
// Restores the newest checkpoint into ps, opt, rng and r (whose arrays are
// allocated for run->steps entries); fails naming the file and the field
// when it belongs to another run or another set of parameters. *step
// receives the steps done.
kf_status kf_ckpt_load(const char *dir, const kf_ckpt_run *run, kf_param *ps, int n_ps, kf_adamw *opt,
                       kf_rng *rng, kf_recover_result *r, int n_evals_max, int64_t *step, kf_error *err);

#endif
