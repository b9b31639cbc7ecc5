// Loading Hugging Face folders: the shipped Llama and GPT-2 checkpoints, with
// hyper-parameters, shapes, parameter counts and weights checked against the
// raw bytes of the files (read here independently with cJSON + fread).
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "io/load.h"
#include "core/file.h"
#include "model/model.h"
#include "test_hf_util.h"

// Fails with the library's message when a call does not return KF_OK.
#define ASSERT_OK(call)                                                  \
    do {                                                                 \
        kf_status s_ = (call);                                           \
        if (s_ != KF_OK) fail_msg("%s: %s", #call, err.msg);             \
    } while (0)

static bool in_maps(const kf_model *m, const float *p) {
    for (int i = 0; i < m->n_maps; i++) {
        const char *b = m->maps[i].data;
        if ((const char *)p >= b && (const char *)p < b + m->maps[i].size) return true;
    }
    return false;
}

static void test_llama_1_4m(void **state) {
    (void)state;
    char dir[1024], st[1100];
    snprintf(dir, sizeof dir, "%s/models/llama-gutenberg-1.4m", kf_test_root());
    snprintf(st, sizeof st, "%s/model.safetensors", dir);
    kf_model *m;
    kf_error err = {0};
    ASSERT_OK(kf_model_load_hf(&m, dir, &err));
    assert_int_equal(m->arch, KF_ARCH_LLAMA);
    assert_int_equal(m->norm, KF_NORM_RMS);
    assert_int_equal(m->act, KF_ACT_SILU);
    assert_int_equal(m->pos, KF_POS_ROPE);
    assert_true(m->gated_ffn);
    assert_int_equal(m->n_vocab, 4096);
    assert_int_equal(m->n_embd, 128);
    assert_int_equal(m->n_layer, 4);
    assert_int_equal(m->n_head, 4);
    assert_int_equal(m->n_head_kv, 4);
    assert_int_equal(m->head_dim, 32);
    assert_int_equal(m->n_ctx_train, 512);
    assert_float_equal(m->norm_eps, 1e-5f, 0);
    assert_float_equal(m->rope_theta, 10000.0f, 0);
    assert_int_equal(m->bos_id, 1);
    assert_int_equal(m->eos_id, 2);
    assert_true(m->tied_head);
    assert_ptr_equal(m->lm_head.data, m->tok_embd.data);
    assert_string_equal(m->format, "hf");
    assert_string_equal(m->path, dir);
    for (int l = 0; l < 4; l++) {
        assert_int_equal(m->layers[l].n_ff, 384);
        assert_int_equal(m->layers[l].w_down.ne[0], 128);
        assert_int_equal(m->layers[l].w_down.ne[1], 384);
        assert_null(m->layers[l].bq.data);
        assert_null(m->layers[l].attn_norm_b.data);
    }
    assert_int_equal(kf_model_n_params(m), 1377408);
    // F32 weights are not copied: they point into the map, with the file's values.
    assert_true(in_maps(m, m->layers[2].wk.data));
    int64_t n;
    float *raw = read_raw(st, "model.layers.2.self_attn.k_proj.weight", &n);
    assert_int_equal(n, 128 * 128);
    assert_memory_equal(raw, m->layers[2].wk.data, sizeof(float) * (size_t)n);
    free(raw);
    raw = read_raw(st, "model.layers.3.mlp.down_proj.weight", &n);
    assert_memory_equal(raw, m->layers[3].w_down.data, sizeof(float) * (size_t)n);
    free(raw);
    kf_model_free(m);
}

static void test_gpt2_5_9m(void **state) {
    (void)state;
    char dir[1024], st[1100];
    snprintf(dir, sizeof dir, "%s/../shared/models/gpt2-gutenberg-5.9m", kf_test_root());
    if (!kf_test_have(dir)) return;
    snprintf(st, sizeof st, "%s/model.safetensors", dir);
    kf_model *m;
    kf_error err = {0};
    ASSERT_OK(kf_model_load_hf(&m, dir, &err));
    assert_int_equal(m->arch, KF_ARCH_GPT2);
    assert_int_equal(m->norm, KF_NORM_LAYER);
    assert_int_equal(m->act, KF_ACT_GELU_TANH);
    assert_int_equal(m->pos, KF_POS_LEARNED);
    assert_false(m->gated_ffn);
    assert_int_equal(m->n_vocab, 4096);
    assert_int_equal(m->n_embd, 256);
    assert_int_equal(m->n_layer, 6);
    assert_int_equal(m->n_head, 8);
    assert_int_equal(m->n_head_kv, 8);
    assert_int_equal(m->head_dim, 32);
    assert_int_equal(m->n_ctx_train, 512);
    assert_float_equal(m->norm_eps, 1e-5f, 0);
    assert_true(m->tied_head);
    assert_int_equal(m->bos_id, 1);
    assert_int_equal(m->eos_id, 2);
    for (int l = 0; l < 6; l++) {
        assert_int_equal(m->layers[l].n_ff, 1024);
        assert_null(m->layers[l].w_gate.data);
    }
    assert_int_equal(kf_model_n_params(m), 5918720);
    // c_attn (C, 3C) Conv1D: wq/wk/wv (C, C) are its column blocks, transposed.
    int64_t n, C = 256;
    float *raw = read_raw(st, "transformer.h.4.attn.c_attn.weight", &n);
    assert_int_equal(n, C * 3 * C);
    const kf_layer *L = &m->layers[4];
    const float *w[3] = {L->wq.data, L->wk.data, L->wv.data};
    for (int p = 0; p < 3; p++)
        for (int64_t i = 0; i < C; i++)
            for (int64_t j = 0; j < C; j++) assert_true(w[p][j * C + i] == raw[i * 3 * C + p * C + j]);
    free(raw);
    raw = read_raw(st, "transformer.h.4.attn.c_attn.bias", &n);
    assert_memory_equal(raw + C, L->bk.data, sizeof(float) * (size_t)C);
    assert_memory_equal(raw + 2 * C, L->bv.data, sizeof(float) * (size_t)C);
    free(raw);
    // mlp.c_proj (F, C) becomes w_down (C, F).
    raw = read_raw(st, "transformer.h.1.mlp.c_proj.weight", &n);
    for (int64_t i = 0; i < 1024; i++)
        for (int64_t j = 0; j < C; j++) assert_true(L[-3].w_down.data[j * 1024 + i] == raw[i * C + j]);
    free(raw);
    raw = read_raw(st, "transformer.wpe.weight", &n);
    assert_memory_equal(raw, m->pos_embd.data, sizeof(float) * (size_t)n);
    free(raw);
    kf_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llama_1_4m),
        cmocka_unit_test(test_gpt2_5_9m),
    };
    return kf_test_status(cmocka_run_group_tests(tests, NULL, NULL));
}
