// First-order ablation estimate of every FFN neuron for a task probe (task.h).
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "specialise/task.h"
#include "train/train.h"

static int sent_len(const kf_task_tokens *t, int s) { return (int)(t->tok_off[s + 1] - t->tok_off[s]); }

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

// Rows of one training batch: sequences of T tokens, B of them.
enum { FO_ROWS = 1024, FO_MIN_T = 16 };

// d L / d x at the item rows of one batch (dx (B*T, C), zeroed before) and
// L's share of those items; L = (1/n) sum_i -log softmax(W z_i + b)[y_i],
// z = (x - mean) inv_sd. p (K) is scratch.
static double probe_grad(const kf_spec_probe *pr, const kf_spec_task_part *p, const float *x, const int32_t *sent,
                         int B, int T, double n, float *dx, double *p_k) {
    const kf_task_tokens *t = p->tok;
    const int K = pr->lr.n_classes, C = pr->dim;
    double loss = 0;
    for (int b = 0; b < B; b++) {
        const int s = sent[b];
        if (s < 0) continue; // padding sequence of a partial batch
        for (int64_t i = t->item_off[s]; i < t->item_off[s + 1]; i++) {
            const int64_t r = (int64_t)b * T + t->span[2 * i + 1] - 1; // the item's last sub-word
            const float *xr = x + r * C;
            double zmax = -INFINITY;
            for (int k = 0; k < K; k++) {
                const float *w = pr->lr.w + (int64_t)k * C;
                double z = pr->lr.b[k];
                for (int c = 0; c < C; c++) z += (double)w[c] * ((xr[c] - pr->mean[c]) * pr->inv_sd[c]);
                p_k[k] = z;
                if (z > zmax) zmax = z;
            }
            double se = 0;
            for (int k = 0; k < K; k++) se += (p_k[k] = exp(p_k[k] - zmax));
            const int y = p->y[i];
            loss += -log(p_k[y] / se);
            float *dr = dx + r * C;
            for (int k = 0; k < K; k++) {
                const double g = (p_k[k] / se - (k == y)) / n;
                if (g == 0) continue;
                const float *w = pr->lr.w + (int64_t)k * C;
                for (int c = 0; c < C; c++) dr[c] += (float)(g * w[c] * pr->inv_sd[c]);
            }
        }
    }
    return loss / n;
}

kf_status kf_spec_task_first_order(kf_model *m, const kf_spec_task_part *p, const kf_spec_probe *pr, double *fo,
                                   double *loss, kf_error *err) {
    const kf_task_tokens *t = p->tok;
    const int n_sent = p->s1 - p->s0, C = m->n_embd;
    if (n_sent < 1) return kf_error_set(err, KF_ERR_ARG, "first-order: a task part without sentences");
    if (pr->dim != C) return kf_error_set(err, KF_ERR_ARG, "first-order: a probe of %d features, the model has %d", pr->dim, C);
    kf_status s = KF_OK;
    for (int l = 0; s == KF_OK && l < m->n_layer; l++) s = kf_model_tensor_to_f32(m, &m->layers[l].w_down, err);
    if (s != KF_OK) return s;
    int64_t n_ff = 0;
    for (int l = 0; l < m->n_layer; l++) n_ff += m->layers[l].n_ff;
    memset(fo, 0, sizeof *fo * (size_t)n_ff);
    const double n = (double)kf_spec_part_items(p);
    const int K = pr->lr.n_classes;
    const int t_cap = m->n_ctx_train > 0 ? m->n_ctx_train : 1 << 20;
    int64_t *order = malloc(sizeof *order * (size_t)n_sent);
    int32_t *tokens = NULL, *sent = malloc(sizeof *sent * FO_ROWS);
    double *p_k = malloc(sizeof *p_k * (size_t)K);
    float *dx = NULL;
    if (!order || !sent || !p_k) s = kf_error_set(err, KF_ERR_NOMEM, "first-order: out of memory");
    // by length, so that sentences of one length bucket share a batch shape
    for (int i = 0; s == KF_OK && i < n_sent; i++) order[i] = (int64_t)sent_len(t, p->s0 + i) << 32 | (p->s0 + i);
    if (s == KF_OK) qsort(order, (size_t)n_sent, sizeof *order, cmp_i64);
    *loss = 0;
    // One training pass per bucket of T = the next power of two of the lengths (capped at the model's positions).
    for (int next = 0; s == KF_OK && next < n_sent;) {
        const int len0 = (int)(order[next] >> 32);
        int T = FO_MIN_T;
        while (T < len0) T *= 2;
        if (T > t_cap) T = len0 > t_cap ? len0 : t_cap;
        const int B = T >= FO_ROWS ? 1 : FO_ROWS / T;
        int end = next;
        while (end < n_sent && (int)(order[end] >> 32) <= T) end++;
        kf_train *tr = NULL;
        kf_train_opts to = {.mode = KF_TRAIN_FFN};
        if ((s = kf_train_init(&tr, m, B, T, &to, err)) != KF_OK) break;
        float *d = realloc(dx, sizeof *dx * (size_t)B * T * C);
        int32_t *tk = realloc(tokens, sizeof *tokens * (size_t)B * T);
        if (!d || !tk) {
            if (d) dx = d;
            if (tk) tokens = tk;
            kf_train_free(tr);
            s = kf_error_set(err, KF_ERR_NOMEM, "first-order: out of memory for a batch of %d x %d", B, T);
            break;
        }
        dx = d, tokens = tk;
        kf_train_zero_grad(tr);
        for (; s == KF_OK && next < end; next = next + B < end ? next + B : end) {
            for (int b = 0; b < B; b++) {
                // a partial batch repeats its first sentence, with no gradient
                const bool real = next + b < end;
                const int sn = (int)(order[real ? next + b : next] & 0xFFFFFFFF), len = sent_len(t, sn);
                sent[b] = real ? sn : -1;
                memcpy(tokens + (int64_t)b * T, t->tokens + t->tok_off[sn], sizeof *tokens * (size_t)len);
                for (int q = len; q < T; q++) tokens[(int64_t)b * T + q] = t->tokens[t->tok_off[sn]];
            }
            if ((s = kf_train_forward(tr, tokens, err)) != KF_OK) break;
            memset(dx, 0, sizeof *dx * (size_t)B * T * C);
            *loss += probe_grad(pr, p, kf_train_hidden(tr), sent, B, T, n, dx, p_k);
            kf_train_backward_hidden(tr, dx);
        }
        if (s == KF_OK) {
            // fo_j = -sum_tokens a_j dL/da_j = -sum_c w_down[c, j] dL/dw_down[c, j]; w_down (C, F)
            const kf_model *g = kf_train_grads(tr);
            for (int l = 0, off = 0; l < m->n_layer; off += m->layers[l].n_ff, l++) {
                const int F = m->layers[l].n_ff;
                const float *wd = m->layers[l].w_down.data, *gd = g->layers[l].w_down.data;
                for (int j = 0; j < F; j++) {
                    double acc = 0;
                    for (int c = 0; c < C; c++) acc += (double)wd[(int64_t)c * F + j] * gd[(int64_t)c * F + j];
                    fo[off + j] -= acc;
                }
            }
        }
        kf_train_free(tr);
    }
    free(order), free(tokens), free(sent), free(p_k), free(dx);
    return s;
}
