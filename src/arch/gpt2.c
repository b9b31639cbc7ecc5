// The GPT-2 family: LayerNorm, learned positions, GELU-tanh, biases.
// Hugging Face (GPT2LMHeadModel) and GGUF (`gpt2`), both directions.
// HF names carry a "transformer." prefix or none; Conv1D weights are stored
// (in, out) and the attention's q, k, v are fused in c_attn (C, 3C), so they
// are transposed and split at load time, and fused back when writing. GGUF
// stores q, k, v fused as attn_qkv (3C, C) rows.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "arch/arch.h"

#define TRY(x)                        \
    do {                              \
        kf_status s_ = (x);           \
        if (s_ != KF_OK) return s_;   \
    } while (0)

static kf_status read_hparams(kf_hf_loader *ld, kf_error *err) {
    kf_model *m = ld->m;
    const kf_hf_config *c = ld->cfg;
    const char *act;
    bool scale, inv_layer;
    TRY(kf_hf_config_str(c, "activation_function", "gelu_new", &act, err));
    char esc[40];
    if (strcmp(act, "gelu_new") != 0 && strcmp(act, "gelu_pytorch_tanh") != 0)
        return kf_error_set(err, KF_ERR_UNSUPPORTED,
                            "%s: activation_function '%s' is not supported (gelu_new, gelu_pytorch_tanh)", c->path,
                            kf_str_escape(esc, sizeof esc, act, KF_STR_NUL));
    TRY(kf_hf_config_bool(c, "scale_attn_weights", true, &scale, err));
    TRY(kf_hf_config_bool(c, "scale_attn_by_inverse_layer_idx", false, &inv_layer, err));
    if (!scale || inv_layer)
        return kf_error_set(err, KF_ERR_UNSUPPORTED, "%s: only the standard 1/sqrt(head_dim) attention scale is supported",
                            c->path);
    TRY(kf_hf_config_int(c, "vocab_size", 0, 1, KF_MAX_VOCAB, &m->n_vocab, err));
    TRY(kf_hf_config_int(c, "n_embd", 0, 1, KF_MAX_EMBD, &m->n_embd, err));
    TRY(kf_hf_config_int(c, "n_layer", 0, 1, KF_MAX_LAYERS, &m->n_layer, err));
    TRY(kf_hf_config_int(c, "n_head", 0, 1, KF_MAX_HEADS, &m->n_head, err));
    if (m->n_embd % m->n_head != 0)
        return kf_error_set(err, KF_ERR_FORMAT, "%s: n_embd %d is not a multiple of n_head %d", c->path, m->n_embd,
                            m->n_head);
    m->n_head_kv = m->n_head;
    m->head_dim = m->n_embd / m->n_head;
    TRY(kf_hf_config_int(c, "n_positions", 1024, 1, KF_MAX_CTX, &m->n_ctx_train, err));
    TRY(kf_hf_config_float(c, "layer_norm_epsilon", 1e-5f, &m->norm_eps, err));
    return KF_OK;
}

static kf_status read_layer(kf_hf_loader *ld, const char *pre, int l, int n_ff, kf_error *err) {
    const kf_model *m = ld->m;
    kf_layer *L = &m->layers[l];
    int64_t C = m->n_embd;
    char n[160];
#define NAME(suffix) (snprintf(n, sizeof n, "%sh.%d." suffix, pre, l), n)
    L->n_ff = n_ff;
    kf_tensor b_qkv = {0};
    kf_tensor *qkv[3] = {&L->wq, &L->wk, &L->wv};
    TRY(kf_hf_get1(ld, NAME("ln_1.weight"), C, true, &L->attn_norm_w, err));
    TRY(kf_hf_get1(ld, NAME("ln_1.bias"), C, true, &L->attn_norm_b, err));
    TRY(kf_hf_get_conv1d(ld, NAME("attn.c_attn.weight"), C, 3 * C, 3, qkv, err));
    TRY(kf_hf_get1(ld, NAME("attn.c_attn.bias"), 3 * C, true, &b_qkv, err));
    kf_tensor *bias[3] = {&L->bq, &L->bk, &L->bv}; // views into the fused (3C) bias
    for (int i = 0; i < 3; i++) {
        *bias[i] = b_qkv;
        kf_tensor_set_shape(bias[i], 1, &C);
        bias[i]->data = b_qkv.data + i * C;
    }
    kf_tensor *wo = &L->wo, *up = &L->w_up, *down = &L->w_down;
    TRY(kf_hf_get_conv1d(ld, NAME("attn.c_proj.weight"), C, C, 1, &wo, err));
    TRY(kf_hf_get1(ld, NAME("attn.c_proj.bias"), C, true, &L->bo, err));
    TRY(kf_hf_get1(ld, NAME("ln_2.weight"), C, true, &L->ffn_norm_w, err));
    TRY(kf_hf_get1(ld, NAME("ln_2.bias"), C, true, &L->ffn_norm_b, err));
    TRY(kf_hf_get_conv1d(ld, NAME("mlp.c_fc.weight"), C, n_ff, 1, &up, err));
    TRY(kf_hf_get1(ld, NAME("mlp.c_fc.bias"), n_ff, true, &L->b_up, err));
    TRY(kf_hf_get_conv1d(ld, NAME("mlp.c_proj.weight"), n_ff, C, 1, &down, err));
    TRY(kf_hf_get1(ld, NAME("mlp.c_proj.bias"), C, true, &L->b_down, err));
#undef NAME
    return KF_OK;
}

static kf_status hf_load(kf_hf_loader *ld, kf_error *err) {
    kf_model *m = ld->m;
    const kf_hf_config *c = ld->cfg;
    bool tie;
    TRY(read_hparams(ld, err));
    TRY(kf_hf_config_bool(c, "tie_word_embeddings", true, &tie, err));
    const char *pre = kf_hf_has(ld, "transformer.wte.weight") ? "transformer." : "";
    m->layers = calloc((size_t)m->n_layer, sizeof *m->layers);
    int *n_ff = malloc(sizeof *n_ff * (size_t)m->n_layer);
    kf_status s = m->layers && n_ff ? KF_OK : kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory", c->path);
    // n_inner null means 4 x n_embd
    if (s == KF_OK) s = kf_hf_config_int_per_layer(c, "n_inner", 4 * m->n_embd, m->n_layer, KF_MAX_FFN, n_ff, err);
    for (int l = 0; l < m->n_layer && s == KF_OK; l++) s = read_layer(ld, pre, l, n_ff[l], err);
    free(n_ff);
    if (s != KF_OK) return s;
    char n[64];
#define NAME(suffix) (snprintf(n, sizeof n, "%s" suffix, pre), n)
    TRY(kf_hf_get2(ld, NAME("wte.weight"), m->n_vocab, m->n_embd, true, &m->tok_embd, err));
    TRY(kf_hf_get2(ld, NAME("wpe.weight"), m->n_ctx_train, m->n_embd, true, &m->pos_embd, err));
    TRY(kf_hf_get1(ld, NAME("ln_f.weight"), m->n_embd, true, &m->out_norm_w, err));
    TRY(kf_hf_get1(ld, NAME("ln_f.bias"), m->n_embd, true, &m->out_norm_b, err));
#undef NAME
    return kf_hf_get_head(ld, tie, err);
}

// n_inner: null when every layer has 4C, one integer when all agree, else a list.
static cJSON *n_inner_json(const kf_model *m) {
    bool same = true;
    for (int l = 1; l < m->n_layer; l++) same = same && m->layers[l].n_ff == m->layers[0].n_ff;
    if (same) return m->layers[0].n_ff == 4 * m->n_embd ? cJSON_CreateNull() : cJSON_CreateNumber(m->layers[0].n_ff);
    cJSON *a = cJSON_CreateArray();
    for (int l = 0; l < m->n_layer; l++) cJSON_AddItemToArray(a, cJSON_CreateNumber(m->layers[l].n_ff));
    return a;
}

// Conv1D layout: (in, out) = the transpose of w (out, in), with n_parts
// weights of equal shape placed side by side along out.
static kf_status conv1d(kf_hf_outs *o, const kf_tensor *const *w, int n_parts, kf_tensor *out, kf_error *err) {
    int64_t n_out = w[0]->ne[0], n_in = w[0]->ne[1], ne[2] = {n_in, n_out * n_parts};
    float *d = kf_hf_outs_alloc(o, n_in * n_out * n_parts); // (n_in, n_parts*n_out)
    if (!d) return kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory", o->dir);
    for (int p = 0; p < n_parts; p++)
        for (int64_t j = 0; j < n_out; j++)
            for (int64_t i = 0; i < n_in; i++) d[i * ne[1] + p * n_out + j] = w[p]->data[j * n_in + i];
    kf_tensor_set_shape(out, 2, ne);
    out->data = d;
    return KF_OK;
}

// Biases side by side; absent ones are zeros, which is what GPT-2 computes without them.
static kf_status bias(kf_hf_outs *o, const kf_tensor *const *b, int n_parts, int64_t n, kf_tensor *out,
                      kf_error *err) {
    int64_t ne = n * n_parts;
    float *d = kf_hf_outs_alloc(o, ne);
    if (!d) return kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory", o->dir);
    for (int p = 0; p < n_parts; p++)
        if (kf_tensor_present(b[p])) memcpy(d + p * n, b[p]->data, sizeof(float) * (size_t)n);
    kf_tensor_set_shape(out, 1, &ne);
    out->data = d;
    return KF_OK;
}

static kf_status hf_export(const kf_model *m, cJSON *cfg, kf_hf_outs *o, kf_error *err) {
    if (m->n_head_kv != m->n_head || (int64_t)m->n_head * m->head_dim != m->n_embd)
        return kf_error_set(err, KF_ERR_UNSUPPORTED,
                            "%s: a GPT-2 model needs plain multi-head attention with n_head x head_dim = n_embd",
                            o->dir);
    cJSON *archs = cJSON_AddArrayToObject(cfg, "architectures");
    cJSON_AddItemToArray(archs, cJSON_CreateString("GPT2LMHeadModel"));
    cJSON_AddStringToObject(cfg, "model_type", "gpt2");
    cJSON_AddNumberToObject(cfg, "vocab_size", m->n_vocab);
    cJSON_AddNumberToObject(cfg, "n_positions", m->n_ctx_train);
    cJSON_AddNumberToObject(cfg, "n_ctx", m->n_ctx_train);
    cJSON_AddNumberToObject(cfg, "n_embd", m->n_embd);
    cJSON_AddNumberToObject(cfg, "n_layer", m->n_layer);
    cJSON_AddNumberToObject(cfg, "n_head", m->n_head);
    cJSON_AddItemToObject(cfg, "n_inner", n_inner_json(m));
    cJSON_AddStringToObject(cfg, "activation_function", "gelu_new");
    cJSON_AddItemToObject(cfg, "layer_norm_epsilon", kf_hf_json_f32(m->norm_eps));
    cJSON_AddBoolToObject(cfg, "tie_word_embeddings", m->tied_head);

    const char *P = "transformer.";
    int64_t C = m->n_embd;
    TRY(kf_hf_outs_add(o, &m->tok_embd, err, "%swte.weight", P));
    TRY(kf_hf_outs_add(o, &m->pos_embd, err, "%swpe.weight", P));
    for (int l = 0; l < m->n_layer; l++) {
        const kf_layer *L = &m->layers[l];
        kf_tensor t = {0};
        const kf_tensor *qkv[3] = {&L->wq, &L->wk, &L->wv}, *bqkv[3] = {&L->bq, &L->bk, &L->bv};
        const kf_tensor *wo = &L->wo, *bo = &L->bo, *up = &L->w_up, *bup = &L->b_up, *down = &L->w_down,
                        *bdown = &L->b_down;
        TRY(kf_hf_outs_add(o, &L->attn_norm_w, err, "%sh.%d.ln_1.weight", P, l));
        TRY(kf_hf_outs_add(o, &L->attn_norm_b, err, "%sh.%d.ln_1.bias", P, l));
        TRY(conv1d(o, qkv, 3, &t, err));
        TRY(kf_hf_outs_add(o, &t, err, "%sh.%d.attn.c_attn.weight", P, l));
        TRY(bias(o, bqkv, 3, C, &t, err));
        TRY(kf_hf_outs_add(o, &t, err, "%sh.%d.attn.c_attn.bias", P, l));
        TRY(conv1d(o, &wo, 1, &t, err));
        TRY(kf_hf_outs_add(o, &t, err, "%sh.%d.attn.c_proj.weight", P, l));
        TRY(bias(o, &bo, 1, C, &t, err));
        TRY(kf_hf_outs_add(o, &t, err, "%sh.%d.attn.c_proj.bias", P, l));
        TRY(kf_hf_outs_add(o, &L->ffn_norm_w, err, "%sh.%d.ln_2.weight", P, l));
        TRY(kf_hf_outs_add(o, &L->ffn_norm_b, err, "%sh.%d.ln_2.bias", P, l));
        TRY(conv1d(o, &up, 1, &t, err));
        TRY(kf_hf_outs_add(o, &t, err, "%sh.%d.mlp.c_fc.weight", P, l));
        TRY(bias(o, &bup, 1, L->n_ff, &t, err));
        TRY(kf_hf_outs_add(o, &t, err, "%sh.%d.mlp.c_fc.bias", P, l));
        TRY(conv1d(o, &down, 1, &t, err));
        TRY(kf_hf_outs_add(o, &t, err, "%sh.%d.mlp.c_proj.weight", P, l));
        TRY(bias(o, &bdown, 1, C, &t, err));
        TRY(kf_hf_outs_add(o, &t, err, "%sh.%d.mlp.c_proj.bias", P, l));
    }
    TRY(kf_hf_outs_add(o, &m->out_norm_w, err, "%sln_f.weight", P));
    TRY(kf_hf_outs_add(o, &m->out_norm_b, err, "%sln_f.bias", P));
    if (!m->tied_head) TRY(kf_hf_outs_add(o, &m->lm_head, err, "lm_head.weight"));
    return KF_OK;
}

// ---- GGUF -------------------------------------------------------------------------------

// Splits the fused (Q + 2 KV, C) attn_qkv weight (or its bias) into row views.
static kf_status split_qkv(kf_gguf_loader *ld, const char *name, const kf_tensor *qkv, kf_tensor *q, kf_tensor *k,
                           kf_tensor *v) {
    const kf_model *m = ld->m;
    int64_t Q = (int64_t)m->n_head * m->head_dim, KV = (int64_t)m->n_head_kv * m->head_dim;
    if (qkv->ne[0] != Q + 2 * KV)
        return kf_error_set(ld->err, KF_ERR_FORMAT, "%s: tensor %s has %lld rows, expected %lld", ld->g->path, name,
                            (long long)qkv->ne[0], (long long)(Q + 2 * KV));
    int64_t cols = qkv->ndim == 2 ? qkv->ne[1] : 1;
    kf_tensor *parts[3] = {q, k, v};
    int64_t rows[3] = {Q, KV, KV}, at = 0;
    for (int i = 0; i < 3; i++) {
        *parts[i] = *qkv;
        parts[i]->ne[0] = rows[i];
        parts[i]->data = qkv->data + at * cols;
        at += rows[i];
    }
    return KF_OK;
}

static kf_status gguf_load(kf_gguf_loader *ld) {
    kf_model *m = ld->m;
    kf_gguf *g = ld->g;
    kf_status st;
    double eps;
    if ((st = kf_gguf_load_hparam_layers(ld, kf_gguf_key(ld, "attention.head_count_kv"), false, 1, m->n_head,
                                         &m->n_head_kv)) != KF_OK ||
        (st = kf_gguf_get_float(g, kf_gguf_key(ld, "attention.layer_norm_epsilon"), true, &eps, ld->err)) != KF_OK)
        return st;
    if (m->n_embd % m->n_head != 0)
        return kf_error_set(ld->err, KF_ERR_FORMAT, "%s: embedding length %d is not a multiple of %d heads", g->path,
                            m->n_embd, m->n_head);
    m->head_dim = m->n_embd / m->n_head;
    m->norm_eps = (float)eps;
    if ((st = kf_gguf_load_ffn_widths(ld)) != KF_OK ||
        (st = kf_gguf_load_tensor(ld, "token_embd.weight", &m->tok_embd, true, 0)) != KF_OK ||
        (st = kf_gguf_load_tensor(ld, "position_embd.weight", &m->pos_embd, true, 0)) != KF_OK ||
        (st = kf_gguf_load_tensor(ld, "output_norm.weight", &m->out_norm_w, true, 0)) != KF_OK ||
        (st = kf_gguf_load_tensor(ld, "output_norm.bias", &m->out_norm_b, true, 0)) != KF_OK ||
        (st = kf_gguf_load_tensor(ld, "output.weight", &m->lm_head, false, 0)) != KF_OK)
        return st;
    // llama.cpp's converter stores GPT-2's tied head as a copy; identical
    // bytes mean tied.
    const kf_gguf_tensor *out = kf_gguf_find_tensor(g, "output.weight");
    const kf_gguf_tensor *emb = kf_gguf_find_tensor(g, "token_embd.weight");
    if (!out ||
        (out->dtype == emb->dtype && out->nbytes == emb->nbytes && memcmp(out->data, emb->data, out->nbytes) == 0)) {
        m->lm_head = m->tok_embd;
        m->tied_head = true;
    }
    for (int l = 0; l < m->n_layer; l++) {
        kf_layer *L = &m->layers[l];
        if ((st = kf_gguf_load_layer(ld, l, false)) != KF_OK) return st;
        char name[KF_GGUF_MAX_NAME];
        kf_tensor fused = {0};
        snprintf(name, sizeof name, "blk.%d.attn_qkv.weight", l);
        const bool keep = ld->keep_dtype; // split_qkv copies floats: the fused tensor is read as fp32
        ld->keep_dtype = false;
        st = kf_gguf_load_tensor(ld, name, &fused, false, 0);
        ld->keep_dtype = keep;
        if (st != KF_OK) return st;
        if (kf_tensor_present(&fused) && (st = split_qkv(ld, name, &fused, &L->wq, &L->wk, &L->wv)) != KF_OK) return st;
        memset(&fused, 0, sizeof fused);
        snprintf(name, sizeof name, "blk.%d.attn_qkv.bias", l);
        if ((st = kf_gguf_load_tensor(ld, name, &fused, false, 0)) != KF_OK) return st;
        if (kf_tensor_present(&fused) && (st = split_qkv(ld, name, &fused, &L->bq, &L->bk, &L->bv)) != KF_OK) return st;
    }
    return KF_OK;
}

static void gguf_export_keys(kf_gguf_out *o, const kf_model *m, const char *arch) {
    char key[128];
    snprintf(key, sizeof key, "%s.attention.layer_norm_epsilon", arch);
    kf_gguf_writer_add_f32(o->w, key, m->norm_eps);
}

// The head is stored even when tied (as a copy), as llama.cpp's converter does.
static void gguf_export_tensors(kf_gguf_out *o, const kf_model *m) {
    for (int l = 0; l < m->n_layer && o->err.code == KF_OK; l++) {
        const kf_layer *L = &m->layers[l];
        int nb = kf_tensor_present(&L->bq) + kf_tensor_present(&L->bk) + kf_tensor_present(&L->bv);
        if (nb != 0 && nb != 3)
            kf_error_set(&o->err, KF_ERR_UNSUPPORTED, "layer %d has some but not all Q/K/V biases", l);
    }
    kf_gguf_out_tensor(o, "token_embd.weight", &m->tok_embd, 0);
    kf_gguf_out_tensor(o, "position_embd.weight", &m->pos_embd, 0);
    kf_gguf_out_tensor(o, "output_norm.weight", &m->out_norm_w, 0);
    kf_gguf_out_tensor(o, "output_norm.bias", &m->out_norm_b, 0);
    kf_gguf_out_tensor(o, "output.weight", &m->lm_head, 0);
    for (int l = 0; l < m->n_layer; l++) kf_gguf_out_layer(o, m, l, false, true);
}

static const char *gguf_export_name(const kf_model *m) {
    (void)m;
    return "gpt2";
}

const kf_arch_desc kf_arch_gpt2 = {
    .id = KF_ARCH_GPT2,
    .name = "gpt2",
    .norm = KF_NORM_LAYER,
    .act = KF_ACT_GELU_TANH,
    .pos = KF_POS_LEARNED,
    .gated_ffn = false,
    .hf_classes = {"GPT2LMHeadModel"},
    .hf_load = hf_load,
    .hf_export = hf_export,
    .gguf_names = {"gpt2"},
    .gguf_export_name = gguf_export_name,
    .gguf_pad_ffn = true,
    .gguf_load = gguf_load,
    .gguf_export_keys = gguf_export_keys,
    .gguf_export_tensors = gguf_export_tensors,
};
