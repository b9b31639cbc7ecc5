// Gradient-based recovery of a compressed model by distillation from its
// original (kfuse recover): each step draws `batch` windows of `ctx + 1`
// training ids at seeded random offsets (first id replaced by BOS, as the
// calibration protocol does), runs the teacher (kf_forward_prefill) and the
// student (kf_train_forward) on the first ctx ids, and minimises
//   kl_weight * mean KL(teacher || student) + ce_weight * mean CE(next id)
// over every position, with AdamW, linear warm-up + cosine decay and global
// gradient-norm clipping. Deterministic for a seed at a fixed thread count.
//
// Held-out KL during training (the recovery curve): windows of ctx ids of an
// evaluation text (BOS first), scored on the second half of each window as
// kfuse eval scores them, through the training forward (so LoRA adapters
// count before they are merged); whole batches of windows only.
#ifndef KF_TRAIN_RECOVER_H
#define KF_TRAIN_RECOVER_H

#include <stdbool.h>
#include <stdint.h>

#include "core/status.h"
#include "model/model.h"
#include "runtime/forward.h"
#include "train/adamw.h"
#include "train/train.h"

typedef struct {
    int64_t steps;
    float lr, min_lr_ratio, warmup_share, clip;
    float kl_weight, ce_weight;
    kf_adamw_opts adamw;
    uint64_t seed;
    int bos_id;             // < 0: windows as in the text
    int64_t eval_every;     // steps between held-out evaluations (0: only before and after)
    const int32_t *eval_ids; // evaluation text (NULL: none)
    int64_t n_eval_ids;
    int eval_windows;        // at most this many evaluation windows (0: all whole batches)
    const char *checkpoint_dir; // NULL: no checkpoints (train/checkpoint.h)
    int64_t checkpoint_every;   // steps between checkpoints
    bool resume;                // continue from checkpoint_dir's newest checkpoint
} kf_recover_opts;

kf_recover_opts kf_recover_defaults(void);

typedef struct {
    int64_t step;    // steps done when measured
    double kl_mean;  // held-out mean KL(teacher || student)
    int64_t n_scored;
} kf_recover_eval;

typedef struct {
    int64_t steps, tokens;       // done
    double *loss, *kl, *ce;      // per step: objective, mean KL, mean CE (malloc'd, steps entries)
    double *grad_norm, *lr;      // per step, before clipping
    kf_recover_eval *evals;      // n_evals entries (first before step 0, last after the final step)
    int n_evals;
    double seconds;              // wall time of the steps (evaluations excluded)
    double t_teacher, t_forward, t_loss, t_backward, t_update; // wall seconds of each part
} kf_recover_result;

void kf_recover_result_free(kf_recover_result *r);

typedef void (*kf_recover_progress)(void *user, int64_t step, int64_t steps, double loss, double tokens_per_s);

// Trains t's parameters (t made for student with batch B, ctx T) on ids.
// teacher must share the vocabulary. progress (may be NULL) after each step.
// With checkpoint_dir, the state is saved every checkpoint_every steps; with
// resume, the run continues from the newest one (which must belong to the
// same options and text) and ends as the uninterrupted run would have.
kf_status kf_recover_run(kf_train *t, const kf_model *student, const kf_model *teacher, const int32_t *ids,
                         int64_t n_ids, const kf_recover_opts *o, kf_recover_progress progress, void *user,
                         kf_recover_result *r, kf_error *err);

#endif
