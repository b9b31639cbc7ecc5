// The Llama family: Llama, Mistral, Qwen2 (q/k/v biases). RMSNorm,
// rotate-half RoPE, grouped-query attention, SwiGLU. Hugging Face
// (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM) and GGUF (`llama`,
// `qwen2`, `deci` for per-layer FFN widths) in both directions; llama2.c checkpoints are src/io/llama2c.c.
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

static kf_status read_hparams(kf_hf_loader *ld, bool *bias_qkv, bool *bias_o, kf_error *err) {
    kf_model *m = ld->m;
    const kf_hf_config *c = ld->cfg;
    const char *act;
    bool mlp_bias;
    TRY(kf_hf_config_str(c, "hidden_act", "silu", &act, err));
    char esc[40];
    if (strcmp(act, "silu") != 0)
        return kf_error_set(err, KF_ERR_UNSUPPORTED, "%s: hidden_act '%s' is not supported (silu only)", c->path,
                            kf_str_escape(esc, sizeof esc, act, KF_STR_NUL));
    if (kf_hf_config_has(c, "rope_scaling"))
        return kf_error_set(err, KF_ERR_UNSUPPORTED, "%s: rope_scaling is not supported", c->path);
    TRY(kf_hf_config_bool(c, "mlp_bias", false, &mlp_bias, err));
    if (mlp_bias) return kf_error_set(err, KF_ERR_UNSUPPORTED, "%s: mlp_bias is not supported", c->path);
    TRY(kf_hf_config_int(c, "vocab_size", 0, 1, KF_MAX_VOCAB, &m->n_vocab, err));
    TRY(kf_hf_config_int(c, "hidden_size", 0, 1, KF_MAX_EMBD, &m->n_embd, err));
    TRY(kf_hf_config_int(c, "num_hidden_layers", 0, 1, KF_MAX_LAYERS, &m->n_layer, err));
    TRY(kf_hf_config_int(c, "num_attention_heads", 0, 1, KF_MAX_HEADS, &m->n_head, err));
    TRY(kf_hf_config_int(c, "num_key_value_heads", m->n_head, 1, m->n_head, &m->n_head_kv, err));
    if (!kf_hf_config_has(c, "head_dim") && m->n_embd % m->n_head != 0)
        return kf_error_set(err, KF_ERR_FORMAT, "%s: hidden_size %d is not a multiple of num_attention_heads %d",
                            c->path, m->n_embd, m->n_head);
    TRY(kf_hf_config_int(c, "head_dim", m->n_embd / m->n_head, 1, KF_MAX_HEAD_DIM, &m->head_dim, err));
    TRY(kf_hf_config_int(c, "max_position_embeddings", 2048, 1, KF_MAX_CTX, &m->n_ctx_train, err));
    TRY(kf_hf_config_float(c, "rms_norm_eps", 1e-6f, &m->norm_eps, err));
    TRY(kf_hf_config_float(c, "rope_theta", 10000.0f, &m->rope_theta, err));
    if (strcmp(ld->arch, "Qwen2ForCausalLM") == 0) {
        *bias_qkv = true;
        *bias_o = false;
    } else {
        TRY(kf_hf_config_bool(c, "attention_bias", false, bias_qkv, err));
        *bias_o = *bias_qkv;
    }
    return KF_OK;
}

static kf_status read_layer(kf_hf_loader *ld, int l, int n_ff, bool bias_qkv, bool bias_o, kf_error *err) {
    const kf_model *m = ld->m;
    kf_layer *L = &m->layers[l];
    int64_t C = m->n_embd, Q = (int64_t)m->n_head * m->head_dim, KV = (int64_t)m->n_head_kv * m->head_dim;
    char n[160];
#define NAME(suffix) (snprintf(n, sizeof n, "model.layers.%d." suffix, l), n)
    L->n_ff = n_ff;
    TRY(kf_hf_get1(ld, NAME("input_layernorm.weight"), C, true, &L->attn_norm_w, err));
    TRY(kf_hf_get2(ld, NAME("self_attn.q_proj.weight"), Q, C, true, &L->wq, err));
    TRY(kf_hf_get2(ld, NAME("self_attn.k_proj.weight"), KV, C, true, &L->wk, err));
    TRY(kf_hf_get2(ld, NAME("self_attn.v_proj.weight"), KV, C, true, &L->wv, err));
    TRY(kf_hf_get2(ld, NAME("self_attn.o_proj.weight"), C, Q, true, &L->wo, err));
    if (bias_qkv) {
        TRY(kf_hf_get1(ld, NAME("self_attn.q_proj.bias"), Q, true, &L->bq, err));
        TRY(kf_hf_get1(ld, NAME("self_attn.k_proj.bias"), KV, true, &L->bk, err));
        TRY(kf_hf_get1(ld, NAME("self_attn.v_proj.bias"), KV, true, &L->bv, err));
    }
    if (bias_o) TRY(kf_hf_get1(ld, NAME("self_attn.o_proj.bias"), C, true, &L->bo, err));
    TRY(kf_hf_get1(ld, NAME("post_attention_layernorm.weight"), C, true, &L->ffn_norm_w, err));
    TRY(kf_hf_get2(ld, NAME("mlp.gate_proj.weight"), n_ff, C, true, &L->w_gate, err));
    TRY(kf_hf_get2(ld, NAME("mlp.up_proj.weight"), n_ff, C, true, &L->w_up, err));
    TRY(kf_hf_get2(ld, NAME("mlp.down_proj.weight"), C, n_ff, true, &L->w_down, err));
#undef NAME
    return KF_OK;
}

static kf_status hf_load(kf_hf_loader *ld, kf_error *err) {
    kf_model *m = ld->m;
    const kf_hf_config *c = ld->cfg;
    bool bias_qkv = false, bias_o = false, tie;
    TRY(read_hparams(ld, &bias_qkv, &bias_o, err));
    TRY(kf_hf_config_bool(c, "tie_word_embeddings", false, &tie, err));
    m->layers = calloc((size_t)m->n_layer, sizeof *m->layers);
    int *n_ff = malloc(sizeof *n_ff * (size_t)m->n_layer);
    kf_status s = m->layers && n_ff ? KF_OK : kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory", c->path);
    if (s == KF_OK) s = kf_hf_config_int_per_layer(c, "intermediate_size", 0, m->n_layer, KF_MAX_FFN, n_ff, err);
    for (int l = 0; l < m->n_layer && s == KF_OK; l++) s = read_layer(ld, l, n_ff[l], bias_qkv, bias_o, err);
    free(n_ff);
    if (s != KF_OK) return s;
    TRY(kf_hf_get2(ld, "model.embed_tokens.weight", m->n_vocab, m->n_embd, true, &m->tok_embd, err));
    TRY(kf_hf_get1(ld, "model.norm.weight", m->n_embd, true, &m->out_norm_w, err));
    return kf_hf_get_head(ld, tie, err);
}

// intermediate_size: one integer, or a list when the layers' widths differ.
static cJSON *per_layer_json(const kf_model *m) {
    bool same = true;
    for (int l = 1; l < m->n_layer; l++) same = same && m->layers[l].n_ff == m->layers[0].n_ff;
    if (same) return cJSON_CreateNumber(m->layers[0].n_ff);
    cJSON *a = cJSON_CreateArray();
    for (int l = 0; l < m->n_layer; l++) cJSON_AddItemToArray(a, cJSON_CreateNumber(m->layers[l].n_ff));
    return a;
}

static kf_status hf_export(const kf_model *m, cJSON *cfg, kf_hf_outs *o, kf_error *err) {
    // q/k/v biases with an o bias: Llama attention_bias; without: Qwen2.
    bool bias_qkv = kf_tensor_present(&m->layers[0].bq), bias_o = kf_tensor_present(&m->layers[0].bo);
    for (int l = 0; l < m->n_layer; l++) {
        const kf_layer *L = &m->layers[l];
        if (kf_tensor_present(&L->bq) != bias_qkv || kf_tensor_present(&L->bk) != bias_qkv ||
            kf_tensor_present(&L->bv) != bias_qkv || kf_tensor_present(&L->bo) != bias_o || (bias_o && !bias_qkv))
            return kf_error_set(err, KF_ERR_UNSUPPORTED, "%s: layer %d: attention biases in a pattern no Hugging Face "
                                "architecture has", o->dir, l);
        if (kf_tensor_present(&L->b_up) || kf_tensor_present(&L->b_down) || kf_tensor_present(&L->attn_norm_b) ||
            kf_tensor_present(&L->ffn_norm_b))
            return kf_error_set(err, KF_ERR_UNSUPPORTED, "%s: layer %d: FFN or norm biases in a Llama model", o->dir, l);
    }
    if (kf_tensor_present(&m->out_norm_b))
        return kf_error_set(err, KF_ERR_UNSUPPORTED, "%s: output norm bias in a Llama model", o->dir);
    bool qwen2 = bias_qkv && !bias_o;
    cJSON *archs = cJSON_AddArrayToObject(cfg, "architectures");
    cJSON_AddItemToArray(archs, cJSON_CreateString(qwen2 ? "Qwen2ForCausalLM" : "LlamaForCausalLM"));
    cJSON_AddStringToObject(cfg, "model_type", qwen2 ? "qwen2" : "llama");
    cJSON_AddNumberToObject(cfg, "vocab_size", m->n_vocab);
    cJSON_AddNumberToObject(cfg, "hidden_size", m->n_embd);
    cJSON_AddItemToObject(cfg, "intermediate_size", per_layer_json(m));
    cJSON_AddNumberToObject(cfg, "num_hidden_layers", m->n_layer);
    cJSON_AddNumberToObject(cfg, "num_attention_heads", m->n_head);
    cJSON_AddNumberToObject(cfg, "num_key_value_heads", m->n_head_kv);
    cJSON_AddNumberToObject(cfg, "head_dim", m->head_dim);
    cJSON_AddStringToObject(cfg, "hidden_act", "silu");
    cJSON_AddNumberToObject(cfg, "max_position_embeddings", m->n_ctx_train);
    cJSON_AddItemToObject(cfg, "rms_norm_eps", kf_hf_json_f32(m->norm_eps));
    cJSON_AddItemToObject(cfg, "rope_theta", kf_hf_json_f32(m->rope_theta));
    cJSON_AddBoolToObject(cfg, "tie_word_embeddings", m->tied_head);
    if (!qwen2) cJSON_AddBoolToObject(cfg, "attention_bias", bias_qkv);
    cJSON_AddBoolToObject(cfg, "mlp_bias", false);

    TRY(kf_hf_outs_add(o, &m->tok_embd, err, "model.embed_tokens.weight"));
    for (int l = 0; l < m->n_layer; l++) {
        const kf_layer *L = &m->layers[l];
        TRY(kf_hf_outs_add(o, &L->attn_norm_w, err, "model.layers.%d.input_layernorm.weight", l));
        TRY(kf_hf_outs_add(o, &L->wq, err, "model.layers.%d.self_attn.q_proj.weight", l));
        TRY(kf_hf_outs_add(o, &L->wk, err, "model.layers.%d.self_attn.k_proj.weight", l));
        TRY(kf_hf_outs_add(o, &L->wv, err, "model.layers.%d.self_attn.v_proj.weight", l));
        TRY(kf_hf_outs_add(o, &L->wo, err, "model.layers.%d.self_attn.o_proj.weight", l));
        if (bias_qkv) {
            TRY(kf_hf_outs_add(o, &L->bq, err, "model.layers.%d.self_attn.q_proj.bias", l));
            TRY(kf_hf_outs_add(o, &L->bk, err, "model.layers.%d.self_attn.k_proj.bias", l));
            TRY(kf_hf_outs_add(o, &L->bv, err, "model.layers.%d.self_attn.v_proj.bias", l));
        }
        if (bias_o) TRY(kf_hf_outs_add(o, &L->bo, err, "model.layers.%d.self_attn.o_proj.bias", l));
        TRY(kf_hf_outs_add(o, &L->ffn_norm_w, err, "model.layers.%d.post_attention_layernorm.weight", l));
        TRY(kf_hf_outs_add(o, &L->w_gate, err, "model.layers.%d.mlp.gate_proj.weight", l));
        TRY(kf_hf_outs_add(o, &L->w_up, err, "model.layers.%d.mlp.up_proj.weight", l));
        TRY(kf_hf_outs_add(o, &L->w_down, err, "model.layers.%d.mlp.down_proj.weight", l));
    }
    TRY(kf_hf_outs_add(o, &m->out_norm_w, err, "model.norm.weight"));
    if (!m->tied_head) TRY(kf_hf_outs_add(o, &m->lm_head, err, "lm_head.weight"));
    return KF_OK;
}

// ---- GGUF -------------------------------------------------------------------------------

// `llama`, `qwen2` and `deci`: the same blocks (Qwen2 with Q/K/V biases;
// deci, llama.cpp's architecture of Nemotron/DeciLM, with per-layer FFN
// widths and head counts); llama.cpp permutes Llama's and deci's Q/K rows to
// the interleaved RoPE layout but keeps Qwen2's rotate-half rows (its NEOX
// RoPE).
static kf_status gguf_load(kf_gguf_loader *ld) {
    kf_model *m = ld->m;
    kf_gguf *g = ld->g;
    kf_status st;
    int64_t experts = 0;
    if ((st = kf_gguf_get_int(g, kf_gguf_key(ld, "expert_count"), false, &experts, ld->err)) != KF_OK) return st;
    if (experts > 0)
        return kf_error_set(ld->err, KF_ERR_UNSUPPORTED,
                            "%s: mixture-of-experts models (%lld experts) are not supported", g->path,
                            (long long)experts);
    if (kf_gguf_find_tensor(g, "rope_freqs.weight"))
        return kf_error_set(ld->err, KF_ERR_UNSUPPORTED,
                            "%s: per-frequency RoPE factors (rope_freqs) are not supported", g->path);
    int head_dim = 0, rope_dim = 0, v_dim = 0;
    double eps, theta = 10000.0;
    if ((st = kf_gguf_load_hparam_layers(ld, kf_gguf_key(ld, "attention.head_count_kv"), false, 1, m->n_head,
                                         &m->n_head_kv)) != KF_OK ||
        (st = kf_gguf_get_float(g, kf_gguf_key(ld, "attention.layer_norm_rms_epsilon"), true, &eps, ld->err)) !=
            KF_OK ||
        (st = kf_gguf_get_float(g, kf_gguf_key(ld, "rope.freq_base"), false, &theta, ld->err)) != KF_OK)
        return st;
    if (m->n_embd % m->n_head == 0) head_dim = m->n_embd / m->n_head;
    if ((st = kf_gguf_load_hparam(ld, kf_gguf_key(ld, "attention.key_length"), head_dim == 0, 1, KF_MAX_HEAD_DIM,
                             &head_dim)) != KF_OK)
        return st;
    rope_dim = v_dim = head_dim;
    if ((st = kf_gguf_load_hparam(ld, kf_gguf_key(ld, "attention.value_length"), false, 1, KF_MAX_HEAD_DIM, &v_dim)) !=
            KF_OK ||
        (st = kf_gguf_load_hparam(ld, kf_gguf_key(ld, "rope.dimension_count"), false, 1, KF_MAX_HEAD_DIM, &rope_dim)) !=
            KF_OK)
        return st;
    if (v_dim != head_dim)
        return kf_error_set(ld->err, KF_ERR_UNSUPPORTED, "%s: value head size %d differs from key head size %d",
                            g->path, v_dim, head_dim);
    if (rope_dim != head_dim)
        return kf_error_set(ld->err, KF_ERR_UNSUPPORTED, "%s: partial RoPE (%d of %d dimensions) is not supported",
                            g->path, rope_dim, head_dim);
    char *scaling = NULL;
    if ((st = kf_gguf_get_str(g, kf_gguf_key(ld, "rope.scaling.type"), false, &scaling, ld->err)) != KF_OK) return st;
    char esc[KF_ESC_NAME];
    if (scaling && strcmp(scaling, "none") != 0)
        st = kf_error_set(ld->err, KF_ERR_UNSUPPORTED, "%s: RoPE scaling '%s' is not supported", g->path,
                          kf_str_escape(esc, sizeof esc, scaling, KF_STR_NUL));
    free(scaling);
    if (st != KF_OK) return st;
    m->head_dim = head_dim;
    m->norm_eps = (float)eps;
    m->rope_theta = (float)theta;
    if ((st = kf_gguf_load_ffn_widths(ld)) != KF_OK ||
        (st = kf_gguf_load_tensor(ld, "token_embd.weight", &m->tok_embd, true, 0)) != KF_OK ||
        (st = kf_gguf_load_tensor(ld, "output_norm.weight", &m->out_norm_w, true, 0)) != KF_OK ||
        (st = kf_gguf_load_tensor(ld, "output.weight", &m->lm_head, false, 0)) != KF_OK)
        return st;
    if (!kf_tensor_present(&m->lm_head)) {
        m->lm_head = m->tok_embd;
        m->tied_head = true;
    }
    bool interleaved = strcmp(ld->arch, "qwen2") != 0; // llama and deci
    for (int l = 0; l < m->n_layer; l++)
        if ((st = kf_gguf_load_layer(ld, l, interleaved)) != KF_OK) return st;
    return KF_OK;
}

static void gguf_export_keys(kf_gguf_out *o, const kf_model *m, const char *arch) {
    char key[128];
#define KEY(suffix) (snprintf(key, sizeof key, "%s." suffix, arch), key)
    kf_gguf_writer_add_f32(o->w, KEY("attention.layer_norm_rms_epsilon"), m->norm_eps);
    kf_gguf_writer_add_f32(o->w, KEY("rope.freq_base"), m->rope_theta);
    kf_gguf_writer_add_u32(o->w, KEY("rope.dimension_count"), (uint32_t)m->head_dim);
    kf_gguf_writer_add_u32(o->w, KEY("attention.key_length"), (uint32_t)m->head_dim);
    kf_gguf_writer_add_u32(o->w, KEY("attention.value_length"), (uint32_t)m->head_dim);
    kf_gguf_writer_add_u32(o->w, KEY("vocab_size"), (uint32_t)m->n_vocab);
#undef KEY
}

// A tied head is left out: llama.cpp falls back to token_embd.
static void gguf_export_tensors(kf_gguf_out *o, const kf_model *m) {
    kf_gguf_out_tensor(o, "token_embd.weight", &m->tok_embd, 0);
    kf_gguf_out_tensor(o, "output_norm.weight", &m->out_norm_w, 0);
    if (!m->tied_head) kf_gguf_out_tensor(o, "output.weight", &m->lm_head, 0);
    for (int l = 0; l < m->n_layer; l++) kf_gguf_out_layer(o, m, l, true, false);
}

// llama.cpp's `llama` sizes every layer's FFN like layer 0 (it refuses
// other shapes); its `deci` reads feed_forward_length per layer and has the
// same tensors, RoPE layout and keys.
static const char *gguf_export_name(const kf_model *m) {
    for (int l = 1; l < m->n_layer; l++)
        if (m->layers[l].n_ff != m->layers[0].n_ff) return "deci";
    return "llama";
}

const kf_arch_desc kf_arch_llama = {
    .id = KF_ARCH_LLAMA,
    .name = "llama",
    .norm = KF_NORM_RMS,
    .act = KF_ACT_SILU,
    .pos = KF_POS_ROPE,
    .gated_ffn = true,
    .hf_classes = {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"},
    .hf_load = hf_load,
    .hf_export = hf_export,
    .gguf_names = {"llama", "qwen2", "deci"},
    .gguf_export_name = gguf_export_name,
    .gguf_load = gguf_load,
    .gguf_export_keys = gguf_export_keys,
    .gguf_export_tensors = gguf_export_tensors,
};
