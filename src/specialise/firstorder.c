// First-order estimate of every neuron's ablation cost from one backward
// pass of src/train (ablate.h).
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "specialise/ablate.h"
#include "train/ops.h"
#include "train/train.h"

kf_status kf_spec_first_order(kf_model *m, const int32_t *ids, int64_t n_ids, const kf_calib_protocol *p, double *fo,
                              kf_error *err) {
    kf_status s = kf_calib_check(p, m, n_ids, "specialise", err);
    if (s != KF_OK) return s;
    for (int l = 0; l < m->n_layer; l++)
        if ((s = kf_model_tensor_to_f32(m, &m->layers[l].w_down, err)) != KF_OK) return s;
    const int64_t W = kf_calib_n_windows(p, n_ids);
    const int T = p->ctx, B = (int)(W < p->batch ? W : p->batch), V = m->n_vocab;
    kf_train_opts to = {.mode = KF_TRAIN_FFN};
    kf_train *t;
    if ((s = kf_train_init(&t, m, B, T, &to, err)) != KF_OK) return s;
    int32_t *tokens = malloc(sizeof *tokens * (size_t)B * T), *targets = malloc(sizeof *targets * (size_t)B * T);
    if (!tokens || !targets) s = kf_error_set(err, KF_ERR_NOMEM, "specialise: out of memory for the gradient pass");
    // L = mean NLL over every scored position of every window
    const double n_div = (double)W * (T - 1);
    kf_train_zero_grad(t);
    for (int64_t w0 = 0; s == KF_OK && w0 < W; w0 += B) {
        // a last, partial batch repeats its first window, unscored
        for (int b = 0; b < B; b++) {
            const int64_t w = w0 + b < W ? w0 + b : w0;
            memcpy(tokens + (int64_t)b * T, ids + w * T, sizeof *tokens * (size_t)T);
            if (p->bos_id >= 0) tokens[(int64_t)b * T] = p->bos_id;
            for (int i = 0; i < T; i++)
                targets[(int64_t)b * T + i] = w0 + b < W && i + 1 < T ? tokens[(int64_t)b * T + i + 1] : -1;
        }
        if ((s = kf_train_forward(t, tokens, err)) != KF_OK) break;
        kf_train_distill_loss(kf_train_dlogits(t), kf_train_logits(t), NULL, targets, 0.0f, 1.0f, n_div, B * T, V, NULL,
                              NULL);
        kf_train_backward(t);
    }
    if (s == KF_OK) {
        const kf_model *g = kf_train_grads(t);
        int64_t off = 0;
        for (int l = 0; l < m->n_layer; l++) {
            // w_down, its gradient: (C, F)
            const int F = m->layers[l].n_ff, C = m->n_embd;
            const float *wd = m->layers[l].w_down.data, *gd = g->layers[l].w_down.data;
            for (int j = 0; j < F; j++) {
                double acc = 0;
                for (int c = 0; c < C; c++) acc += (double)wd[(int64_t)c * F + j] * gd[(int64_t)c * F + j];
                fo[off + j] = -acc;
            }
            off += F;
        }
    }
    free(tokens), free(targets);
    kf_train_free(t);
    return s;
}
