// Llama-family checkpoints in Hugging Face layout, both directions:
// LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM (q/k/v biases).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "io/hf_arch.h"

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
    TRY(kf_hf_config_int(c, "vocab_size", 0, 1, 1 << 24, &m->n_vocab, err));
    TRY(kf_hf_config_int(c, "hidden_size", 0, 1, 1 << 20, &m->n_embd, err));
    TRY(kf_hf_config_int(c, "num_hidden_layers", 0, 1, 4096, &m->n_layer, err));
    TRY(kf_hf_config_int(c, "num_attention_heads", 0, 1, 4096, &m->n_head, err));
    TRY(kf_hf_config_int(c, "num_key_value_heads", m->n_head, 1, m->n_head, &m->n_head_kv, err));
    if (!kf_hf_config_has(c, "head_dim") && m->n_embd % m->n_head != 0)
        return kf_error_set(err, KF_ERR_FORMAT, "%s: hidden_size %d is not a multiple of num_attention_heads %d",
                            c->path, m->n_embd, m->n_head);
    TRY(kf_hf_config_int(c, "head_dim", m->n_embd / m->n_head, 1, 1 << 16, &m->head_dim, err));
    TRY(kf_hf_config_int(c, "max_position_embeddings", 2048, 1, 1 << 24, &m->n_ctx_train, err));
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

kf_status kf_hf_llama_load(kf_hf_loader *ld, kf_error *err) {
    kf_model *m = ld->m;
    const kf_hf_config *c = ld->cfg;
    m->arch = KF_ARCH_LLAMA;
    m->norm = KF_NORM_RMS;
    m->act = KF_ACT_SILU;
    m->pos = KF_POS_ROPE;
    m->gated_ffn = true;
    bool bias_qkv = false, bias_o = false, tie;
    TRY(read_hparams(ld, &bias_qkv, &bias_o, err));
    TRY(kf_hf_config_bool(c, "tie_word_embeddings", false, &tie, err));
    m->layers = calloc((size_t)m->n_layer, sizeof *m->layers);
    int *n_ff = malloc(sizeof *n_ff * (size_t)m->n_layer);
    kf_status s = m->layers && n_ff ? KF_OK : kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory", c->path);
    if (s == KF_OK) s = kf_hf_config_int_per_layer(c, "intermediate_size", 0, m->n_layer, 1 << 24, n_ff, err);
    for (int l = 0; l < m->n_layer && s == KF_OK; l++) s = read_layer(ld, l, n_ff[l], bias_qkv, bias_o, err);
    free(n_ff);
    if (s != KF_OK) return s;
    TRY(kf_hf_get2(ld, "model.embed_tokens.weight", m->n_vocab, m->n_embd, true, &m->tok_embd, err));
    TRY(kf_hf_get1(ld, "model.norm.weight", m->n_embd, true, &m->out_norm_w, err));
    // An absent head means tied, whatever the config says.
    if (!tie && kf_hf_has(ld, "lm_head.weight"))
        return kf_hf_get2(ld, "lm_head.weight", m->n_vocab, m->n_embd, true, &m->lm_head, err);
    kf_hf_skip(ld, "lm_head.weight");
    m->lm_head = m->tok_embd;
    m->tied_head = true;
    return KF_OK;
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

kf_status kf_hf_llama_export(const kf_model *m, cJSON *cfg, kf_hf_outs *o, kf_error *err) {
    if (m->norm != KF_NORM_RMS || m->act != KF_ACT_SILU || m->pos != KF_POS_ROPE || !m->gated_ffn)
        return kf_error_set(err, KF_ERR_UNSUPPORTED, "%s: a Llama model needs RMSNorm, SiLU, RoPE and a gated FFN",
                            o->dir);
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
