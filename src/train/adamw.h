// AdamW (Loshchilov & Hutter 2019) over a list of parameters, the learning
// rate schedule (linear warm-up, then cosine decay to a floor) and global
// gradient-norm clipping. Deterministic: element-wise updates, sums in a
// fixed order.
#ifndef KF_TRAIN_ADAMW_H
#define KF_TRAIN_ADAMW_H

#include <stdint.h>

#include "core/status.h"
#include "train/train.h"

typedef struct {
    float beta1, beta2, eps;
    float weight_decay; // decoupled, on parameters with decay set
} kf_adamw_opts;

kf_adamw_opts kf_adamw_defaults(void); // 0.9, 0.999, 1e-8, no decay

typedef struct kf_adamw kf_adamw;

// Moments (zero) for the n parameters, in one allocation.
kf_status kf_adamw_init(kf_adamw **out, const kf_param *params, int n, const kf_adamw_opts *o, kf_error *err);
void kf_adamw_free(kf_adamw *a);
// One update with learning rate lr: m = b1 m + (1 - b1) g, v = b2 v + (1 - b2) g^2,
// w -= lr (m_hat / (sqrt(v_hat) + eps) + wd w) with bias-corrected moments.
void kf_adamw_step(kf_adamw *a, kf_param *params, int n, float lr);
// Steps taken so far (bias correction), and access to the moments (checkpoints).
int64_t kf_adamw_t(const kf_adamw *a);
void kf_adamw_set_t(kf_adamw *a, int64_t t);
float *kf_adamw_m(kf_adamw *a, int i);
float *kf_adamw_v(kf_adamw *a, int i);

// Learning rate at step s (0-based) of total: lr (s + 1) / warmup during the
// warm-up, then min + (lr - min) (1 + cos(pi p)) / 2 with p the share of the
// decay done, min = lr * min_ratio.
float kf_lr_schedule(int64_t s, int64_t total, int64_t warmup, float lr, float min_ratio);

// Euclidean norm of all gradients together (double sum, parameters in order).
double kf_grad_norm(const kf_param *params, int n);
// Scales every gradient by max_norm / norm when the norm exceeds max_norm
// (max_norm <= 0: no clipping). Returns the norm before clipping.
double kf_grad_clip(kf_param *params, int n, double max_norm);

#endif
