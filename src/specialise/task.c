// Task datasets of kfuse specialise: activations, features, the probe (task.h).
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/forward.h"
#include "specialise/task.h"

int kf_spec_task_loss_parse(const char *s) {
    if (!strcmp(s, "error")) return KF_SPEC_TASK_ERROR;
    if (!strcmp(s, "xent")) return KF_SPEC_TASK_XENT;
    return -1;
}

const char *kf_spec_task_loss_name(kf_spec_task_loss k) { return k == KF_SPEC_TASK_XENT ? "xent" : "error"; }

int64_t kf_spec_part_items(const kf_spec_task_part *p) { return p->tok->item_off[p->s1] - p->tok->item_off[p->s0]; }

// First position of sentence s that is the text's (after BOS): its first item's start.
static int text_start(const kf_task_tokens *t, int s) { return t->span[2 * t->item_off[s]]; }

static int sent_len(const kf_task_tokens *t, int s) { return (int)(t->tok_off[s + 1] - t->tok_off[s]); }

int64_t kf_spec_part_tokens(const kf_spec_task_part *p) {
    int64_t n = 0;
    for (int s = p->s0; s < p->s1; s++) n += sent_len(p->tok, s) - text_start(p->tok, s);
    return n;
}

typedef struct {
    const kf_spec_task_part *p;
    const kf_spec_mask *mask;
    kf_spec_acts *acts;
    float *feats;
    int last, T, B;
    const int32_t *sent; // (B) sentence of each sequence of the call
} task_hook;

static int chunk_of(const task_hook *h, int s) {
    return (int)((int64_t)(s - h->p->s0) * h->acts->n_chunk / (h->p->s1 - h->p->s0));
}

static void on_hook(void *user, int layer, kf_hook_point point, float *x, int n, int dim) {
    task_hook *h = user;
    const kf_task_tokens *t = h->p->tok;
    if (point == KF_HOOK_FFN_ACT) {
        if (h->mask) {
            const int32_t *idx = h->mask->idx + h->mask->off[layer];
            for (int r = 0; r < n; r++)
                for (int i = 0; i < h->mask->n[layer]; i++) x[(int64_t)r * dim + idx[i]] = 0.0f;
        }
        if (h->acts)
            for (int b = 0; b < h->B; b++) {
                const int s = h->sent[b], t0 = text_start(t, s);
                kf_spec_acts_add(h->acts, layer, chunk_of(h, s), x + ((int64_t)b * h->T + t0) * dim, sent_len(t, s) - t0);
            }
        return;
    }
    if (point != KF_HOOK_BLOCK_OUT || layer != h->last || !h->feats) return;
    const int64_t first = t->item_off[h->p->s0];
    for (int b = 0; b < h->B; b++) {
        const int s = h->sent[b];
        for (int64_t k = t->item_off[s]; k < t->item_off[s + 1]; k++) {
            const int pos = t->span[2 * k + 1] - 1;
            memcpy(h->feats + (k - first) * dim, x + ((int64_t)b * h->T + pos) * dim, sizeof(float) * (size_t)dim);
        }
    }
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

kf_status kf_spec_task_run(const kf_model *m, const kf_spec_task_part *p, const kf_spec_mask *mask, kf_spec_acts *acts,
                           float *feats, kf_error *err) {
    const kf_task_tokens *t = p->tok;
    const int n_sent = p->s1 - p->s0;
    if (n_sent < 1) return kf_error_set(err, KF_ERR_ARG, "specialise: a task part without sentences");
    int bt = 1024;
    for (int s = p->s0; s < p->s1; s++)
        if (sent_len(t, s) > bt) bt = sent_len(t, s);
    int64_t *order = malloc(sizeof *order * (size_t)n_sent);
    int32_t *tokens = malloc(sizeof *tokens * (size_t)bt), *sent = malloc(sizeof *sent * (size_t)bt);
    kf_ctx *c = NULL;
    kf_status st = order && tokens && sent ? kf_ctx_init(&c, m, bt, 0, err)
                                           : kf_error_set(err, KF_ERR_NOMEM, "specialise: out of memory for a task batch");
    if (st == KF_OK) {
        // by length, then index, so that the sentences of one call pad little
        for (int s = 0; s < n_sent; s++) order[s] = (int64_t)sent_len(t, p->s0 + s) << 32 | (p->s0 + s);
        qsort(order, (size_t)n_sent, sizeof *order, cmp_i64);
        task_hook h = {.p = p, .mask = mask, .acts = acts, .feats = feats, .last = m->n_layer - 1, .sent = sent};
        kf_ctx_set_hook(c, on_hook, &h, (1u << KF_HOOK_FFN_ACT) | (1u << KF_HOOK_BLOCK_OUT));
        for (int next = 0; st == KF_OK && next < n_sent;) {
            int B = 0, T = 0;
            while (next + B < n_sent) {
                const int len = (int)(order[next + B] >> 32);
                if ((int64_t)(B + 1) * len > bt) break;
                T = len;
                B++;
            }
            for (int b = 0; b < B; b++) {
                const int s = (int)(order[next + b] & 0xFFFFFFFF), len = sent_len(t, s);
                sent[b] = s;
                memcpy(tokens + (int64_t)b * T, t->tokens + t->tok_off[s], sizeof *tokens * (size_t)len);
                for (int q = len; q < T; q++) tokens[(int64_t)b * T + q] = t->tokens[t->tok_off[s]];
                if (acts) kf_spec_acts_count(acts, chunk_of(&h, s), len - text_start(t, s));
            }
            h.B = B;
            h.T = T;
            st = kf_forward_prefill(c, tokens, B, T, NULL, err);
            next += B;
        }
    }
    kf_ctx_free(c);
    free(order), free(tokens), free(sent);
    return st;
}

static void zscore(const kf_spec_probe *pr, float *feats, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        for (int j = 0; j < pr->dim; j++) {
            float *v = feats + i * pr->dim + j;
            *v = (*v - pr->mean[j]) * pr->inv_sd[j];
        }
}

kf_status kf_spec_probe_train(kf_spec_probe *pr, float *feats, const int32_t *y, int64_t n, int dim, int K,
                              const kf_logreg_opts *opts, kf_error *err) {
    memset(pr, 0, sizeof *pr);
    pr->dim = dim;
    pr->mean = calloc((size_t)dim, sizeof(float));
    pr->inv_sd = calloc((size_t)dim, sizeof(float));
    if (!pr->mean || !pr->inv_sd) {
        kf_spec_probe_free(pr);
        return kf_error_set(err, KF_ERR_NOMEM, "specialise: out of memory for the probe");
    }
    for (int j = 0; j < dim; j++) {
        double s = 0, q = 0;
        for (int64_t i = 0; i < n; i++) s += feats[i * dim + j];
        const double mu = s / (double)n;
        for (int64_t i = 0; i < n; i++) q += (feats[i * dim + j] - mu) * (feats[i * dim + j] - mu);
        const double sd = sqrt(q / (double)n);
        pr->mean[j] = (float)mu;
        pr->inv_sd[j] = sd > 1e-6 ? (float)(1.0 / sd) : 0.0f;
    }
    zscore(pr, feats, n);
    kf_logreg_opts o = opts ? *opts : kf_logreg_defaults();
    kf_status s = kf_logreg_train(&pr->lr, feats, y, n, dim, K, &o, err);
    if (s != KF_OK) kf_spec_probe_free(pr);
    return s;
}

double kf_spec_probe_loss(const kf_spec_probe *pr, float *feats, const int32_t *y, int64_t n, kf_spec_task_loss kind) {
    zscore(pr, feats, n);
    const int K = pr->lr.n_classes, D = pr->dim;
    double sum = 0;
    for (int64_t i = 0; i < n; i++) {
        const float *x = feats + i * D;
        double zmax = -INFINITY, zy = 0, lse = 0;
        int best = 0;
        // z_k = w_k . x + b_k; the argmax (ties to the lower class) and log-sum-exp
        for (int pass = 0; pass < 2; pass++)
            for (int k = 0; k < K; k++) {
                double z = pr->lr.b[k];
                for (int j = 0; j < D; j++) z += (double)pr->lr.w[(int64_t)k * D + j] * x[j];
                if (pass == 0) {
                    if (z > zmax) zmax = z, best = k;
                    if (k == y[i]) zy = z;
                } else {
                    lse += exp(z - zmax);
                }
            }
        // a class the training items lacked has bias -1e30: its items cost -log 1e-30 at most
        sum += kind == KF_SPEC_TASK_XENT ? fmin(zmax + log(lse) - zy, 69.0775527898) : (double)(best != y[i]);
    }
    return n > 0 ? sum / (double)n : 0;
}

void kf_spec_probe_free(kf_spec_probe *pr) {
    kf_logreg_free(&pr->lr);
    free(pr->mean);
    free(pr->inv_sd);
    memset(pr, 0, sizeof *pr);
}
