// The training pass (train.h): forward keeping activations, backward, LoRA.
//
// Per block l (N = B*T rows; F = n_ff of layer l):
//   x_in (N, C) --norm--> xn1 --wq,wk,wv--> q (N, Q), k, v (N, KV) --rope(q, k)-->
//   attention --> att (N, Q) --wo--> + x_in = x_mid (N, C)
//   x_mid --norm--> xn2 --w_gate, w_up--> gate, up (N, F) --act--> act (N, F) --w_down--> + x_mid = next x_in
// A MoE layer (E experts) between act and w_down:
//   xn2 --router--> scores (N, E) --select--> mask (N, E);  act --mask--> act_sel (N, F) --w_down--> ...
// (the oracle scores the experts by the norms of their outputs instead).
// then x_final --norm--> xnf --lm_head--> logits (N, V).
#include "train/train.h"

#include <cblas.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/file.h"
#include "core/mem.h"
#include "core/rng.h"
#include "formats/safetensors.h"
#include "runtime/kernels.h"
#include "runtime/moe.h"
#include "train/ops.h"

typedef struct {
    float *A, *B, *dA, *dB; // A (r, in), B (out, r) and their gradients
    int in, out;
} lora_slot;

typedef struct {
    float *x_in;                 // (N, C) residual entering the block
    float *xn1, *mean1, *rstd1;  // (N, C), (N), (N)
    float *q, *k, *v;            // (N, Q), (N, KV), (N, KV) after RoPE
    float *probs;                // (B, H, T, T)
    float *att;                  // (N, Q)
    float *x_mid;                // (N, C) residual after attention
    float *xn2, *mean2, *rstd2;  // (N, C), (N), (N)
    float *gate, *up, *act;      // (N, F) pre-activations and activations (every expert's)
    float *act_sel;              // MoE: (N, F) act with the unselected experts zeroed
    float *scores, *mask;        // MoE: (N, E) router scores, selection (1 selected, 0 not)
    float *rh;                   // MLP router: (N, Hr) hidden layer after relu
    float *lora_u[KF_LIN_COUNT]; // (N, r): A x of each adapted linear
} layer_acts;

struct kf_train {
    kf_model *m;
    kf_train_opts o;
    int B, T, N, max_ff, max_expert, max_rh;
    bool recompute;   // activations of one layer at a time (layout_ws)
    int64_t ws_bytes; // the workspace's size
    float lora_scale;

    // workspace (one allocation)
    float *ws;
    const int32_t *tokens; // of the last forward (the caller's, (B, T))
    layer_acts *acts;      // n_layer
    float *x_final, *xnf, *meanf, *rstdf, *logits, *dlogits;
    float *rope_cos, *rope_sin;            // (T, Dh/2)
    float *dres, *dxn, *proj;              // (N, C)
    float *dq, *datt;                      // (N, Q)
    float *dk, *dv;                        // (N, KV)
    float *dgate, *dup, *dact;             // (N, max F)
    float *du;                             // (N, r)
    float *dscores, *drh;                  // MoE: (N, max E), (N, max Hr)
    int *sel_scratch;                      // MoE: 2 max E (selection)
    float *att_scratch;                    // threads * (T, T)

    // gradients (one allocation) and LoRA (one allocation)
    float *gbuf, *lora_buf;
    kf_model grads;       // the gradient view (layers own, no maps or buffers)
    lora_slot *lora;      // (n_layer, KF_LIN_COUNT), in use when A != NULL
    kf_param *params;
    int n_params;
};

// Two passes over a layout: counting (base NULL), then assigning.
typedef struct {
    float *base;
    int64_t used;
} arena;

static float *take(arena *a, int64_t n) {
    float *p = a->base ? a->base + a->used : NULL;
    a->used += (n + 15) & ~(int64_t)15; // 64-byte aligned slices
    return p;
}

unsigned kf_train_lora_default_targets(const kf_model *m) {
    if (m->arch == KF_ARCH_GPT2) return 1u << KF_LIN_O | 1u << KF_LIN_UP | 1u << KF_LIN_DOWN;
    unsigned all = (1u << KF_LIN_COUNT) - 1;
    return m->gated_ffn ? all : all & ~(1u << KF_LIN_GATE);
}

static kf_tensor *lin_weight(kf_layer *L, kf_lin w) {
    switch (w) {
    case KF_LIN_Q: return &L->wq;
    case KF_LIN_K: return &L->wk;
    case KF_LIN_V: return &L->wv;
    case KF_LIN_O: return &L->wo;
    case KF_LIN_GATE: return &L->w_gate;
    case KF_LIN_UP: return &L->w_up;
    default: return &L->w_down;
    }
}

static kf_tensor *lin_bias(kf_layer *L, kf_lin w) {
    switch (w) {
    case KF_LIN_Q: return &L->bq;
    case KF_LIN_K: return &L->bk;
    case KF_LIN_V: return &L->bv;
    case KF_LIN_O: return &L->bo;
    case KF_LIN_GATE: return NULL;
    case KF_LIN_UP: return &L->b_up;
    default: return &L->b_down;
    }
}

// Kept: every layer has its own activations. Recomputed: every layer keeps
// only x_in, the rest is one set sized for the widest layer, filled again
// for each layer by the backward (block_forward from its x_in).
static void layout_ws(kf_train *t, arena *a) {
    const kf_model *m = t->m;
    const int64_t N = t->N, C = m->n_embd, Q = (int64_t)m->n_head * m->head_dim,
                  KV = (int64_t)m->n_head_kv * m->head_dim, V = m->n_vocab, r = t->o.lora_rank;
    for (int l = 0; l < m->n_layer; l++) {
        layer_acts *A = &t->acts[l];
        if (t->recompute && l > 0) {
            *A = t->acts[0];
            A->x_in = take(a, N * C);
            continue;
        }
        const kf_layer *L = &m->layers[l];
        const int64_t F = t->recompute ? t->max_ff : L->n_ff;
        const int E = t->recompute ? t->max_expert : L->n_expert;
        const int Hr = t->recompute                                           ? t->max_rh
                       : L->n_expert > 0 && L->router == KF_ROUTER_MLP ? (int)L->router_w.ne[0]
                                                                         : 0;
        A->x_in = take(a, N * C);
        A->xn1 = take(a, N * C);
        A->mean1 = take(a, N);
        A->rstd1 = take(a, N);
        A->q = take(a, N * Q);
        A->k = take(a, N * KV);
        A->v = take(a, N * KV);
        A->probs = take(a, (int64_t)t->B * m->n_head * t->T * t->T);
        A->att = take(a, N * Q);
        A->x_mid = take(a, N * C);
        A->xn2 = take(a, N * C);
        A->mean2 = take(a, N);
        A->rstd2 = take(a, N);
        A->gate = m->gated_ffn ? take(a, N * F) : NULL;
        A->up = take(a, N * F);
        A->act = take(a, N * F);
        A->act_sel = E > 0 ? take(a, N * F) : NULL;
        A->scores = E > 0 ? take(a, N * E) : NULL;
        A->mask = E > 0 ? take(a, N * E) : NULL;
        A->rh = Hr > 0 ? take(a, N * Hr) : NULL;
        for (int w = 0; w < KF_LIN_COUNT; w++)
            A->lora_u[w] = t->o.mode == KF_TRAIN_LORA && (t->o.lora_targets >> w & 1u) ? take(a, N * r) : NULL;
    }
    t->x_final = take(a, N * C);
    t->xnf = take(a, N * C);
    t->meanf = take(a, N);
    t->rstdf = take(a, N);
    t->logits = take(a, N * V);
    t->dlogits = take(a, N * V);
    t->rope_cos = take(a, (int64_t)t->T * (m->head_dim / 2));
    t->rope_sin = take(a, (int64_t)t->T * (m->head_dim / 2));
    t->dres = take(a, N * C);
    t->dxn = take(a, N * C);
    t->proj = take(a, N * C);
    t->dq = take(a, N * Q);
    t->datt = take(a, N * Q);
    t->dk = take(a, N * KV);
    t->dv = take(a, N * KV);
    t->dgate = take(a, N * t->max_ff);
    t->dup = take(a, N * t->max_ff);
    t->dact = take(a, N * t->max_ff);
    t->du = take(a, N * (r > 0 ? r : 1));
    t->dscores = take(a, N * (t->max_expert > 0 ? t->max_expert : 1));
    t->drh = take(a, N * (t->max_rh > 0 ? t->max_rh : 1));
    t->att_scratch = take(a, (int64_t)omp_get_max_threads() * kf_train_attention_scratch(t->T));
}

static bool trains(const kf_train *t, const kf_model *m, const kf_tensor *x) {
    if (!kf_tensor_present(x) || t->o.mode == KF_TRAIN_LORA) return false;
    if (t->o.mode == KF_TRAIN_ALL) return true;
    for (int l = 0; l < m->n_layer; l++) {
        const kf_layer *L = &m->layers[l];
        if (t->o.mode == KF_TRAIN_FFN &&
            (x == &L->w_gate || x == &L->w_up || x == &L->b_up || x == &L->w_down || x == &L->b_down))
            return true;
        if (t->o.mode == KF_TRAIN_ROUTER &&
            (x == &L->router_w || x == &L->router_b || x == &L->router_w2 || x == &L->router_b2))
            return true;
    }
    return false;
}

// Gradient buffers of the trainable tensors and their parameter entries
// (two passes as layout_ws; params NULL on the counting pass).
static void layout_grads(kf_train *t, arena *a, kf_param *params) {
    const kf_model *m = t->m;
    kf_named_tensor *ts = NULL;
    int n = kf_model_list_tensors(m, NULL, 0), k = 0;
    ts = malloc(sizeof *ts * (size_t)(n > 0 ? n : 1));
    if (!ts) {
        a->used = -1;
        return;
    }
    kf_model_list_tensors(m, ts, n);
    for (int i = 0; i < n; i++) {
        if (!trains(t, m, ts[i].t)) continue;
        const int64_t e = kf_tensor_nelem(ts[i].t);
        float *g = take(a, e);
        if (params) {
            kf_param *p = &params[k];
            snprintf(p->name, sizeof p->name, "%s", ts[i].name);
            p->w = ts[i].t->data;
            p->g = g;
            p->n = e;
            p->decay = ts[i].t->ndim == 2 && strcmp(ts[i].name, "pos_embd") != 0;
            // the same tensor in the gradient view
            const char *nm = ts[i].name;
            kf_tensor *gt = NULL;
            if (ts[i].layer < 0) {
                if (!strcmp(nm, "tok_embd")) gt = &t->grads.tok_embd;
                else if (!strcmp(nm, "pos_embd")) gt = &t->grads.pos_embd;
                else if (!strcmp(nm, "out_norm_w")) gt = &t->grads.out_norm_w;
                else if (!strcmp(nm, "out_norm_b")) gt = &t->grads.out_norm_b;
                else if (!strcmp(nm, "lm_head")) gt = &t->grads.lm_head;
            } else {
                // Offsets inside kf_layer are the same in the model and the view.
                const kf_layer *L = &m->layers[ts[i].layer];
                gt = (kf_tensor *)((char *)&t->grads.layers[ts[i].layer] + ((const char *)ts[i].t - (const char *)L));
            }
            if (gt) gt->data = g;
        }
        k++;
    }
    free(ts);
    t->n_params = k;
}

static void layout_lora(kf_train *t, arena *a, kf_param *params, int k) {
    kf_model *m = t->m;
    const int r = t->o.lora_rank;
    for (int l = 0; l < m->n_layer; l++)
        for (int w = 0; w < KF_LIN_COUNT; w++) {
            if (!(t->o.lora_targets >> w & 1u)) continue;
            const kf_tensor *W = lin_weight(&m->layers[l], (kf_lin)w);
            lora_slot *s = &t->lora[l * KF_LIN_COUNT + w];
            s->out = (int)W->ne[0];
            s->in = (int)W->ne[1];
            s->A = take(a, (int64_t)r * s->in);
            s->B = take(a, (int64_t)s->out * r);
            s->dA = take(a, (int64_t)r * s->in);
            s->dB = take(a, (int64_t)s->out * r);
            if (!params) continue;
            static const char *nm[] = {"wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down"};
            snprintf(params[k].name, sizeof params[k].name, "layers.%d.%s.lora_A", l, nm[w]);
            params[k].w = s->A, params[k].g = s->dA, params[k].n = (int64_t)r * s->in, params[k].decay = true;
            k++;
            snprintf(params[k].name, sizeof params[k].name, "layers.%d.%s.lora_B", l, nm[w]);
            params[k].w = s->B, params[k].g = s->dB, params[k].n = (int64_t)s->out * r, params[k].decay = true;
            k++;
        }
}

kf_status kf_train_init(kf_train **out, kf_model *m, int B, int T, const kf_train_opts *o, kf_error *err) {
    *out = NULL;
    if (B < 1 || T < 2 || (int64_t)B * T > (1 << 24))
        return kf_error_set(err, KF_ERR_ARG, "train: bad batch %d x %d tokens", B, T);
    kf_status s = kf_model_validate(m, m->path[0] ? m->path : "model", err);
    if (s != KF_OK) return s;
    if (o->mode == KF_TRAIN_ROUTER) {
        bool any = false;
        for (int l = 0; l < m->n_layer; l++)
            any |= m->layers[l].n_expert > 0 && m->layers[l].router != KF_ROUTER_ORACLE;
        if (!any)
            return kf_error_set(err, KF_ERR_ARG,
                                "train: router training needs a mixture-of-experts layer with a linear or MLP router "
                                "(kfuse moefy); %s has none",
                                m->path[0] ? m->path : "the model");
    }
    if (m->pos == KF_POS_LEARNED && T > m->n_ctx_train)
        return kf_error_set(err, KF_ERR_ARG, "train: %d positions exceed the model's %d", T, m->n_ctx_train);
    if (o->mode == KF_TRAIN_LORA && (o->lora_rank < 1 || o->lora_rank > 4096))
        return kf_error_set(err, KF_ERR_ARG, "train: LoRA rank %d outside [1, 4096]", o->lora_rank);
    if ((s = kf_model_load_to_memory(m, err)) != KF_OK) return s;

    kf_train *t = calloc(1, sizeof *t);
    if (!t) return kf_error_set(err, KF_ERR_NOMEM, "train: out of memory");
    t->m = m;
    t->o = *o;
    if (t->o.mode != KF_TRAIN_LORA) t->o.lora_rank = 0;
    if (t->o.mode == KF_TRAIN_LORA && !t->o.lora_targets) t->o.lora_targets = kf_train_lora_default_targets(m);
    if (t->o.mode == KF_TRAIN_LORA && !m->gated_ffn) t->o.lora_targets &= ~(1u << KF_LIN_GATE);
    if (t->o.mode != KF_TRAIN_LORA) t->o.lora_targets = 0;
    if (t->o.lora_alpha <= 0) t->o.lora_alpha = (float)t->o.lora_rank;
    t->lora_scale = t->o.lora_rank ? t->o.lora_alpha / (float)t->o.lora_rank : 0.0f;
    t->B = B, t->T = T, t->N = B * T;
    for (int l = 0; l < m->n_layer; l++) {
        const kf_layer *L = &m->layers[l];
        if (L->n_ff > t->max_ff) t->max_ff = L->n_ff;
        if (L->n_expert > t->max_expert) t->max_expert = L->n_expert;
        if (L->n_expert > 0 && L->router == KF_ROUTER_MLP && L->router_w.ne[0] > t->max_rh)
            t->max_rh = (int)L->router_w.ne[0];
    }
    t->grads = *m;
    t->grads.maps = NULL, t->grads.n_maps = 0, t->grads.buffers = NULL;
    t->acts = calloc((size_t)m->n_layer, sizeof *t->acts);
    t->grads.layers = calloc((size_t)m->n_layer, sizeof *t->grads.layers);
    t->lora = calloc((size_t)m->n_layer * KF_LIN_COUNT, sizeof *t->lora);
    t->sel_scratch = calloc((size_t)(2 * t->max_expert + 1), sizeof *t->sel_scratch);
    if (!t->acts || !t->grads.layers || !t->lora || !t->sel_scratch) goto nomem;
    memcpy(t->grads.layers, m->layers, sizeof *m->layers * (size_t)m->n_layer);
    // The view's tensors: shapes of the model's, data NULL until a gradient is assigned.
    {
        kf_named_tensor *ts = NULL;
        int n = kf_model_list_tensors(&t->grads, NULL, 0);
        if (!(ts = malloc(sizeof *ts * (size_t)(n > 0 ? n : 1)))) goto nomem;
        kf_model_list_tensors(&t->grads, ts, n);
        for (int i = 0; i < n; i++) ((kf_tensor *)ts[i].t)->data = NULL;
        free(ts);
        t->grads.lm_head.data = NULL;
    }

    arena a = {NULL, 0};
    layout_ws(t, &a);
    const double kept_bytes = sizeof(float) * (double)a.used;
    if (o->max_memory > 0 && kept_bytes > (double)o->max_memory) {
        t->recompute = true;
        a = (arena){NULL, 0};
        layout_ws(t, &a);
        if (sizeof(float) * (double)a.used > (double)o->max_memory) {
            kf_error_set(err, KF_ERR_ARG,
                         "train: batches of %d x %d tokens need %.1f MiB of activations kept per layer, "
                         "%.1f MiB recomputed layer by layer; the cap is %.1f MiB",
                         B, T, kept_bytes / 1048576.0, sizeof(float) * (double)a.used / 1048576.0,
                         (double)o->max_memory / 1048576.0);
            kf_train_free(t);
            return KF_ERR_ARG;
        }
    }
    t->ws_bytes = (int64_t)sizeof(float) * a.used;
    if (!(t->ws = kf_alloc_large(sizeof(float) * (size_t)a.used))) goto nomem;
    a = (arena){t->ws, 0};
    layout_ws(t, &a);
    if (m->pos == KF_POS_ROPE) kf_rope_table(t->rope_cos, t->rope_sin, T, m->head_dim, m->rope_theta);

    a = (arena){NULL, 0};
    layout_grads(t, &a, NULL);
    if (a.used < 0) goto nomem;
    arena al = {NULL, 0};
    if (t->o.mode == KF_TRAIN_LORA) layout_lora(t, &al, NULL, 0);
    int n_lora = 0;
    for (int w = 0; w < KF_LIN_COUNT; w++) n_lora += (t->o.lora_targets >> w & 1u) ? 2 * m->n_layer : 0;
    const int n_base = t->n_params;
    t->params = calloc((size_t)(n_base + n_lora + 1), sizeof *t->params);
    if (!t->params || !(t->gbuf = kf_alloc_large(sizeof(float) * (size_t)(a.used + 16)))) goto nomem;
    a = (arena){t->gbuf, 0};
    layout_grads(t, &a, t->params);
    if (a.used < 0) goto nomem;
    if (m->tied_head) t->grads.lm_head.data = t->grads.tok_embd.data;
    if (t->o.mode == KF_TRAIN_LORA) {
        if (!(t->lora_buf = kf_alloc_large(sizeof(float) * (size_t)(al.used + 16)))) goto nomem;
        memset(t->lora_buf, 0, sizeof(float) * (size_t)al.used);
        al = (arena){t->lora_buf, 0};
        layout_lora(t, &al, t->params, n_base);
        t->n_params = n_base + n_lora;
        kf_rng rng;
        kf_rng_seed(&rng, t->o.seed);
        for (int i = 0; i < m->n_layer * KF_LIN_COUNT; i++) {
            lora_slot *sl = &t->lora[i];
            if (!sl->A) continue;
            const double bound = 1.0 / sqrt((double)sl->in);
            for (int64_t j = 0; j < (int64_t)t->o.lora_rank * sl->in; j++)
                sl->A[j] = (float)((2.0 * kf_rng_uniform(&rng) - 1.0) * bound);
        }
    }
    kf_train_zero_grad(t);
    *out = t;
    return KF_OK;
nomem:
    kf_train_free(t);
    return kf_error_set(err, KF_ERR_NOMEM, "train: out of memory for batches of %d x %d tokens", B, T);
}

void kf_train_free(kf_train *t) {
    if (!t) return;
    free(t->ws);
    free(t->gbuf);
    free(t->lora_buf);
    free(t->acts);
    free(t->grads.layers);
    free(t->lora);
    free(t->sel_scratch);
    free(t->params);
    free(t);
}

kf_param *kf_train_params(kf_train *t, int *n) {
    *n = t->n_params;
    return t->params;
}

bool kf_train_recomputes(const kf_train *t) { return t->recompute; }
int64_t kf_train_workspace_bytes(const kf_train *t) { return t->ws_bytes; }

void kf_train_shape(const kf_train *t, int *B, int *T) {
    *B = t->B;
    *T = t->T;
}

const kf_model *kf_train_grads(const kf_train *t) { return &t->grads; }
const float *kf_train_logits(const kf_train *t) { return t->logits; }
float *kf_train_dlogits(kf_train *t) { return t->dlogits; }
const float *kf_train_hidden(const kf_train *t) { return t->x_final; }

void kf_train_zero_grad(kf_train *t) {
    for (int i = 0; i < t->n_params; i++) memset(t->params[i].g, 0, sizeof(float) * (size_t)t->params[i].n);
}

// ---- linear layers with their optional adapter ------------------------------------

typedef struct {
    const float *W, *b;
    float *dW, *db;
    int in, out;
    const lora_slot *lora;
    float *u; // (N, r) activations of the adapter
} lin_ref;

static lin_ref get_lin(kf_train *t, int l, kf_lin w) {
    kf_layer *L = &t->m->layers[l], *G = &t->grads.layers[l];
    const kf_tensor *W = lin_weight(L, w), *b = lin_bias(L, w);
    lin_ref r = {W->data, b && kf_tensor_present(b) ? b->data : NULL, lin_weight(G, w)->data,
                 lin_bias(G, w) ? lin_bias(G, w)->data : NULL, (int)W->ne[1], (int)W->ne[0], NULL, NULL};
    const lora_slot *s = &t->lora[l * KF_LIN_COUNT + w];
    if (s->A) r.lora = s, r.u = t->acts[l].lora_u[w];
    return r;
}

// out (N, out) = inp (N, in) W^T + b (+ scale (inp A^T) B^T)
static void lin_forward(kf_train *t, float *out, const float *inp, const lin_ref *r) {
    kf_train_matmul_forward(out, inp, r->W, r->b, t->N, r->in, r->out);
    if (!r->lora) return;
    const int R = t->o.lora_rank;
    kf_train_matmul_forward(r->u, inp, r->lora->A, NULL, t->N, r->in, R); // u (N, r) = inp A^T
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, t->N, r->out, R, t->lora_scale, r->u, R, r->lora->B, R,
                1.0f, out, r->out); // out += scale u B^T
}

// dinp (N, in) += dout W (+ the adapter's path); weight and adapter gradients added.
static void lin_backward(kf_train *t, float *dinp, const float *dout, const float *inp, const lin_ref *r) {
    kf_train_matmul_backward(dinp, r->dW, r->db, dout, inp, r->W, t->N, r->in, r->out);
    if (!r->lora) return;
    const int R = t->o.lora_rank;
    // dB (out, r) += scale dout^T u;  du (N, r) = scale dout B;  then A as a matmul: dA += du^T inp, dinp += du A
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r->out, R, t->N, t->lora_scale, dout, r->out, r->u, R, 1.0f,
                r->lora->dB, R);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, t->N, R, r->out, t->lora_scale, dout, r->out, r->lora->B,
                R, 0.0f, t->du, R);
    kf_train_matmul_backward(dinp, r->lora->dA, NULL, t->du, inp, r->lora->A, t->N, r->in, R);
}

// ---- norms of either family -------------------------------------------------------

static void norm_forward(const kf_model *m, float *out, float *mean, float *rstd, const float *inp,
                         const kf_tensor *w, const kf_tensor *b, int N) {
    if (m->norm == KF_NORM_RMS)
        kf_train_rmsnorm_forward(out, rstd, inp, w->data, N, m->n_embd, m->norm_eps);
    else
        kf_train_layernorm_forward(out, mean, rstd, inp, w->data, b->data, N, m->n_embd, m->norm_eps);
}

static void norm_backward(const kf_model *m, float *dinp, const kf_tensor *gw, const kf_tensor *gb,
                          const float *dout, const float *inp, const kf_tensor *w, const float *mean,
                          const float *rstd, int N) {
    if (m->norm == KF_NORM_RMS)
        kf_train_rmsnorm_backward(dinp, gw->data, dout, inp, w->data, rstd, N, m->n_embd);
    else
        kf_train_layernorm_backward(dinp, gw->data, gb->data, dout, inp, w->data, mean, rstd, N, m->n_embd);
}

static void add_rows(float *y, const float *a, const float *b, int64_t n) {
#pragma omp parallel for if (n >= (1 << 16))
    for (int64_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}

// ---- mixture-of-experts layers --------------------------------------------------------

// Scores, selection and the masked activations of MoE layer L (A->act holds every expert's).
static void moe_forward(kf_train *t, const kf_layer *L, layer_acts *A) {
    const int N = t->N, C = t->m->n_embd, F = L->n_ff, E = L->n_expert;
    if (L->router == KF_ROUTER_ORACLE) {
        kf_moe_expert_norms(L->w_down.data, C, F, E, A->act, N, A->scores, t->proj); // proj: (N, C) scratch here
    } else if (L->router == KF_ROUTER_MLP) {
        const int Hr = (int)L->router_w.ne[0];
        kf_train_matmul_forward(A->rh, A->xn2, L->router_w.data, L->router_b.data, N, C, Hr);
        kf_train_relu_forward(A->rh, A->rh, (int64_t)N * Hr);
        kf_train_matmul_forward(A->scores, A->rh, L->router_w2.data, L->router_b2.data, N, Hr, E);
    } else {
        kf_train_matmul_forward(A->scores, A->xn2, L->router_w.data, L->router_b.data, N, C, E);
    }
    kf_train_moe_select(A->mask, A->scores, N, E, L->top_k, L->coverage, t->sel_scratch);
    kf_train_moe_gate_forward(A->act_sel, A->act, A->mask, N, F, E);
}

// The router's backward from t->dscores: its gradients (where trained), and d xn2 added into t->dxn.
static void moe_router_backward(kf_train *t, const kf_layer *L, const kf_layer *GL, const layer_acts *A) {
    const int N = t->N, C = t->m->n_embd, E = L->n_expert;
    if (L->router == KF_ROUTER_MLP) {
        const int Hr = (int)L->router_w.ne[0];
        memset(t->drh, 0, sizeof(float) * (size_t)N * Hr);
        kf_train_matmul_backward(t->drh, GL->router_w2.data, GL->router_b2.data, t->dscores, A->rh,
                                 L->router_w2.data, N, Hr, E);
        kf_train_relu_backward(t->drh, A->rh, (int64_t)N * Hr);
        kf_train_matmul_backward(t->dxn, GL->router_w.data, GL->router_b.data, t->drh, A->xn2, L->router_w.data, N,
                                 C, Hr);
    } else {
        kf_train_matmul_backward(t->dxn, GL->router_w.data, GL->router_b.data, t->dscores, A->xn2, L->router_w.data,
                                 N, C, E);
    }
}

// ---- forward and backward ------------------------------------------------------------

// Block l from t->acts[l].x_in: its activations into t->acts[l], the
// residual leaving it into x_next (N, C).
static void block_forward(kf_train *t, int l, float *x_next) {
    const kf_model *m = t->m;
    const int N = t->N, B = t->B, T = t->T, C = m->n_embd, H = m->n_head, Hkv = m->n_head_kv, Dh = m->head_dim;
    const kf_layer *L = &m->layers[l];
    layer_acts *A = &t->acts[l];
    const int64_t F = L->n_ff;
    // attention
    norm_forward(m, A->xn1, A->mean1, A->rstd1, A->x_in, &L->attn_norm_w, &L->attn_norm_b, N);
    lin_ref rq = get_lin(t, l, KF_LIN_Q), rk = get_lin(t, l, KF_LIN_K), rv = get_lin(t, l, KF_LIN_V),
            ro = get_lin(t, l, KF_LIN_O);
    lin_forward(t, A->q, A->xn1, &rq); // q (N, Q)
    lin_forward(t, A->k, A->xn1, &rk); // k (N, KV)
    lin_forward(t, A->v, A->xn1, &rv); // v (N, KV)
    if (m->pos == KF_POS_ROPE) {
        kf_train_rope_forward(A->q, t->rope_cos, t->rope_sin, B, T, H, Dh);
        kf_train_rope_forward(A->k, t->rope_cos, t->rope_sin, B, T, Hkv, Dh);
    }
    kf_train_attention_forward(A->att, A->probs, A->q, A->k, A->v, B, T, H, Hkv, Dh); // att (N, Q)
    lin_forward(t, t->proj, A->att, &ro);                                               // proj (N, C)
    add_rows(A->x_mid, A->x_in, t->proj, (int64_t)N * C);
    // feed-forward
    norm_forward(m, A->xn2, A->mean2, A->rstd2, A->x_mid, &L->ffn_norm_w, &L->ffn_norm_b, N);
    lin_ref ru = get_lin(t, l, KF_LIN_UP), rd = get_lin(t, l, KF_LIN_DOWN);
    lin_forward(t, A->up, A->xn2, &ru); // up (N, F)
    if (m->gated_ffn) {
        lin_ref rg = get_lin(t, l, KF_LIN_GATE);
        lin_forward(t, A->gate, A->xn2, &rg); // gate (N, F)
        kf_train_swiglu_forward(A->act, A->gate, A->up, (int64_t)N * F);
    } else {
        kf_train_gelu_forward(A->act, A->up, (int64_t)N * F);
    }
    if (L->n_expert > 0) moe_forward(t, L, A);
    lin_forward(t, t->proj, L->n_expert > 0 ? A->act_sel : A->act, &rd); // proj (N, C)
    add_rows(x_next, A->x_mid, t->proj, (int64_t)N * C);
}

kf_status kf_train_forward(kf_train *t, const int32_t *tokens, kf_error *err) {
    const kf_model *m = t->m;
    const int N = t->N, T = t->T, C = m->n_embd;
    for (int i = 0; i < N; i++)
        if (tokens[i] < 0 || tokens[i] >= m->n_vocab)
            return kf_error_set(err, KF_ERR_ARG, "train: token %d at index %d is outside the vocabulary (%d)",
                                tokens[i], i, m->n_vocab);
    t->tokens = tokens;
    kf_train_embed_forward(t->acts[0].x_in, tokens, m->tok_embd.data,
                           m->pos == KF_POS_LEARNED ? m->pos_embd.data : NULL, N, T, C);
    for (int l = 0; l < m->n_layer; l++) block_forward(t, l, l + 1 < m->n_layer ? t->acts[l + 1].x_in : t->x_final);
    norm_forward(m, t->xnf, t->meanf, t->rstdf, t->x_final, &m->out_norm_w, &m->out_norm_b, N);
    kf_train_matmul_forward(t->logits, t->xnf, m->lm_head.data, NULL, N, C, m->n_vocab); // logits (N, V)
    return KF_OK;
}

// The blocks' backward, last to first, from t->dres = d loss / d x_final.
static void backward_blocks(kf_train *t) {
    const kf_model *m = t->m;
    const kf_model *g = &t->grads;
    const int N = t->N, B = t->B, T = t->T, C = m->n_embd, H = m->n_head, Hkv = m->n_head_kv, Dh = m->head_dim;
    const size_t rowsC = sizeof(float) * (size_t)N * C;
    for (int l = m->n_layer - 1; l >= 0; l--) {
        const kf_layer *L = &m->layers[l], *GL = &g->layers[l];
        layer_acts *A = &t->acts[l];
        const int64_t F = L->n_ff;
        // recomputed activations: the last layer's are still there from the forward;
        // x_next lands in t->proj, a scratch the backward does not read
        if (t->recompute && l < m->n_layer - 1) block_forward(t, l, t->proj);
        // feed-forward: x_next = x_mid + w_down act(...); dres is d x_next
        lin_ref ru = get_lin(t, l, KF_LIN_UP), rd = get_lin(t, l, KF_LIN_DOWN);
        const bool moe = L->n_expert > 0, routed = moe && L->router != KF_ROUTER_ORACLE;
        memset(t->dact, 0, sizeof(float) * (size_t)(N * F));
        lin_backward(t, t->dact, t->dres, moe ? A->act_sel : A->act, &rd); // dact (N, F)
        if (moe) // dact becomes d act (masked); dscores from the relaxation
            kf_train_moe_gate_backward(t->dact, t->dscores, A->act, A->mask, routed ? A->scores : NULL, N, (int)F,
                                       L->n_expert);
        memset(t->dxn, 0, rowsC);
        if (m->gated_ffn) {
            lin_ref rg = get_lin(t, l, KF_LIN_GATE);
            kf_train_swiglu_backward(t->dgate, t->dup, t->dact, A->gate, A->up, (int64_t)N * F);
            lin_backward(t, t->dxn, t->dgate, A->xn2, &rg);
        } else {
            kf_train_gelu_backward(t->dup, t->dact, A->up, (int64_t)N * F);
        }
        lin_backward(t, t->dxn, t->dup, A->xn2, &ru); // dxn (N, C)
        if (routed) moe_router_backward(t, L, GL, A);
        norm_backward(m, t->dres, &GL->ffn_norm_w, &GL->ffn_norm_b, t->dxn, A->x_mid, &L->ffn_norm_w, A->mean2,
                      A->rstd2, N); // dres is now d x_mid
        // attention: x_mid = x_in + wo att
        lin_ref rq = get_lin(t, l, KF_LIN_Q), rk = get_lin(t, l, KF_LIN_K), rv = get_lin(t, l, KF_LIN_V),
                ro = get_lin(t, l, KF_LIN_O);
        memset(t->datt, 0, sizeof(float) * (size_t)N * H * Dh);
        lin_backward(t, t->datt, t->dres, A->att, &ro); // datt (N, Q)
        kf_train_attention_backward(t->dq, t->dk, t->dv, t->datt, A->probs, A->q, A->k, A->v, B, T, H, Hkv, Dh,
                                    t->att_scratch);
        if (m->pos == KF_POS_ROPE) {
            kf_train_rope_backward(t->dq, t->rope_cos, t->rope_sin, B, T, H, Dh);
            kf_train_rope_backward(t->dk, t->rope_cos, t->rope_sin, B, T, Hkv, Dh);
        }
        memset(t->dxn, 0, rowsC);
        lin_backward(t, t->dxn, t->dq, A->xn1, &rq);
        lin_backward(t, t->dxn, t->dk, A->xn1, &rk);
        lin_backward(t, t->dxn, t->dv, A->xn1, &rv);
        norm_backward(m, t->dres, &GL->attn_norm_w, &GL->attn_norm_b, t->dxn, A->x_in, &L->attn_norm_w, A->mean1,
                      A->rstd1, N); // dres is now d x_in
    }
    kf_train_embed_backward(g->tok_embd.data, m->pos == KF_POS_LEARNED ? g->pos_embd.data : NULL, t->dres, t->tokens,
                            N, T, C);
}

void kf_train_backward(kf_train *t) {
    const kf_model *m = t->m;
    const kf_model *g = &t->grads;
    const int N = t->N, C = m->n_embd;
    const size_t rowsC = sizeof(float) * (size_t)N * C;
    // head and final norm: dres = d loss / d x_final
    memset(t->dxn, 0, rowsC);
    kf_train_matmul_backward(t->dxn, g->lm_head.data, NULL, t->dlogits, t->xnf, m->lm_head.data, N, C, m->n_vocab);
    memset(t->dres, 0, rowsC);
    norm_backward(m, t->dres, &g->out_norm_w, &g->out_norm_b, t->dxn, t->x_final, &m->out_norm_w, t->meanf,
                  t->rstdf, N);
    backward_blocks(t);
}

void kf_train_backward_hidden(kf_train *t, const float *dx) {
    memcpy(t->dres, dx, sizeof(float) * (size_t)t->N * t->m->n_embd);
    backward_blocks(t);
}

// ---- LoRA export ------------------------------------------------------------------------

bool kf_train_lora_get(const kf_train *t, int layer, kf_lin which, float **A, float **B, int *in, int *out) {
    if (layer < 0 || layer >= t->m->n_layer || which < 0 || which >= KF_LIN_COUNT) return false;
    const lora_slot *s = &t->lora[layer * KF_LIN_COUNT + which];
    if (!s->A) return false;
    *A = s->A, *B = s->B, *in = s->in, *out = s->out;
    return true;
}

kf_status kf_train_lora_merge(kf_train *t, kf_error *err) {
    if (t->o.mode != KF_TRAIN_LORA) return kf_error_set(err, KF_ERR_ARG, "train: no LoRA adapters to merge");
    const int R = t->o.lora_rank;
    for (int l = 0; l < t->m->n_layer; l++)
        for (int w = 0; w < KF_LIN_COUNT; w++) {
            lora_slot *s = &t->lora[l * KF_LIN_COUNT + w];
            if (!s->A) continue;
            // W (out, in) += scale B (out, r) A (r, in)
            float *W = lin_weight(&t->m->layers[l], (kf_lin)w)->data;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s->out, s->in, R, t->lora_scale, s->B, R, s->A,
                        s->in, 1.0f, W, s->in);
            memset(s->B, 0, sizeof(float) * (size_t)s->out * R);
        }
    return KF_OK;
}

// Hugging Face module path of (layer, which) and the target_modules entry that matches it.
static void peft_module(const kf_model *m, int l, kf_lin w, char *path, size_t n, const char **target) {
    static const char *llama[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                  "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};
    static const char *llama_t[] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
    static const char *gpt2[] = {NULL, NULL, NULL, "attn.c_proj", NULL, "mlp.c_fc", "mlp.c_proj"};
    if (m->arch == KF_ARCH_GPT2) {
        *target = gpt2[w] ? gpt2[w] : "attn.c_attn"; // q, k, v: never a GPT-2 target (train.h)
        snprintf(path, n, "transformer.h.%d.%s", l, *target);
    } else {
        snprintf(path, n, "model.layers.%d.%s", l, llama[w]);
        *target = llama_t[w];
    }
}

void kf_train_lora_peft_key(const kf_model *m, int layer, kf_lin which, bool b, char *buf, size_t n) {
    char path[128];
    const char *target;
    peft_module(m, layer, which, path, sizeof path, &target);
    snprintf(buf, n, "base_model.model.%s.lora_%c.weight", path, b ? 'B' : 'A');
}

static kf_status write_adapter_config(const kf_train *t, const char *dir, const char *base, kf_error *err) {
    const kf_model *m = t->m;
    cJSON *o = cJSON_CreateObject(), *targets = cJSON_CreateArray();
    for (int w = 0; w < KF_LIN_COUNT; w++) {
        if (!(t->o.lora_targets >> w & 1u)) continue;
        char path[128];
        const char *target;
        peft_module(m, 0, (kf_lin)w, path, sizeof path, &target);
        cJSON_AddItemToArray(targets, cJSON_CreateString(target));
    }
    cJSON_AddStringToObject(o, "peft_type", "LORA");
    cJSON_AddStringToObject(o, "task_type", "CAUSAL_LM");
    cJSON_AddStringToObject(o, "base_model_name_or_path", base ? base : "");
    cJSON_AddNumberToObject(o, "r", t->o.lora_rank);
    cJSON_AddNumberToObject(o, "lora_alpha", t->o.lora_alpha);
    cJSON_AddNumberToObject(o, "lora_dropout", 0.0);
    cJSON_AddItemToObject(o, "target_modules", targets);
    // GPT-2's Conv1D stores (in, out): PEFT transposes the update for it.
    cJSON_AddBoolToObject(o, "fan_in_fan_out", m->arch == KF_ARCH_GPT2);
    cJSON_AddStringToObject(o, "bias", "none");
    cJSON_AddBoolToObject(o, "inference_mode", true);
    cJSON_AddBoolToObject(o, "use_rslora", false);
    cJSON_AddBoolToObject(o, "use_dora", false);
    char *text = cJSON_Print(o);
    cJSON_Delete(o);
    if (!text) return kf_error_set(err, KF_ERR_NOMEM, "train: out of memory");
    char path[1100], tmp[1200];
    if (!kf_path_join(path, sizeof path, dir, "adapter_config.json")) {
        free(text);
        return kf_error_set(err, KF_ERR_ARG, "%s: path too long", dir);
    }
    FILE *f;
    kf_status s = kf_file_begin(path, tmp, sizeof tmp, &f, err);
    if (s == KF_OK) {
        bool ok = fputs(text, f) >= 0 && fputc('\n', f) != EOF;
        s = kf_file_commit(f, ok, tmp, path, err);
    }
    free(text);
    return s;
}

kf_status kf_train_lora_save_peft(const kf_train *t, const char *dir, const char *base, kf_error *err) {
    const kf_model *m = t->m;
    if (t->o.mode != KF_TRAIN_LORA) return kf_error_set(err, KF_ERR_ARG, "train: no LoRA adapters to save");
    if (!kf_dir_exists(dir) && mkdir(dir, 0755) != 0)
        return kf_error_set(err, KF_ERR_IO, "%s: cannot create the adapter folder", dir);
    int n = 0;
    for (int w = 0; w < KF_LIN_COUNT; w++) n += (t->o.lora_targets >> w & 1u) ? 2 * m->n_layer : 0;
    char (*names)[160] = calloc((size_t)n, sizeof *names);
    const char **np = calloc((size_t)n, sizeof *np);
    kf_tensor *ts = calloc((size_t)n, sizeof *ts);
    const kf_tensor **tp = calloc((size_t)n, sizeof *tp);
    kf_status s = KF_OK;
    if (!names || !np || !ts || !tp) {
        s = kf_error_set(err, KF_ERR_NOMEM, "train: out of memory");
        goto done;
    }
    int k = 0;
    for (int l = 0; l < m->n_layer; l++)
        for (int w = 0; w < KF_LIN_COUNT; w++) {
            const lora_slot *sl = &t->lora[l * KF_LIN_COUNT + w];
            if (!sl->A) continue;
            kf_train_lora_peft_key(m, l, (kf_lin)w, false, names[k], sizeof names[k]);
            ts[k].data = sl->A;
            kf_tensor_set_shape(&ts[k], 2, (int64_t[]){t->o.lora_rank, sl->in});
            kf_train_lora_peft_key(m, l, (kf_lin)w, true, names[k + 1], sizeof names[k + 1]);
            ts[k + 1].data = sl->B;
            kf_tensor_set_shape(&ts[k + 1], 2, (int64_t[]){sl->out, t->o.lora_rank});
            k += 2;
        }
    for (int i = 0; i < n; i++) np[i] = names[i], tp[i] = &ts[i];
    char path[1100], tmp[1200];
    if (!kf_path_join(path, sizeof path, dir, "adapter_model.safetensors")) {
        s = kf_error_set(err, KF_ERR_ARG, "%s: path too long", dir);
        goto done;
    }
    FILE *f;
    if ((s = kf_file_begin(path, tmp, sizeof tmp, &f, err)) != KF_OK) goto done;
    bool ok = kf_st_write(f, np, tp, n, true);
    if ((s = kf_file_commit(f, ok, tmp, path, err)) != KF_OK) goto done;
    s = write_adapter_config(t, dir, base, err);
done:
    free(names);
    free(np);
    free(ts);
    free(tp);
    return s;
}
