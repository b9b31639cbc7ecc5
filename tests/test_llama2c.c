// llama2.c checkpoints: models written and read back equal the originals
// tensor by tensor and reproduce the PyTorch logits; the file is laid out as
// run.c reads it (header, interleaved wq/wk rows, freq_cis, negative vocab
// for an unshared classifier); wrong sizes and unwritable models fail with
// one line naming the file.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "io/save.h"
#include "io/load.h"
#include "test_gguf_util.h"

#define LOGITS_TOL 1e-4

static kf_model *load_hf(const char *rel) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/%s", kf_test_root(), rel);
    kf_model *m;
    kf_error err = {0};
    ASSERT_OK(kf_model_load_hf(&m, dir, &err));
    return m;
}

static float *read_all_floats(const char *path, size_t *n_bytes) {
    char *b;
    kf_error err = {0};
    ASSERT_OK(kf_file_read_all(path, &b, n_bytes, &err));
    return (float *)b;
}

static void test_llama_1_4m_roundtrip(void **state) {
    (void)state;
    kf_error err = {0};
    kf_model *m = load_hf("models/llama-gutenberg-1.4m"), *g;
    char path[256];
    tmp_file(path, "llama14.bin");
    ASSERT_OK(kf_model_save(m, path, &(kf_save_opts){.format = KF_FORMAT_LLAMA2C}, &err));

    // run.c's layout: header, then token_embedding (V, C), rms_att (L, C), wq ...
    size_t n;
    float *raw = read_all_floats(path, &n);
    int32_t hdr[7];
    memcpy(hdr, raw, sizeof hdr);
    int32_t want[7] = {128, 384, 4, 4, 4, 4096, 512}; // shared classifier: positive vocab
    assert_memory_equal(hdr, want, sizeof want);
    int64_t C = 128, V = 4096, L = 4, D = 32, F = 384, T = 512;
    assert_int_equal(n, 28 + 4 * (V * C + L * (2 * C + 4 * C * C + 3 * F * C) + C + T * D));
    const float *wq0 = raw + 7 + V * C + L * C; // layer 0's wq
    for (int64_t h = 0; h < 4; h++)             // file row h*D + 2i + j is rotate-half row h*D + j*D/2 + i
        for (int64_t i = 0; i < D / 2; i++)
            for (int64_t j = 0; j < 2; j++)
                assert_memory_equal(wq0 + (h * D + 2 * i + j) * C, m->layers[0].wq.data + (h * D + j * D / 2 + i) * C,
                                    4 * (size_t)C);
    const float *freq = raw + 7 + V * C + L * (2 * C + 4 * C * C + 3 * F * C) + C; // freq_cis_real (T, D/2)
    assert_float_equal(freq[0], 1.0f, 0);
    assert_float_equal(freq[3 * (D / 2) + 1], cosf(3.0f * powf(10000.0f, -2.0f / 32)), 1e-6);

    ASSERT_OK(kf_model_load_llama2c(&g, path, &err));
    // run.c's RoPE (adjacent pairs) on the file's own wq/wk gives PyTorch's logits.
    const float *wq[4], *wk[4];
    for (int l = 0; l < 4; l++) {
        wq[l] = raw + 7 + V * C + L * C + l * C * C;
        wk[l] = raw + 7 + V * C + L * C + L * C * C + l * C * C;
    }
    double d = ref_interleaved_logits_diff(g, wq, wk, "llama-gutenberg-1.4m");
    if (d > LOGITS_TOL) fail_msg("run.c-style reference on the file differs from PyTorch by %g", d);
    free(raw);
    assert_string_equal(g->format, "llama2c");
    assert_models_equal(m, g, 0);
    assert_float_equal(g->rope_theta, 10000.0f, 0);
    assert_int_equal(g->bos_id, 1);
    assert_int_equal(g->eos_id, 2);
    d = fixture_logits_diff(g, "llama-gutenberg-1.4m");
    if (d > LOGITS_TOL) fail_msg("logits differ from PyTorch by %g", d);
    kf_model_free(g);
    // kf_model_load picks the loader from the .bin suffix.
    ASSERT_OK(kf_model_load(&g, path, &err));
    assert_string_equal(g->format, "llama2c");
    kf_model_free(g);
    kf_model_free(m);
    remove(path);
}

static void test_gqa_untied_roundtrip(void **state) {
    (void)state;
    kf_error err = {0};
    kf_model *m = load_hf("tests/fixtures/models/llama-gqa-bf16"), *g;
    char path[256];
    tmp_file(path, "gqa.bin");
    ASSERT_OK(kf_model_save(m, path, &(kf_save_opts){.format = KF_FORMAT_LLAMA2C}, &err));
    size_t n;
    float *raw = read_all_floats(path, &n);
    int32_t hdr[7];
    memcpy(hdr, raw, sizeof hdr);
    int32_t want[7] = {64, 96, 2, 4, 2, -256, 64}; // unshared classifier: negative vocab
    assert_memory_equal(hdr, want, sizeof want);
    assert_memory_equal(raw + n / 4 - 256 * 64, m->lm_head.data, 4 * 256 * 64); // wcls last
    ASSERT_OK(kf_model_load_llama2c(&g, path, &err));
    assert_false(g->tied_head);
    assert_models_equal(m, g, 0);
    // llama2.c does not record theta; with the fixture's, the GQA model's
    // logits (wk permuted in 2 KV heads) match PyTorch, through kfuse and
    // through a run.c-style pass on the file's rows.
    g->rope_theta = m->rope_theta;
    double d = fixture_logits_diff(g, "llama-gqa-bf16");
    if (d > LOGITS_TOL) fail_msg("logits differ from PyTorch by %g", d);
    int64_t C = 64, V = 256, L = 2, KV = 32;
    const float *wq[2], *wk[2];
    for (int l = 0; l < 2; l++) {
        wq[l] = raw + 7 + V * C + L * C + l * C * C;
        wk[l] = raw + 7 + V * C + L * C + L * C * C + l * KV * C;
    }
    d = ref_interleaved_logits_diff(g, wq, wk, "llama-gqa-bf16");
    if (d > LOGITS_TOL) fail_msg("run.c-style reference on the file differs from PyTorch by %g", d);
    free(raw);
    kf_model_free(g);
    kf_model_free(m);
    remove(path);
}

static void test_wrong_size(void **state) {
    (void)state;
    kf_error err = {0};
    int n_ff[2] = {24, 24};
    kf_model *m = make_llama(2, n_ff, false), *g = NULL;
    m->norm_eps = 1e-5f; // the values llama2.c assumes: the file records none of them
    m->rope_theta = 10000.0f;
    m->bos_id = 1;
    m->eos_id = 2;
    char path[256];
    tmp_file(path, "size.bin");
    ASSERT_OK(kf_model_save(m, path, &(kf_save_opts){.format = KF_FORMAT_LLAMA2C}, &err));
    ASSERT_OK(kf_model_load_llama2c(&g, path, &err)); // the base is valid
    assert_models_equal(m, g, 0);
    kf_model_free(g);
    g = NULL;
    size_t n;
    char *b;
    ASSERT_OK(kf_file_read_all(path, &b, &n, &err));
    write_bytes(path, b, n - 4); // one float short
    ASSERT_FAILS(kf_model_load_llama2c(&g, path, &err), path, "implies");
    assert_null(g);
    char *longer = calloc(1, n + 4);
    memcpy(longer, b, n);
    write_bytes(path, longer, n + 4); // one float too many
    ASSERT_FAILS(kf_model_load_llama2c(&g, path, &err), path, "implies");
    write_bytes(path, b, 20);
    ASSERT_FAILS(kf_model_load_llama2c(&g, path, &err), path, "too short");
    int32_t bad[7] = {30, 24, 2, 4, 4, 40, 16}; // 30 is not a multiple of 4 heads
    memcpy(longer, bad, sizeof bad);
    write_bytes(path, longer, n);
    ASSERT_FAILS(kf_model_load_llama2c(&g, path, &err), path, "bad llama2.c header");
    int32_t huge[7] = {1 << 30, 1 << 30, 1 << 30, 1, 1, 1 << 30, 1 << 30}; // no overflow in the size check
    memcpy(longer, huge, sizeof huge);
    write_bytes(path, longer, n);
    ASSERT_FAILS(kf_model_load_llama2c(&g, path, &err), path, "implies");
    free(longer);
    free(b);
    kf_model_free(m);
    remove(path);
}

static void test_unwritable(void **state) {
    (void)state;
    kf_error err = {0};
    char path[256];
    tmp_file(path, "unwritable.bin");
    int n_ff[2] = {16, 32};
    kf_model *m = make_llama(2, n_ff, false);
    ASSERT_FAILS(kf_model_save(m, path, &(kf_save_opts){.format = KF_FORMAT_LLAMA2C}, &err), path, "one FFN width");
    kf_model_free(m);
    int same[2] = {16, 16};
    m = make_llama(2, same, true);
    ASSERT_FAILS(kf_model_save(m, path, &(kf_save_opts){.format = KF_FORMAT_LLAMA2C}, &err), path, "no biases");
    kf_model_free(m);
    m = load_hf("tests/fixtures/models/gpt2-tiny");
    ASSERT_FAILS(kf_model_save(m, path, &(kf_save_opts){.format = KF_FORMAT_LLAMA2C}, &err), path, "not gpt2");
    kf_model_free(m);
    assert_false(kf_file_exists(path));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llama_1_4m_roundtrip),
        cmocka_unit_test(test_gqa_untied_roundtrip),
        cmocka_unit_test(test_wrong_size),
        cmocka_unit_test(test_unwritable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
