// Random initialisation of a model in place (kf_model_randomize, model.h).
#include <math.h>

#include "core/rng.h"
#include "model/model.h"

static void fill_normal(kf_tensor *t, kf_rng *r, double std) {
    if (!kf_tensor_present(t)) return;
    int64_t n = kf_tensor_nelem(t);
    for (int64_t i = 0; i < n; i++) t->data[i] = (float)(std * kf_rng_normal(r));
}

static void fill_const(kf_tensor *t, float v) {
    if (!kf_tensor_present(t)) return;
    int64_t n = kf_tensor_nelem(t);
    for (int64_t i = 0; i < n; i++) t->data[i] = v;
}

kf_status kf_model_randomize(kf_model *m, uint64_t seed, kf_error *err) {
    for (int l = 0; l < m->n_layer; l++)
        if (m->layers[l].n_expert > 0)
            return kf_error_set(err, KF_ERR_ARG, "%s: random initialisation of a mixture-of-experts model", m->path);
    kf_status s = kf_model_load_to_memory(m, err);
    if (s != KF_OK) return s;
    const double std = 0.02;
    // GPT-2 scales the projections into the residual stream by 1/sqrt(2 L).
    const double proj_std = m->arch == KF_ARCH_GPT2 ? std / sqrt(2.0 * m->n_layer) : std;
    kf_rng r;
    kf_rng_seed(&r, seed);
    fill_normal(&m->tok_embd, &r, std);
    fill_normal(&m->pos_embd, &r, std);
    for (int l = 0; l < m->n_layer; l++) {
        kf_layer *L = &m->layers[l];
        fill_const(&L->attn_norm_w, 1.0f);
        fill_const(&L->attn_norm_b, 0.0f);
        fill_normal(&L->wq, &r, std);
        fill_normal(&L->wk, &r, std);
        fill_normal(&L->wv, &r, std);
        fill_const(&L->bq, 0.0f);
        fill_const(&L->bk, 0.0f);
        fill_const(&L->bv, 0.0f);
        fill_normal(&L->wo, &r, proj_std);
        fill_const(&L->bo, 0.0f);
        fill_const(&L->ffn_norm_w, 1.0f);
        fill_const(&L->ffn_norm_b, 0.0f);
        fill_normal(&L->w_gate, &r, std);
        fill_normal(&L->w_up, &r, std);
        fill_const(&L->b_up, 0.0f);
        fill_normal(&L->w_down, &r, proj_std);
        fill_const(&L->b_down, 0.0f);
    }
    fill_const(&m->out_norm_w, 1.0f);
    fill_const(&m->out_norm_b, 0.0f);
    if (!m->tied_head) fill_normal(&m->lm_head, &r, std);
    return KF_OK;
}
