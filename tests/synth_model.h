// The one synthetic-model builder of the tests and the benches: a Llama of a
// given shape in memory (RMSNorm, SwiGLU, RoPE, untied head, optional Q/K/V
// biases), every tensor allocated through kf_model_alloc_tensor and filled by
// the caller's function, called in a fixed order: tok_embd, lm_head,
// out_norm_w, then per layer attn_norm_w, wq, wk, wv, wo, [bq, bk, bv],
// ffn_norm_w, w_gate, w_up, w_down. Header-only: benches include it too.
// With dtype F16 or BF16 the 2-D weights are held in that dtype: each is
// filled in an fp32 scratch buffer of its size, converted and the scratch
// freed, so a model larger than memory in fp32 (7B in BF16) can be built.
#ifndef KF_TESTS_SYNTH_MODEL_H
#define KF_TESTS_SYNTH_MODEL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "arch/arch.h"
#include "model/model.h"

typedef struct {
    int n_vocab, n_embd, n_layer, n_head, n_head_kv, head_dim, n_ctx_train;
    const int *n_ff; // (n_layer) FFN widths
    bool qkv_bias;
    float norm_eps, rope_theta;
    kf_dtype dtype; // of the 2-D weights: F32 (0), F16 or BF16
} kf_synth_shape;

// Fills t (allocated, shape set); norm says it is a norm weight vector.
typedef void (*kf_synth_fill)(kf_tensor *t, bool norm, void *user);

typedef struct {
    kf_model *m;
    kf_synth_fill fill;
    void *user;
    kf_error *err;
    kf_status s;
    kf_dtype dtype;
} kf_synth_ctx;

static inline void kf_synth_add(kf_synth_ctx *c, kf_tensor *t, bool norm, int ndim, int64_t d0, int64_t d1) {
    if (c->s != KF_OK) return;
    if (ndim != 2 || c->dtype == KF_DTYPE_F32) {
        c->s = kf_model_alloc_tensor(c->m, t, ndim, (int64_t[]){d0, d1}, c->err);
        if (c->s == KF_OK) c->fill(t, norm, c->user);
        return;
    }
    const int64_t n = d0 * d1;
    uint16_t *half = kf_model_alloc_bytes(c->m, sizeof(uint16_t) * (size_t)n);
    float *tmp = malloc(sizeof(float) * (size_t)n);
    if (!half || !tmp) {
        free(tmp);
        c->s = kf_error_set(c->err, KF_ERR_NOMEM, "synthetic model: out of memory");
        return;
    }
    t->data = tmp;
    kf_tensor_set_shape(t, 2, (int64_t[]){d0, d1});
    c->fill(t, norm, c->user);
    const bool bf16 = c->dtype == KF_DTYPE_BF16;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) half[i] = bf16 ? kf_f32_to_bf16(tmp[i]) : kf_f32_to_f16(tmp[i]);
    free(tmp);
    t->data = (float *)(void *)half;
    t->dtype = t->src_dtype = c->dtype;
}

static inline kf_status kf_synth_llama(const kf_synth_shape *sh, kf_synth_fill fill, void *user, kf_model **out,
                                       kf_error *err) {
    *out = NULL;
    kf_model *m = kf_model_new();
    if (!m || !(m->layers = calloc((size_t)sh->n_layer, sizeof *m->layers))) {
        kf_model_free(m);
        return kf_error_set(err, KF_ERR_NOMEM, "synthetic model: out of memory");
    }
    kf_arch_set_traits(m, KF_ARCH_LLAMA);
    m->n_vocab = sh->n_vocab;
    m->n_embd = sh->n_embd;
    m->n_layer = sh->n_layer;
    m->n_head = sh->n_head;
    m->n_head_kv = sh->n_head_kv;
    m->head_dim = sh->head_dim;
    m->n_ctx_train = sh->n_ctx_train;
    m->norm_eps = sh->norm_eps;
    m->rope_theta = sh->rope_theta;
    const int64_t C = sh->n_embd, V = sh->n_vocab, Q = (int64_t)sh->n_head * sh->head_dim,
                  KV = (int64_t)sh->n_head_kv * sh->head_dim;
    kf_synth_ctx c = {m, fill, user, err, KF_OK, sh->dtype};
    kf_synth_add(&c, &m->tok_embd, false, 2, V, C);
    kf_synth_add(&c, &m->lm_head, false, 2, V, C);
    kf_synth_add(&c, &m->out_norm_w, true, 1, C, 0);
    for (int l = 0; l < sh->n_layer; l++) {
        kf_layer *L = &m->layers[l];
        const int64_t F = sh->n_ff[l];
        L->n_ff = (int)F;
        kf_synth_add(&c, &L->attn_norm_w, true, 1, C, 0);
        kf_synth_add(&c, &L->wq, false, 2, Q, C);
        kf_synth_add(&c, &L->wk, false, 2, KV, C);
        kf_synth_add(&c, &L->wv, false, 2, KV, C);
        kf_synth_add(&c, &L->wo, false, 2, C, Q);
        if (sh->qkv_bias) {
            kf_synth_add(&c, &L->bq, false, 1, Q, 0);
            kf_synth_add(&c, &L->bk, false, 1, KV, 0);
            kf_synth_add(&c, &L->bv, false, 1, KV, 0);
        }
        kf_synth_add(&c, &L->ffn_norm_w, true, 1, C, 0);
        kf_synth_add(&c, &L->w_gate, false, 2, F, C);
        kf_synth_add(&c, &L->w_up, false, 2, F, C);
        kf_synth_add(&c, &L->w_down, false, 2, C, F);
    }
    kf_status s = c.s;
    if (s == KF_OK) s = kf_model_validate(m, "synthetic model", err);
    if (s != KF_OK) {
        kf_model_free(m);
        return s;
    }
    *out = m;
    return KF_OK;
}

#endif
