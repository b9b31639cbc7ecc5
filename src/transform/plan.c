// Planning (compress.h, compress_internal.h): the new FFN of one layer
// (kf_cmp_plan_layer), the greedy width allocation across layers for a
// parameter target, and the search for the smallest target within a
// perplexity increase.
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "eval/perplexity.h"
#include "io/load.h"
#include "transform/compress_internal.h"
#include "transform/refit.h"

#define N_STEPS 16 // allocation grid: widths F*j/16

// The new layer as "neurons idx (k) + down projection w_new (C,k)", without
// touching the model. k_want > 0 gives the width; else t (fold) gives the cut.
// idx and w_new hold F and C*F entries. rel_err is NaN without statistics;
// abs_err (may be NULL) gets E||delta FFN out||^2 when they are given.
kf_status kf_cmp_plan_layer(const kf_model *m, int l, const kf_cmp_stats *ls, const kf_compress_opts *o,
                            int k_want, double t, int *idx, float *w_new, int *k_out, double *t_cut, double *rel_err,
                            double *abs_err, kf_error *err) {
    const kf_layer *ly = &m->layers[l];
    const int F = ly->n_ff, C = m->n_embd;
    int k = k_want;
    *t_cut = NAN;
    *rel_err = NAN;
    int32_t *labels = NULL;
    int *reps = NULL;
    double *score = NULL, *G = NULL, *X = NULL;
    kf_status s = KF_OK;
    if (o->method == KF_CMP_FOLD) {
        labels = malloc(sizeof *labels * (size_t)F);
        reps = malloc(sizeof *reps * (size_t)F);
        if (!labels || !reps) {
            s = kf_error_set(err, KF_ERR_NOMEM, "fold: out of memory for layer %d", l);
            goto done;
        }
        if ((s = kf_cmp_fold_groups(m, l, ls, o, k_want, t, labels, reps, idx, &k, t_cut, err)) != KF_OK) goto done;
        kf_ffn_merge_down(m, l, ls->cov, labels, reps, k, w_new);
    } else {
        score = malloc(sizeof *score * (size_t)F);
        if (!score) {
            s = kf_error_set(err, KF_ERR_NOMEM, "prune: out of memory for layer %d", l);
            goto done;
        }
        kf_score_kind kind = o->method == KF_CMP_PRUNE_MAGNITUDE ? KF_SCORE_MAGNITUDE
                             : o->method == KF_CMP_PRUNE_WANDA   ? KF_SCORE_WANDA
                             : o->method == KF_CMP_PRUNE_ACT     ? KF_SCORE_ACT
                                                                 : KF_SCORE_RANDOM;
        if (o->method == KF_CMP_PRUNE_TASK) {
            if (!o->task_scores) {
                s = kf_error_set(err, KF_ERR_ARG, "prune-task: no task scores");
                goto done;
            }
            memcpy(score, o->task_scores[l], sizeof *score * (size_t)F);
        } else {
            kf_ffn_scores(m, l, kind, ls ? ls->sum_sq : NULL, ls ? ls->sum_abs : NULL, ls ? ls->n : 1, o->seed, score);
        }
        if ((s = kf_ffn_top_k(score, F, k, idx, err)) != KF_OK) goto done;
        for (int c = 0; c < C; c++)
            for (int i = 0; i < k; i++) w_new[(size_t)c * k + i] = ly->w_down.data[(size_t)c * F + idx[i]];
    }
    if (o->refit) {
        G = malloc(sizeof *G * (size_t)k * k);
        X = malloc(sizeof *X * (size_t)k * F);
        if (!G || !X) {
            s = kf_error_set(err, KF_ERR_NOMEM, "refit: out of memory for layer %d", l);
            goto done;
        }
        kf_refit_gather(ls->M, F, idx, k, G, X);
        const float *prior = kf_refit_centred(ls->n, k) ? w_new : NULL; // few tokens: stay at the merge off-sample
        if ((s = kf_refit_solve(G, X, k, F, ly->w_down.data, C, o->lambda_rel, prior, w_new, err)) != KF_OK) goto done;
    }
    if (ls) {
        double e, ref;
        if ((s = kf_ffn_error(ls->M, ls->n, ly->w_down.data, C, F, idx, k, w_new, &e, &ref, err)) != KF_OK) goto done;
        *rel_err = ref > 0 ? e / ref : 0;
        if (abs_err) *abs_err = e;
    }
    *k_out = k;
done:
    free(labels);
    free(reps);
    free(score);
    free(G);
    free(X);
    return s;
}

kf_status kf_compress_allocate(const kf_model *m, const int32_t *ids, int64_t n_ids, int bos_id,
                               const kf_compress_opts *o, int64_t target_params, int *widths, kf_error *err) {
    const int L = m->n_layer, C = m->n_embd;
    if (L < 1) return kf_error_set(err, KF_ERR_ARG, "compress: the model has no layers");
    int64_t params = kf_model_n_params(m), min_params = params;
    for (int l = 0; l < L; l++)
        min_params -= (int64_t)(m->layers[l].n_ff - (m->layers[l].n_ff + N_STEPS - 1) / N_STEPS) *
                      kf_compress_neuron_params(m, l);
    if (target_params < min_params)
        return kf_error_set(err, KF_ERR_ARG,
                            "compress: target of %lld parameters cannot be met: FFN narrowing to 1/%d reaches %lld of %lld",
                            (long long)target_params, N_STEPS, (long long)min_params, (long long)params);
    double *e = calloc((size_t)L * (N_STEPS + 1), sizeof *e);
    int *kk = calloc((size_t)L * (N_STEPS + 1), sizeof *kk), *j_cur = malloc(sizeof *j_cur * (size_t)L);
    kf_moments *own = calloc((size_t)L, sizeof *own);
    kf_moments **arr = calloc((size_t)L, sizeof *arr);
    int Fmax = 0;
    for (int l = 0; l < L; l++) Fmax = m->layers[l].n_ff > Fmax ? m->layers[l].n_ff : Fmax;
    int *idx = malloc(sizeof *idx * (size_t)Fmax);
    float *w_new = malloc(sizeof *w_new * (size_t)C * Fmax);
    kf_status s = KF_OK;
    if (!e || !kk || !j_cur || !own || !arr || !idx || !w_new) {
        s = kf_error_set(err, KF_ERR_NOMEM, "compress: out of memory for the allocation");
        goto done;
    }
    // Statistics of all layers of the original model in one pass.
    if (!o->stats) {
        for (int l = 0; l < L && s == KF_OK; l++) {
            s = kf_moments_init(&own[l], m->layers[l].n_ff, 0, 0.0f, err);
            arr[l] = &own[l];
        }
        if (s == KF_OK) s = kf_cmp_record_ffn(m, ids, n_ids, bos_id, o, arr, err);
    }
    for (int l = 0; l < L && s == KF_OK; l++) {
        if (o->progress) o->progress(o->progress_user, "allocate", l, L);
        const kf_moments *mo = arr[l];
        if (o->stats && (s = kf_cmp_layer_moments(m, l, NULL, 0, bos_id, o, NULL, NULL, &mo, err)) != KF_OK) break;
        kf_cmp_stats ls;
        if ((s = kf_cmp_stats_init(&ls, mo, o->method == KF_CMP_FOLD, l, err)) != KF_OK) break;
        const int F = m->layers[l].n_ff;
        if (o->method == KF_CMP_FOLD && o->group == KF_GROUP_LS) { // one greedy run serves every width
            const int k_min = (F + N_STEPS - 1) / N_STEPS;
            ls.n_removed = F - k_min;
            if (!(ls.ls_removed = malloc(sizeof *ls.ls_removed * (size_t)F)))
                s = kf_error_set(err, KF_ERR_NOMEM, "compress: out of memory for the allocation");
            if (s == KF_OK)
                s = kf_ffn_select_ls(ls.M, m->layers[l].w_down.data, C, F, k_min, o->lambda_rel, idx, NULL, NULL,
                                     ls.ls_removed, err);
            if (s != KF_OK) {
                kf_cmp_stats_free(&ls);
                break;
            }
        }
        for (int j = N_STEPS; j >= 1 && s == KF_OK; j--) {
            int k = (F * j + N_STEPS - 1) / N_STEPS, k_got;
            double t_cut, rel;
            kk[l * (N_STEPS + 1) + j] = k;
            if (j == N_STEPS) continue; // full width: no error
            s = kf_cmp_plan_layer(m, l, &ls, o, k, 0, idx, w_new, &k_got, &t_cut, &rel, &e[l * (N_STEPS + 1) + j],
                                  err);
        }
        kf_cmp_stats_free(&ls);
        j_cur[l] = N_STEPS;
    }
    // Greedy: the step with the least added error per parameter saved.
    while (s == KF_OK && params > target_params) {
        int best = -1;
        double best_r = INFINITY;
        for (int l = 0; l < L; l++) {
            int j = j_cur[l];
            if (j <= 1) continue;
            const int *kl = kk + l * (N_STEPS + 1);
            const double *el = e + l * (N_STEPS + 1);
            double r = (el[j - 1] - el[j]) / ((double)(kl[j] - kl[j - 1]) * (double)kf_compress_neuron_params(m, l));
            if (r < best_r) best_r = r, best = l;
        }
        if (best < 0) {
            s = kf_error_set(err, KF_ERR_ARG, "compress: target of %lld parameters cannot be met", (long long)target_params);
            break;
        }
        int j = j_cur[best]--;
        params -= (int64_t)(kk[best * (N_STEPS + 1) + j] - kk[best * (N_STEPS + 1) + j - 1]) *
                  kf_compress_neuron_params(m, best);
    }
    for (int l = 0; l < L && s == KF_OK; l++) widths[l] = kk[l * (N_STEPS + 1) + j_cur[l]];
done:
    for (int l = 0; l < L && own; l++) kf_moments_free(&own[l]);
    free(own);
    free(arr);
    free(e);
    free(kk);
    free(j_cur);
    free(idx);
    free(w_new);
    return s;
}

kf_status kf_compress_search(const char *path, const int32_t *cal, int64_t n_cal, const int32_t *val, int64_t n_val,
                             int bos_id, const kf_compress_opts *o, double max_inc, kf_compress_trial_fn on_trial,
                             void *user, kf_compress_search_result *res, kf_error *err) {
    memset(res, 0, sizeof *res);
    kf_model *m = NULL;
    kf_ppl_result r;
    kf_status s = kf_model_load(&m, path, err);
    if (s == KF_OK) s = kf_eval_perplexity(m, val, n_val, o->ctx, bos_id, &r, NULL, NULL, err);
    const int L = m ? m->n_layer : 0;
    const int64_t params0 = m ? kf_model_n_params(m) : 0;
    kf_model_free(m);
    if (s != KF_OK) return s;
    const double limit = r.ppl * (1 + max_inc / 100);
    res->ppl0 = r.ppl;
    int *widths = malloc(sizeof *widths * (size_t)L);
    if (!widths) return kf_error_set(err, KF_ERR_NOMEM, "compress: out of memory");
    double lo = 0.05, hi = 1, best = -1;
    for (int it = 0; it < 6 && s == KF_OK; it++) {
        double f = it == 0 ? 0.5 : 0.5 * (lo + hi);
        if ((s = kf_model_load(&m, path, err)) != KF_OK) break;
        kf_compress_opts t = *o;
        t.progress = NULL;
        kf_compress_report rep = {0};
        kf_error e_alloc; // a fraction the allocation cannot reach counts as too small
        bool ok = kf_compress_allocate(m, cal, n_cal, bos_id, &t, (int64_t)floor(f * (double)params0), widths,
                                       &e_alloc) == KF_OK;
        if (ok) {
            t.widths = widths;
            if ((s = kf_compress_run(m, cal, n_cal, bos_id, &t, &rep, err)) == KF_OK)
                s = kf_eval_perplexity(m, val, n_val, t.ctx, bos_id, &r, NULL, NULL, err);
            ok = s == KF_OK && r.ppl <= limit;
            if (s == KF_OK && on_trial) on_trial(user, f, r.ppl, limit);
        }
        if (ok) {
            best = f, hi = f;
            res->ppl = r.ppl;
        } else {
            lo = f;
        }
        kf_compress_report_free(&rep);
        kf_model_free(m);
        m = NULL;
    }
    free(widths);
    if (s != KF_OK) return s;
    if (best < 0)
        return kf_error_set(err, KF_ERR_ARG,
                            "compress: --max-ppl-increase %g%% cannot be met: keeping %.3f of the parameters already "
                            "exceeds ppl %.3f on the validation windows",
                            max_inc, hi, limit);
    res->keep = best;
    return KF_OK;
}
