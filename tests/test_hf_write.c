// Writing Hugging Face folders and reading them back: bit-identical round
// trips (Llama, GPT-2, per-layer FFN widths), sharded checkpoints (read and
// written), weights written as BF16/F16, and F16/BF16 conversion of
// hand-made files with known values.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "io/save.h"
#include "io/load.h"
#include "core/file.h"
#include "formats/safetensors.h"
#include "model/model.h"
#include "test_hf_util.h"

#define ASSERT_OK(call)                                                  \
    do {                                                                 \
        kf_status s_ = (call);                                           \
        if (s_ != KF_OK) fail_msg("%s: %s", #call, err.msg);             \
    } while (0)

static void llama_dir(char *out, size_t n) { snprintf(out, n, "%s/models/llama-gutenberg-1.4m", kf_test_root()); }

static bool gpt2_dir(char *out, size_t n) {
    snprintf(out, n, "%s/../shared/models/gpt2-gutenberg-5.9m", kf_test_root());
    return kf_test_have(out);
}

static void tensor_equal(const kf_tensor *a, const kf_tensor *b, const char *what, int layer) {
    if (kf_tensor_present(a) != kf_tensor_present(b)) fail_msg("layer %d %s: present in one model only", layer, what);
    if (!kf_tensor_present(a)) return;
    if (a->ndim != b->ndim || memcmp(a->ne, b->ne, sizeof a->ne) != 0) fail_msg("layer %d %s: shapes differ", layer, what);
    if (memcmp(a->data, b->data, sizeof(float) * (size_t)kf_tensor_nelem(a)) != 0)
        fail_msg("layer %d %s: values differ", layer, what);
}

// Same hyper-parameters and every tensor bit-identical.
static void models_equal(const kf_model *a, const kf_model *b) {
    assert_int_equal(a->arch, b->arch);
    assert_int_equal(a->norm, b->norm);
    assert_int_equal(a->act, b->act);
    assert_int_equal(a->pos, b->pos);
    assert_int_equal(a->gated_ffn, b->gated_ffn);
    assert_int_equal(a->n_vocab, b->n_vocab);
    assert_int_equal(a->n_embd, b->n_embd);
    assert_int_equal(a->n_layer, b->n_layer);
    assert_int_equal(a->n_head, b->n_head);
    assert_int_equal(a->n_head_kv, b->n_head_kv);
    assert_int_equal(a->head_dim, b->head_dim);
    assert_int_equal(a->n_ctx_train, b->n_ctx_train);
    assert_true(a->norm_eps == b->norm_eps);
    if (a->pos == KF_POS_ROPE) assert_true(a->rope_theta == b->rope_theta);
    assert_int_equal(a->tied_head, b->tied_head);
    assert_int_equal(a->bos_id, b->bos_id);
    assert_int_equal(a->eos_id, b->eos_id);
    tensor_equal(&a->tok_embd, &b->tok_embd, "tok_embd", -1);
    tensor_equal(&a->pos_embd, &b->pos_embd, "pos_embd", -1);
    tensor_equal(&a->out_norm_w, &b->out_norm_w, "out_norm_w", -1);
    tensor_equal(&a->out_norm_b, &b->out_norm_b, "out_norm_b", -1);
    tensor_equal(&a->lm_head, &b->lm_head, "lm_head", -1);
    for (int l = 0; l < a->n_layer; l++) {
        const kf_layer *x = &a->layers[l], *y = &b->layers[l];
        assert_int_equal(x->n_ff, y->n_ff);
#define EQ(f) tensor_equal(&x->f, &y->f, #f, l)
        EQ(attn_norm_w); EQ(attn_norm_b); EQ(wq); EQ(wk); EQ(wv); EQ(bq); EQ(bk); EQ(bv); EQ(wo); EQ(bo);
        EQ(ffn_norm_w); EQ(ffn_norm_b); EQ(w_gate); EQ(w_up); EQ(b_up); EQ(w_down); EQ(b_down);
#undef EQ
    }
}

static kf_model *roundtrip(const kf_model *m, const char *dir) {
    kf_error err = {0};
    kf_model *r;
    ASSERT_OK(kf_model_save(m, dir, &(kf_save_opts){.format = KF_FORMAT_HF}, &err));
    ASSERT_OK(kf_model_load_hf(&r, dir, &err));
    models_equal(m, r);
    return r;
}

static cJSON *read_config(const char *dir) {
    char p[1100], *text;
    kf_error err = {0};
    snprintf(p, sizeof p, "%s/config.json", dir);
    ASSERT_OK(kf_file_read_all(p, &text, NULL, &err));
    cJSON *j = cJSON_Parse(text);
    free(text);
    assert_non_null(j);
    return j;
}

static void test_roundtrip_llama(void **state) {
    (void)state;
    char src[1024], tmp[64];
    llama_dir(src, sizeof src);
    tmp_dir(tmp);
    kf_model *m, *r;
    kf_error err = {0};
    ASSERT_OK(kf_model_load_hf(&m, src, &err));
    r = roundtrip(m, tmp);
    assert_int_equal(kf_model_n_params(r), 1377408);
    cJSON *cfg = read_config(tmp);
    assert_string_equal(cJSON_GetArrayItem(cJSON_GetObjectItem(cfg, "architectures"), 0)->valuestring,
                        "LlamaForCausalLM");
    assert_true(cJSON_IsNumber(cJSON_GetObjectItem(cfg, "intermediate_size"))); // uniform widths: an int
    assert_int_equal(cJSON_GetObjectItem(cfg, "intermediate_size")->valueint, 384);
    assert_true(cJSON_GetObjectItem(cfg, "rms_norm_eps")->valuedouble == 1e-5);
    cJSON_Delete(cfg);
    // No temporaries are left behind.
    char p[1100];
    snprintf(p, sizeof p, "%s/model.safetensors.tmp", tmp);
    assert_false(kf_file_exists(p));
    kf_model_free(r);
    kf_model_free(m);
    rm_tree(tmp);
}

static void roundtrip_gpt2(const char *src) {
    char tmp[64], a[1100], b[1100];
    tmp_dir(tmp);
    kf_model *m, *r;
    kf_error err = {0};
    ASSERT_OK(kf_model_load_hf(&m, src, &err));
    r = roundtrip(m, tmp);
    // Conv1D layout and fused c_attn come back byte for byte as in the original file.
    snprintf(a, sizeof a, "%s/model.safetensors", src);
    snprintf(b, sizeof b, "%s/model.safetensors", tmp);
    const char *names[] = {"attn.c_attn.weight", "attn.c_attn.bias", "mlp.c_fc.weight", "mlp.c_proj.weight",
                           "attn.c_proj.weight"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char name[128];
        snprintf(name, sizeof name, "transformer.h.%d.%s", (int)i % m->n_layer, names[i]);
        int64_t na, nb;
        float *x = read_raw(a, name, &na), *y = read_raw(b, name, &nb);
        assert_int_equal(na, nb);
        assert_memory_equal(x, y, sizeof(float) * (size_t)na);
        free(x);
        free(y);
    }
    cJSON *cfg = read_config(tmp);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(cfg, "n_inner"))); // 4C everywhere
    cJSON_Delete(cfg);
    kf_model_free(r);
    kf_model_free(m);
    rm_tree(tmp);
}

// The GPT-2 fixture always, the 5.9m GPT-2 of the shared folder when it is there.
static void test_roundtrip_gpt2(void **state) {
    (void)state;
    char src[1024];
    snprintf(src, sizeof src, "%s/tests/fixtures/models/gpt2-tiny", kf_test_root());
    roundtrip_gpt2(src);
    if (gpt2_dir(src, sizeof src)) roundtrip_gpt2(src);
}

// An in-memory model whose layer l keeps the first widths[l] FFN neurons of
// src (rows of w_gate/w_up/b_up, columns of w_down); src must outlive it.
static kf_model *slice_ffn(const kf_model *src, const int *widths) {
    kf_model *m = kf_model_new();
    kf_error err = {0};
    *m = *src;
    m->maps = NULL;
    m->n_maps = 0;
    m->buffers = NULL;
    snprintf(m->format, sizeof m->format, "memory");
    m->layers = malloc(sizeof *m->layers * (size_t)src->n_layer);
    memcpy(m->layers, src->layers, sizeof *m->layers * (size_t)src->n_layer);
    for (int l = 0; l < m->n_layer; l++) {
        kf_layer *L = &m->layers[l];
        int64_t F = widths[l], F0 = L->n_ff, C = m->n_embd;
        L->n_ff = (int)F;
        L->w_up.ne[0] = F;
        if (kf_tensor_present(&L->w_gate)) L->w_gate.ne[0] = F;
        if (kf_tensor_present(&L->b_up)) L->b_up.ne[0] = F;
        const float *down = L->w_down.data; // (C, F0)
        int64_t ne[2] = {C, F};
        ASSERT_OK(kf_model_alloc_tensor(m, &L->w_down, 2, ne, &err));
        for (int64_t i = 0; i < C; i++) memcpy(L->w_down.data + i * F, down + i * F0, sizeof(float) * (size_t)F);
    }
    ASSERT_OK(kf_model_validate(m, "sliced", &err));
    return m;
}

static void check_width_list(const char *dir, const char *key, const int *widths, int n) {
    cJSON *cfg = read_config(dir);
    cJSON *a = cJSON_GetObjectItem(cfg, key);
    assert_true(cJSON_IsArray(a));
    assert_int_equal(cJSON_GetArraySize(a), n);
    for (int l = 0; l < n; l++) assert_int_equal(cJSON_GetArrayItem(a, l)->valueint, widths[l]);
    cJSON_Delete(cfg);
}

static void test_roundtrip_per_layer_widths(void **state) {
    (void)state;
    char src[1024], tmp[64];
    llama_dir(src, sizeof src);
    kf_model *m, *r;
    kf_error err = {0};
    ASSERT_OK(kf_model_load_hf(&m, src, &err));
    const int w[4] = {384, 200, 97, 311};
    kf_model *s = slice_ffn(m, w);
    tmp_dir(tmp);
    r = roundtrip(s, tmp);
    check_width_list(tmp, "intermediate_size", w, 4);
    for (int l = 0; l < 4; l++) assert_int_equal(r->layers[l].n_ff, w[l]);
    kf_model_free(r);
    kf_model_free(s);
    kf_model_free(m);
    rm_tree(tmp);

    snprintf(src, sizeof src, "%s/tests/fixtures/models/gpt2-tiny", kf_test_root()); // 2 layers of 128
    ASSERT_OK(kf_model_load_hf(&m, src, &err));
    const int g[2] = {128, 33};
    s = slice_ffn(m, g);
    tmp_dir(tmp);
    r = roundtrip(s, tmp);
    check_width_list(tmp, "n_inner", g, 2);
    kf_model_free(r);
    kf_model_free(s);
    kf_model_free(m);
    rm_tree(tmp);
}

static void test_sharded(void **state) {
    (void)state;
    char src[1024], one[64], two[64], p[1200];
    llama_dir(src, sizeof src);
    kf_model *m, *r;
    kf_error err = {0};
    ASSERT_OK(kf_model_load_hf(&m, src, &err));
    tmp_dir(one);
    ASSERT_OK(kf_model_save(m, one, &(kf_save_opts){.format = KF_FORMAT_HF}, &err));
    kf_st_set st = {0};
    snprintf(p, sizeof p, "%s/model.safetensors", one);
    ASSERT_OK(kf_st_set_add_file(&st, p, &err));
    // Tensors alternate between the two shards, so each shard is a mix.
    tmp_dir(two);
    const char *shard[2] = {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"};
    size_t cap = 64 + (size_t)st.n_tensors * 200;
    char *index = malloc(cap);
    size_t k = (size_t)snprintf(index, cap, "{\"metadata\": {}, \"weight_map\": {");
    for (int s = 0; s < 2; s++) {
        st_entry e[64];
        int n = 0;
        size_t bytes = 0;
        for (int i = s; i < st.n_tensors; i += 2) {
            const kf_st_tensor *t = &st.tensors[i];
            assert_true(n < 64);
            snprintf(e[n].name, sizeof e[n].name, "%s", t->name);
            snprintf(e[n].dtype, sizeof e[n].dtype, "F32");
            e[n].ndim = t->ndim;
            memcpy(e[n].ne, t->ne, sizeof e[n].ne);
            n++;
            bytes += t->nbytes;
            k += (size_t)snprintf(index + k, cap - k, "%s\"%s\": \"%s\"", k > 40 ? ", " : "", t->name, shard[s]);
        }
        assert_int_equal(st_layout(e, n), bytes);
        uint8_t *data = malloc(bytes), *q = data;
        for (int i = s; i < st.n_tensors; i += 2, q += st.tensors[i - 2].nbytes)
            memcpy(q, st.tensors[i].data, st.tensors[i].nbytes);
        snprintf(p, sizeof p, "%s/%s", two, shard[s]);
        write_st(p, e, n, data, bytes, 0);
        free(data);
    }
    snprintf(index + k, cap - k, "}}");
    write_text_file(two, "model.safetensors.index.json", index);
    free(index);
    char *cfg;
    snprintf(p, sizeof p, "%s/config.json", one);
    ASSERT_OK(kf_file_read_all(p, &cfg, NULL, &err));
    write_text_file(two, "config.json", cfg);
    free(cfg);
    kf_st_set_free(&st);

    ASSERT_OK(kf_model_load_hf(&r, two, &err));
    assert_int_equal(r->n_maps, 2);
    models_equal(m, r);
    kf_model_free(r);
    // The writer replaces a folder holding a sharded checkpoint whole: no
    // shard or index of the old one survives to win on load.
    ASSERT_OK(kf_model_save(m, two, &(kf_save_opts){.format = KF_FORMAT_HF}, &err));
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", two);
    assert_false(kf_file_exists(p));
    snprintf(p, sizeof p, "%s/%s", two, shard[0]);
    assert_false(kf_file_exists(p));
    ASSERT_OK(kf_model_load_hf(&r, two, &err));
    models_equal(m, r);
    kf_model_free(r);

    // kfuse's own shards: above shard_bytes the writer splits the tensors
    // in order into shards of at most that size (one larger tensor alone)
    // with an index, and reads them back bit-identical.
    const int64_t limit = 300000; // bytes; the 1.4M model's F32 tensors take ~5.8 MB
    ASSERT_OK(kf_model_save(m, two, &(kf_save_opts){.format = KF_FORMAT_HF, .shard_bytes = limit}, &err));
    snprintf(p, sizeof p, "%s/model.safetensors", two);
    assert_false(kf_file_exists(p));
    kf_st_set sh = {0};
    ASSERT_OK(kf_st_set_open_dir(&sh, two, &err));
    assert_true(sh.n_files > 2);
    for (int f = 0; f < sh.n_files; f++) {
        uint64_t bytes = 0;
        int n_in = 0;
        for (int i = 0; i < sh.n_tensors; i++)
            if (sh.tensors[i].file == f) bytes += sh.tensors[i].nbytes, n_in++;
        assert_true(bytes <= (uint64_t)limit || n_in == 1);
    }
    kf_st_set_free(&sh);
    ASSERT_OK(kf_model_load_hf(&r, two, &err));
    models_equal(m, r);
    kf_model_free(r);
    kf_model_free(m);
    rm_tree(one);
    rm_tree(two);
}

// dtype: 2-D weights stored as BF16 or F16 (norms F32), config.json's
// torch_dtype says so, values are the fp32 ones rounded as core/tensor.c
// rounds them, and a load that keeps the dtype holds those very bytes; Q8_0
// has no safetensors dtype and is refused. kf_save_default_dtype keeps a
// model's dtype where the format has it.
static void test_write_dtype(void **state) {
    char src[1024], dir[256];
    llama_dir(src, sizeof src);
    snprintf(dir, sizeof dir, "/tmp/kf_hf_write_dtype_%d", (int)getpid());
    kf_error err = {0};
    kf_model *m, *r, *k;
    ASSERT_OK(kf_model_load_hf(&m, src, &err));
    const kf_dtype dts[2] = {KF_DTYPE_BF16, KF_DTYPE_F16};
    const char *torch[2] = {"bfloat16", "float16"};
    for (int t = 0; t < 2; t++) {
        ASSERT_OK(kf_model_save(m, dir, &(kf_save_opts){.format = KF_FORMAT_HF, .dtype = dts[t], .shard_bytes = 1000000},
                                &err));
        cJSON *cfg = read_config(dir);
        assert_string_equal(cJSON_GetObjectItem(cfg, "torch_dtype")->valuestring, torch[t]);
        cJSON_Delete(cfg);
        ASSERT_OK(kf_model_load_hf(&r, dir, &err));
        ASSERT_OK(kf_model_load_hf_opts(&k, dir, &(kf_load_opts){.keep_dtype = true}, &err));
        assert_int_equal(r->layers[0].w_up.src_dtype, dts[t]);
        assert_int_equal(r->layers[0].ffn_norm_w.src_dtype, KF_DTYPE_F32);
        assert_int_equal(k->layers[1].w_down.dtype, dts[t]);
        assert_int_equal(kf_model_weight_dtype(r), dts[t]);
        const kf_tensor *a = &m->layers[1].w_down, *b = &r->layers[1].w_down;
        const int64_t n = kf_tensor_nelem(a);
        uint16_t *enc = malloc(2 * (size_t)n);
        float *dec = malloc(4 * (size_t)n);
        kf_f32_to_dtype(dts[t], a->data, enc, n);
        kf_dtype_to_f32(dts[t], enc, dec, n);
        assert_memory_equal(dec, b->data, 4 * (size_t)n);
        assert_memory_equal(enc, k->layers[1].w_down.data, 2 * (size_t)n);
        assert_memory_equal(m->layers[1].ffn_norm_w.data, r->layers[1].ffn_norm_w.data, 4 * (size_t)m->n_embd);
        free(enc), free(dec);
        // Written again from the kept model: the same bytes, no rounding twice.
        char dir2[300];
        snprintf(dir2, sizeof dir2, "%s_again", dir);
        ASSERT_OK(kf_model_save(k, dir2, &(kf_save_opts){.format = KF_FORMAT_HF, .dtype = dts[t]}, &err));
        kf_model *r2;
        ASSERT_OK(kf_model_load_hf(&r2, dir2, &err));
        models_equal(r, r2);
        kf_model_free(r2);
        rm_tree(dir2);
        kf_model_free(r);
        kf_model_free(k);
    }
    assert_int_equal(kf_model_save(m, dir, &(kf_save_opts){.format = KF_FORMAT_HF, .dtype = KF_DTYPE_Q8_0}, &err),
                     KF_ERR_ARG);
    assert_non_null(strstr(err.msg, "Q8_0"));
    assert_int_equal(kf_save_default_dtype(KF_DTYPE_BF16, KF_FORMAT_HF), KF_DTYPE_BF16);
    assert_int_equal(kf_save_default_dtype(KF_DTYPE_Q8_0, KF_FORMAT_HF), KF_DTYPE_F16);
    assert_int_equal(kf_save_default_dtype(KF_DTYPE_Q8_0, KF_FORMAT_GGUF), KF_DTYPE_Q8_0);
    assert_int_equal(kf_save_default_dtype(KF_DTYPE_BF16, KF_FORMAT_LLAMA2C), KF_DTYPE_F32);
    kf_model_free(m);
    rm_tree(dir);
}

// Known encodings: F16 and BF16 bit patterns and the floats they stand for.
static const uint16_t F16_BITS[8] = {0x3C00, 0xC000, 0x3555, 0x0001, 0x7BFF, 0x8000, 0x3A00, 0x0400};
static const uint16_t BF16_BITS[8] = {0x3F80, 0xC000, 0x3E20, 0x4049, 0x0001, 0x7F7F, 0x8000, 0xBF00};

static float expected(const char *dtype, int64_t i) {
    const float f16[8] = {1.0f, -2.0f, 0.333251953125f, ldexpf(1, -24), 65504.0f, -0.0f, 0.75f, ldexpf(1, -14)};
    const float bf16[8] = {1.0f, -2.0f, 0.15625f, 3.140625f, ldexpf(1, -133), 3.3895313892515355e38f, -0.0f, -0.5f};
    if (!strcmp(dtype, "F16")) return f16[i % 8];
    if (!strcmp(dtype, "BF16")) return bf16[i % 8];
    return (float)i * 0.25f - 3.0f;
}

static void test_f16_bf16(void **state) {
    (void)state;
    // A tiny Llama (V 16, C 8, 1 layer, 2 heads, FFN 12) with every dtype.
    st_entry e[] = {
        {"model.embed_tokens.weight", "F16", 2, {16, 8}, 0, 0},
        {"model.layers.0.input_layernorm.weight", "BF16", 1, {8}, 0, 0},
        {"model.layers.0.self_attn.q_proj.weight", "F32", 2, {8, 8}, 0, 0},
        {"model.layers.0.self_attn.k_proj.weight", "BF16", 2, {8, 8}, 0, 0},
        {"model.layers.0.self_attn.v_proj.weight", "F16", 2, {8, 8}, 0, 0},
        {"model.layers.0.self_attn.o_proj.weight", "F32", 2, {8, 8}, 0, 0},
        {"model.layers.0.post_attention_layernorm.weight", "F16", 1, {8}, 0, 0},
        {"model.layers.0.mlp.gate_proj.weight", "BF16", 2, {12, 8}, 0, 0},
        {"model.layers.0.mlp.up_proj.weight", "F16", 2, {12, 8}, 0, 0},
        {"model.layers.0.mlp.down_proj.weight", "F32", 2, {8, 12}, 0, 0},
        {"model.norm.weight", "BF16", 1, {8}, 0, 0},
    };
    int n = (int)(sizeof e / sizeof e[0]);
    size_t bytes = st_layout(e, n);
    uint8_t *data = calloc(bytes, 1);
    for (int i = 0; i < n; i++) {
        int64_t ne = e[i].ne[0] * (e[i].ndim == 2 ? e[i].ne[1] : 1);
        for (int64_t j = 0; j < ne; j++) {
            uint8_t *q = data + e[i].begin;
            if (!strcmp(e[i].dtype, "F32")) {
                float v = expected("F32", j);
                memcpy(q + 4 * j, &v, 4);
            } else {
                uint16_t v = (!strcmp(e[i].dtype, "F16") ? F16_BITS : BF16_BITS)[j % 8];
                q[2 * j] = (uint8_t)v;
                q[2 * j + 1] = (uint8_t)(v >> 8);
            }
        }
    }
    const char *config = "{\"architectures\": [\"LlamaForCausalLM\"], \"vocab_size\": 16, \"hidden_size\": 8,"
                         " \"intermediate_size\": 12, \"num_hidden_layers\": 1, \"num_attention_heads\": 2,"
                         " \"tie_word_embeddings\": true}";
    // extra 0: aligned; 2: F32 data misaligned; 1: everything misaligned (copied, never read unaligned).
    for (int extra = 0; extra < 3; extra++) {
        char tmp[64], p[1100];
        tmp_dir(tmp);
        snprintf(p, sizeof p, "%s/model.safetensors", tmp);
        write_st(p, e, n, data, bytes, extra);
        write_text_file(tmp, "config.json", config);
        kf_model *m;
        kf_error err = {0};
        ASSERT_OK(kf_model_load_hf(&m, tmp, &err));
        const kf_layer *L = &m->layers[0];
        const kf_tensor *ts[] = {&m->tok_embd, &L->attn_norm_w, &L->wq, &L->wk, &L->wv, &L->wo,
                                 &L->ffn_norm_w, &L->w_gate, &L->w_up, &L->w_down, &m->out_norm_w};
        for (int i = 0; i < n; i++) {
            assert_string_equal(kf_dtype_name(ts[i]->src_dtype), e[i].dtype);
            for (int64_t j = 0; j < kf_tensor_nelem(ts[i]); j++) {
                float want = expected(e[i].dtype, j), got = ts[i]->data[j];
                if (memcmp(&want, &got, 4) != 0)
                    fail_msg("%s[%lld] (%s, extra %d): got %g, want %g", e[i].name, (long long)j, e[i].dtype, extra,
                             (double)got, (double)want);
            }
        }
        // Aligned F32 is used in place; misaligned F32 is copied into an aligned buffer.
        const char *base = m->maps[0].data;
        bool mapped = (const char *)L->wq.data >= base && (const char *)L->wq.data < base + m->maps[0].size;
        assert_int_equal(mapped, extra % 4 == 0);
        assert_int_equal((uintptr_t)L->wq.data % 4, 0);
        kf_model_free(m);
        rm_tree(tmp);
    }
    free(data);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_llama),
        cmocka_unit_test(test_roundtrip_gpt2),
        cmocka_unit_test(test_roundtrip_per_layer_widths),
        cmocka_unit_test(test_sharded),
        cmocka_unit_test(test_write_dtype),
        cmocka_unit_test(test_f16_bf16),
    };
    return kf_test_status(cmocka_run_group_tests(tests, NULL, NULL));
}
