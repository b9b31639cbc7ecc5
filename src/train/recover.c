// The recovery loop (recover.h).
#include "train/recover.h"

#include <stdlib.h>
#include <string.h>

#include "core/progress.h"
#include "core/rng.h"
#include "eval/compare.h"
#include "train/checkpoint.h"
#include "train/ops.h"

kf_recover_opts kf_recover_defaults(void) {
    return (kf_recover_opts){.steps = 100,
                             .lr = 1e-3f,
                             .min_lr_ratio = 0.1f,
                             .warmup_share = 0.05f,
                             .clip = 1.0f,
                             .kl_weight = 1.0f,
                             .ce_weight = 0.0f,
                             .adamw = kf_adamw_defaults(),
                             .seed = 1,
                             .bos_id = -1};
}

void kf_recover_result_free(kf_recover_result *r) {
    free(r->loss);
    free(r->kl);
    free(r->ce);
    free(r->grad_norm);
    free(r->lr);
    free(r->evals);
    memset(r, 0, sizeof *r);
}

// Held-out mean KL over the second half of each whole-batch window (recover.h).
static kf_status eval_kl(kf_train *t, kf_ctx *tc, const kf_recover_opts *o, int32_t *tokens, float *teacher,
                         int V, kf_recover_eval *e, kf_error *err) {
    int B, T;
    kf_train_shape(t, &B, &T);
    int64_t n_win = o->n_eval_ids / T;
    if (o->eval_windows > 0 && n_win > o->eval_windows) n_win = o->eval_windows;
    n_win -= n_win % B;
    double kl = 0.0;
    int64_t n = 0;
    for (int64_t w0 = 0; w0 < n_win; w0 += B) {
        memcpy(tokens, o->eval_ids + w0 * T, sizeof(int32_t) * (size_t)B * T);
        if (o->bos_id >= 0)
            for (int b = 0; b < B; b++) tokens[b * T] = o->bos_id;
        kf_status s = kf_forward_prefill(tc, tokens, B, T, teacher, err);
        if (s == KF_OK) s = kf_train_forward(t, tokens, err);
        if (s != KF_OK) return s;
        const float *logits = kf_train_logits(t);
        for (int b = 0; b < B; b++)
            for (int j = T / 2; j < T - 1; j++) {
                const int64_t r = (int64_t)b * T + j;
                kl += kf_kl_logits(teacher + r * V, logits + r * V, V);
                n++;
            }
    }
    e->kl_mean = n ? kl / (double)n : 0.0;
    e->n_scored = n;
    return KF_OK;
}

kf_status kf_recover_run(kf_train *t, const kf_model *student, const kf_model *teacher, const int32_t *ids,
                         int64_t n_ids, const kf_recover_opts *o, kf_recover_progress progress, void *user,
                         kf_recover_result *r, kf_error *err) {
    memset(r, 0, sizeof *r);
    int B, T;
    kf_train_shape(t, &B, &T);
    const int N = B * T, V = student->n_vocab;
    if (teacher->n_vocab != V)
        return kf_error_set(err, KF_ERR_ARG, "recover: vocabularies differ (student %d, teacher %d)", V,
                            teacher->n_vocab);
    if (n_ids < T + 1)
        return kf_error_set(err, KF_ERR_ARG, "recover: %lld training tokens do not fill one window of %d",
                            (long long)n_ids, T + 1);
    if (o->steps < 1) return kf_error_set(err, KF_ERR_ARG, "recover: %lld steps", (long long)o->steps);
    const int n_evals_max = 2 + (o->eval_ids && o->eval_every > 0 ? (int)(o->steps / o->eval_every) : 0);
    r->loss = calloc((size_t)o->steps, sizeof *r->loss);
    r->kl = calloc((size_t)o->steps, sizeof *r->kl);
    r->ce = calloc((size_t)o->steps, sizeof *r->ce);
    r->grad_norm = calloc((size_t)o->steps, sizeof *r->grad_norm);
    r->lr = calloc((size_t)o->steps, sizeof *r->lr);
    r->evals = calloc((size_t)n_evals_max, sizeof *r->evals);
    int32_t *tokens = malloc(sizeof(int32_t) * (size_t)N), *targets = malloc(sizeof(int32_t) * (size_t)N);
    float *tlogits = malloc(sizeof(float) * (size_t)N * V);
    kf_ctx *tc = NULL;
    kf_adamw *opt = NULL;
    kf_status s = KF_OK;
    if (!r->loss || !r->kl || !r->ce || !r->grad_norm || !r->lr || !r->evals || !tokens || !targets || !tlogits) {
        s = kf_error_set(err, KF_ERR_NOMEM, "recover: out of memory");
        goto done;
    }
    if ((s = kf_ctx_init(&tc, teacher, N, 0, err)) != KF_OK) goto done;
    int n_params;
    kf_param *params = kf_train_params(t, &n_params);
    if ((s = kf_adamw_init(&opt, params, n_params, &o->adamw, err)) != KF_OK) goto done;

    kf_rng rng;
    kf_rng_seed(&rng, o->seed);
    const kf_ckpt_run run = {.steps = o->steps, .n_ids = n_ids, .ids_hash = kf_ckpt_hash_ids(ids, n_ids), .batch = B,
                             .ctx = T, .lr = o->lr, .min_lr_ratio = o->min_lr_ratio, .warmup_share = o->warmup_share,
                             .clip = o->clip, .kl_weight = o->kl_weight, .ce_weight = o->ce_weight, .seed = o->seed};
    int64_t step0 = 0;
    if (o->checkpoint_dir && o->resume) {
        if ((s = kf_ckpt_load(o->checkpoint_dir, &run, params, n_params, opt, &rng, r, n_evals_max, &step0, err)) !=
            KF_OK)
            goto done;
    } else if (o->eval_ids) {
        r->evals[0].step = 0;
        if ((s = eval_kl(t, tc, o, tokens, tlogits, V, &r->evals[r->n_evals++], err)) != KF_OK) goto done;
    }
    const int64_t warmup = (int64_t)(o->warmup_share * (double)o->steps);
    const double t0 = kf_time_now();
    for (int64_t step = step0; step < o->steps; step++) {
        // batch: B windows of T + 1 ids at random offsets; targets are the next ids
        for (int b = 0; b < B; b++) {
            const int64_t start = (int64_t)(kf_rng_uniform(&rng) * (double)(n_ids - T));
            memcpy(tokens + b * T, ids + start, sizeof(int32_t) * (size_t)T);
            memcpy(targets + b * T, ids + start + 1, sizeof(int32_t) * (size_t)T);
            if (o->bos_id >= 0) tokens[b * T] = o->bos_id;
        }
        double ta = kf_time_now();
        if ((s = kf_forward_prefill(tc, tokens, B, T, tlogits, err)) != KF_OK) goto done;
        double tb = kf_time_now();
        if ((s = kf_train_forward(t, tokens, err)) != KF_OK) goto done;
        double tc_ = kf_time_now();
        kf_train_zero_grad(t);
        double kl_sum, ce_sum;
        const double loss = kf_train_distill_loss(kf_train_dlogits(t), kf_train_logits(t), tlogits, targets,
                                                  o->kl_weight, o->ce_weight, N, N, V, &kl_sum, &ce_sum);
        double td = kf_time_now();
        kf_train_backward(t);
        double te = kf_time_now();
        r->grad_norm[step] = kf_grad_clip(params, n_params, o->clip);
        const float lr = kf_lr_schedule(step, o->steps, warmup, o->lr, o->min_lr_ratio);
        kf_adamw_step(opt, params, n_params, lr);
        double tf = kf_time_now();
        r->t_teacher += tb - ta, r->t_forward += tc_ - tb, r->t_loss += td - tc_, r->t_backward += te - td,
            r->t_update += tf - te;
        r->loss[step] = loss;
        r->kl[step] = kl_sum / N;
        r->ce[step] = ce_sum / N;
        r->lr[step] = lr;
        r->steps = step + 1;
        r->tokens += N;
        r->seconds = r->t_teacher + r->t_forward + r->t_loss + r->t_backward + r->t_update;
        if (o->eval_ids && o->eval_every > 0 && (step + 1) % o->eval_every == 0 && step + 1 < o->steps &&
            r->n_evals < n_evals_max - 1) {
            r->evals[r->n_evals].step = step + 1;
            if ((s = eval_kl(t, tc, o, tokens, tlogits, V, &r->evals[r->n_evals++], err)) != KF_OK) goto done;
        }
        if (o->checkpoint_dir && o->checkpoint_every > 0 && (step + 1) % o->checkpoint_every == 0 &&
            step + 1 < o->steps &&
            (s = kf_ckpt_save(o->checkpoint_dir, &run, step + 1, params, n_params, opt, &rng, r, err)) != KF_OK)
            goto done;
        if (progress) progress(user, step + 1, o->steps, loss, (r->tokens - step0 * N) / (kf_time_now() - t0));
    }
    if (o->eval_ids) {
        r->evals[r->n_evals].step = r->steps;
        if ((s = eval_kl(t, tc, o, tokens, tlogits, V, &r->evals[r->n_evals++], err)) != KF_OK) goto done;
    }
done:
    kf_adamw_free(opt);
    kf_ctx_free(tc);
    free(tokens);
    free(targets);
    free(tlogits);
    if (s != KF_OK) kf_recover_result_free(r);
    return s;
}
