// GGUF reader hardening (issue 11 items 2, 3, 4, 6): 16-bit tensors at odd
// addresses convert without misaligned loads (UBSan in the sanitizer pass),
// an MoE coverage out of [0, 1] is refused on read and on write, a context
// length beyond the shared limits is refused by the GGUF reader as by the HF
// reader, and 200,000 keys open in linear time (quadratic duplicate checks
// took minutes: the ctest timeout below catches that).
// ctest-timeout: 60
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "formats/gguf.h"
#include "io/load.h"
#include "io/save.h"
#include "test_gguf_util.h"

static char *read_all(const char *path, size_t *n) {
    char *buf;
    kf_error err = {0};
    if (kf_file_read_all(path, &buf, n, &err) != KF_OK) fail_msg("%s", err.msg);
    return buf;
}

// Overwrites the value (n bytes) that follows the first occurrence of key's
// serialised form (u64 length, bytes, u32 type) in a GGUF file.
static void patch_value(const char *path, const char *key, size_t skip, const void *v, size_t n) {
    size_t len;
    char *buf = read_all(path, &len);
    size_t k = strlen(key);
    char *at = NULL;
    for (size_t i = 8; i + k + 4 <= len && !at; i++)
        if (memcmp(buf + i, key, k) == 0 && memcmp(buf + i - 8, &(uint64_t){k}, 8) == 0) at = buf + i + k + 4;
    if (!at) fail_msg("%s: key %s not found", path, key);
    memcpy(at + skip, v, n);
    write_bytes(path, buf, len);
    free(buf);
}

// A hand-laid GGUF: alignment 1, an F16 tensor whose data starts at an odd
// byte of the map, and a BF16 one after it.
static void test_unaligned_16bit(void **state) {
    (void)state;
    char path[256];
    tmp_file(path, "odd.gguf");
    uint8_t f[256];
    size_t n = 0;
#define PUT(p, k) (memcpy(f + n, p, k), n += k)
#define PUT_STR(s) (PUT(&(uint64_t){strlen(s)}, 8), PUT(s, strlen(s)))
    PUT("GGUF", 4);
    PUT(&(uint32_t){3}, 4);
    PUT(&(uint64_t){2}, 8); // tensors
    PUT(&(uint64_t){1}, 8); // keys
    PUT_STR("general.alignment");
    PUT(&(uint32_t){KF_GGUF_UINT32}, 4);
    PUT(&(uint32_t){1}, 4);
    const char *names[2] = {"a", "b"};
    uint32_t types[2] = {KF_GGML_F16, KF_GGML_BF16};
    for (int i = 0; i < 2; i++) {
        PUT_STR(names[i]);
        PUT(&(uint32_t){1}, 4);
        PUT(&(uint64_t){3}, 8);
        PUT(&types[i], 4);
        PUT(&(uint64_t){(uint64_t)i * 6}, 8);
    }
    if (n % 2 == 0) fail_msg("layout: the data must start at an odd offset, got %zu", n);
    const float want[3] = {1.5f, -2.0f, 0.25f};
    for (int i = 0; i < 3; i++) PUT(&(uint16_t){kf_f32_to_f16(want[i])}, 2);
    for (int i = 0; i < 3; i++) PUT(&(uint16_t){kf_f32_to_bf16(want[i])}, 2);
#undef PUT_STR
#undef PUT
    write_bytes(path, f, n);
    kf_gguf *g;
    kf_error err = {0};
    ASSERT_OK(kf_gguf_open(&g, path, &err));
    for (int i = 0; i < 2; i++) {
        const kf_gguf_tensor *t = kf_gguf_find_tensor(g, names[i]);
        assert_non_null(t);
        assert_true((uintptr_t)t->data % 2 == 1);
        float got[3];
        kf_gguf_tensor_to_f32(t, got);
        for (int j = 0; j < 3; j++) assert_float_equal(got[j], want[j], 0);
    }
    kf_gguf_close(g);
    remove(path);
}

// A llama with experts on layer 0 (2 of 12 neurons each, fixed top-1).
static kf_model *make_moe(void) {
    int n_ff[2] = {12, 20};
    kf_model *m = make_llama(2, n_ff, false);
    kf_layer *L = &m->layers[0];
    L->n_expert = 2;
    L->router = KF_ROUTER_LINEAR;
    L->top_k = 1;
    L->coverage = 0.25f;
    kf_error err = {0};
    if (kf_model_alloc_tensor(m, &L->router_w, 2, (int64_t[]){2, m->n_embd}, &err) != KF_OK) fail_msg("%s", err.msg);
    fill_random(&L->router_w, false, NULL);
    return m;
}

static void test_moe_coverage(void **state) {
    (void)state;
    char path[256];
    tmp_file(path, "moe.gguf");
    kf_error err = {0};
    kf_model *m = make_moe(), *back;
    ASSERT_OK(kf_model_save(m, path, &(kf_save_opts){.format = KF_FORMAT_GGUF}, &err));
    ASSERT_OK(kf_model_load(&back, path, &err));
    assert_float_equal(back->layers[0].coverage, 0.25f, 0);
    kf_model_free(back);
    // every layer's coverage is written back, a fixed-top-k layer's (0) and a
    // dense layer's (1) too: each must be a share (the array's values follow
    // its u32 type and u64 count)
    float bad[2] = {NAN, -1};
    for (int l = 0; l < 2; l++) {
        ASSERT_OK(kf_model_save(m, path, &(kf_save_opts){.format = KF_FORMAT_GGUF}, &err));
        patch_value(path, "kfuse.moe.coverage", 12 + 4 * (size_t)l, &bad[l], 4);
        ASSERT_FAILS(kf_model_load(&back, path, &err), path, "coverage");
        assert_null(back);
    }
    m->layers[0].coverage = -1;
    ASSERT_FAILS(kf_model_save(m, path, &(kf_save_opts){.format = KF_FORMAT_HF}, &err), "model to write", "coverage");
    kf_model_free(m);
    remove(path);
}

// One set of limits: a context the HF reader would refuse is refused in GGUF
// too, and a model beyond the limits is not written.
static void test_shared_limits(void **state) {
    (void)state;
    char path[256];
    tmp_file(path, "ctx.gguf");
    kf_error err = {0};
    int n_ff[2] = {12, 20};
    kf_model *m = make_llama(2, n_ff, false), *back;
    ASSERT_OK(kf_model_save(m, path, &(kf_save_opts){.format = KF_FORMAT_GGUF}, &err));
    patch_value(path, "deci.context_length", 0, &(uint32_t){KF_MAX_CTX + 1}, 4); // widths 12, 20: deci
    ASSERT_FAILS(kf_model_load(&back, path, &err), path, "context_length");
    m->n_ctx_train = KF_MAX_CTX + 1;
    ASSERT_FAILS(kf_model_save(m, path, &(kf_save_opts){.format = KF_FORMAT_GGUF}, &err), "model to write",
                 "limits");
    kf_model_free(m);
    remove(path);
}

static void test_many_keys(void **state) {
    (void)state;
    enum { N_KEYS = 200000, N_TENSORS = 2000 };
    char path[256], key[32];
    tmp_file(path, "keys.gguf");
    kf_error err = {0};
    kf_gguf_writer *w;
    ASSERT_OK(kf_gguf_writer_init(&w, &err));
    for (int i = 0; i < N_KEYS; i++) {
        snprintf(key, sizeof key, "k.%d", i);
        kf_gguf_writer_add_u32(w, key, (uint32_t)i);
    }
    float x = 1;
    for (int i = 0; i < N_TENSORS; i++) {
        snprintf(key, sizeof key, "t.%d", i);
        kf_gguf_writer_add_tensor(w, key, 1, (int64_t[]){1}, &x, KF_DTYPE_F32);
    }
    ASSERT_OK(kf_gguf_writer_save(w, path, &err));
    kf_gguf *g;
    ASSERT_OK(kf_gguf_open(&g, path, &err));
    for (int i = 0; i < N_KEYS; i += 997) {
        snprintf(key, sizeof key, "k.%d", i);
        int64_t v = -1;
        ASSERT_OK(kf_gguf_get_int(g, key, true, &v, &err));
        assert_int_equal(v, i);
    }
    for (int i = 0; i < N_TENSORS; i += 7) {
        snprintf(key, sizeof key, "t.%d", i);
        assert_non_null(kf_gguf_find_tensor(g, key));
    }
    assert_null(kf_gguf_find_kv(g, "k.-1"));
    assert_null(kf_gguf_find_tensor(g, "t.2000"));
    kf_gguf_close(g);
    // a key that repeats the first, after all the others, is still found
    // (the writer does not check keys)
    kf_gguf_writer_add_u32(w, "k.0", 1);
    ASSERT_OK(kf_gguf_writer_save(w, path, &err));
    ASSERT_FAILS(kf_gguf_open(&g, path, &err), path, "duplicate key 'k.0'");
    kf_gguf_writer_free(w);
    remove(path);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unaligned_16bit),
        cmocka_unit_test(test_moe_coverage),
        cmocka_unit_test(test_shared_limits),
        cmocka_unit_test(test_many_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
