// Broken Hugging Face folders: every case must fail with the right kf_status
// and one line naming the file and the problem, never crash or read out of
// bounds (run under ASan/UBSan with -DKF_SANITIZE=ON). Fixtures are a tiny
// Llama (V 16, C 8, 1 layer, 2 heads, FFN 12) written here and then broken.
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

static const char *CONFIG = "{\"architectures\": [\"LlamaForCausalLM\"], \"vocab_size\": 16, \"hidden_size\": 8,"
                            " \"intermediate_size\": 12, \"num_hidden_layers\": 1, \"num_attention_heads\": 2,"
                            " \"tie_word_embeddings\": true}";

enum { N_BASE = 11 };

typedef struct {
    st_entry e[16];
    int n;
    uint8_t *data;
    size_t bytes;
    char dir[64];
    char st[128];  // dir/model.safetensors
    char cfg[128]; // dir/config.json
} fixture;

static void fixture_init(fixture *f) {
    static const st_entry base[N_BASE] = {
        {"model.embed_tokens.weight", "F32", 2, {16, 8}, 0, 0},
        {"model.layers.0.input_layernorm.weight", "F32", 1, {8}, 0, 0},
        {"model.layers.0.self_attn.q_proj.weight", "F32", 2, {8, 8}, 0, 0},
        {"model.layers.0.self_attn.k_proj.weight", "F32", 2, {8, 8}, 0, 0},
        {"model.layers.0.self_attn.v_proj.weight", "F32", 2, {8, 8}, 0, 0},
        {"model.layers.0.self_attn.o_proj.weight", "F32", 2, {8, 8}, 0, 0},
        {"model.layers.0.post_attention_layernorm.weight", "F32", 1, {8}, 0, 0},
        {"model.layers.0.mlp.gate_proj.weight", "F32", 2, {12, 8}, 0, 0},
        {"model.layers.0.mlp.up_proj.weight", "F32", 2, {12, 8}, 0, 0},
        {"model.layers.0.mlp.down_proj.weight", "F32", 2, {8, 12}, 0, 0},
        {"model.norm.weight", "F32", 1, {8}, 0, 0},
    };
    memcpy(f->e, base, sizeof base);
    f->n = N_BASE;
    f->bytes = st_layout(f->e, f->n);
    f->data = malloc(f->bytes);
    for (size_t i = 0; i < f->bytes / 4; i++) {
        float v = (float)i / 64.0f;
        memcpy(f->data + 4 * i, &v, 4);
    }
    tmp_dir(f->dir);
    snprintf(f->st, sizeof f->st, "%s/model.safetensors", f->dir);
    snprintf(f->cfg, sizeof f->cfg, "%s/config.json", f->dir);
    write_text_file(f->dir, "config.json", CONFIG);
}

static void fixture_write(const fixture *f) { write_st(f->st, f->e, f->n, f->data, f->bytes, 0); }

static void fixture_free(fixture *f) {
    free(f->data);
    rm_tree(f->dir);
}

// Loading fails with `code`; the one-line message starts with `file` and contains `needle`.
static void expect_fail(const char *dir, kf_status code, const char *file, const char *needle) {
    kf_model *m = (kf_model *)&m;
    kf_error err = {0};
    kf_status s = kf_model_load_hf(&m, dir, &err);
    if (s != code) fail_msg("expected %s, got %s: %s", kf_status_name(code), kf_status_name(s), err.msg);
    assert_null(m);
    if (strncmp(err.msg, file, strlen(file)) != 0) fail_msg("message does not start with %s: %s", file, err.msg);
    if (!strstr(err.msg, needle)) fail_msg("message lacks '%s': %s", needle, err.msg);
    assert_null(strchr(err.msg, '\n'));
}

static void patch_u64(const char *path, uint64_t v) {
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    uint8_t le[8];
    for (int i = 0; i < 8; i++) le[i] = (uint8_t)(v >> (8 * i));
    assert_int_equal(fwrite(le, 1, 8, f), 8);
    fclose(f);
}

static size_t file_size(const char *path) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fclose(f);
    return (size_t)n;
}

static void test_valid_fixture_loads(void **state) {
    (void)state;
    fixture f;
    fixture_init(&f);
    fixture_write(&f);
    kf_model *m;
    kf_error err = {0};
    if (kf_model_load_hf(&m, f.dir, &err) != KF_OK) fail_msg("%s", err.msg);
    assert_int_equal(kf_model_n_params(m), 16 * 8 + 8 + 4 * 64 + 8 + 3 * 96 + 8);
    kf_model_free(m);
    fixture_free(&f);
}

static void test_header_length(void **state) {
    (void)state;
    fixture f;
    fixture_init(&f);
    fixture_write(&f);
    patch_u64(f.st, file_size(f.st)); // 8 + N > size
    expect_fail(f.dir, KF_ERR_FORMAT, f.st, "larger than the file");
    patch_u64(f.st, 200u << 20);
    expect_fail(f.dir, KF_ERR_FORMAT, f.st, "100 MiB");
    patch_u64(f.st, UINT64_MAX);
    expect_fail(f.dir, KF_ERR_FORMAT, f.st, "100 MiB");
    write_bytes(f.st, "\x10\0\0", 3);
    expect_fail(f.dir, KF_ERR_FORMAT, f.st, "too short");
    write_bytes(f.st, "", 0);
    expect_fail(f.dir, KF_ERR_FORMAT, f.st, "too short");
    fixture_free(&f);
}

static void test_bad_json(void **state) {
    (void)state;
    fixture f;
    fixture_init(&f);
    size_t hlen;
    char *h = st_header(f.e, f.n, 0, &hlen);
    // header cut in half, with a length that matches the cut
    uint8_t buf[8 + 4096];
    size_t cut = hlen / 2;
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)((uint64_t)cut >> (8 * i));
    memcpy(buf + 8, h, cut);
    write_bytes(f.st, buf, 8 + cut);
    expect_fail(f.dir, KF_ERR_FORMAT, f.st, "not valid JSON");
    free(h);
    const char *bad[][2] = {
        {"[1, 2]      ", "not a JSON object"},
        {"{}  junk    ", "junk after"},
        {"{\"a\": 1}      ", "not a JSON object"},
        {"{\"a\": {\"dtype\": \"F32\"}}", "lacks dtype"},
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [-1], \"data_offsets\": [0, 0]}}", "shape entry"},
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [1.5], \"data_offsets\": [0, 0]}}", "shape entry"},
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0]}}", "data_offsets"},
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [\"0\", 4]}}", "data_offsets"},
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296, 4294967296], \"data_offsets\": [0, 0]}}",
         "overflowing shape"},
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [1,1,1,1,1], \"data_offsets\": [0, 4]}}", "dimensions"},
        {"{\"__metadata__\": 3}", "__metadata__"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t n = strlen(bad[i][0]);
        for (int k = 0; k < 8; k++) buf[k] = (uint8_t)((uint64_t)n >> (8 * k));
        memcpy(buf + 8, bad[i][0], n);
        memset(buf + 8 + n, 0, 16);
        write_bytes(f.st, buf, 8 + n + 16);
        expect_fail(f.dir, strstr(bad[i][1], "dimensions") ? KF_ERR_UNSUPPORTED : KF_ERR_FORMAT, f.st, bad[i][1]);
    }
    fixture_free(&f);
}

static void test_offsets(void **state) {
    (void)state;
    fixture f;
    fixture_init(&f);
    st_entry *k = &f.e[3]; // k_proj (8, 8)
    uint64_t b = k->begin, e = k->end;
    k->begin = f.bytes + 4 - (e - b);
    k->end = f.bytes + 4;
    fixture_write(&f);
    expect_fail(f.dir, KF_ERR_FORMAT, f.st, "past the end");
    k->begin = f.e[2].begin; // same span as q_proj
    k->end = f.e[2].end;
    fixture_write(&f);
    expect_fail(f.dir, KF_ERR_FORMAT, f.st, "overlap");
    k->begin = b + 4; // straddles into v_proj
    k->end = e + 4;
    fixture_write(&f);
    expect_fail(f.dir, KF_ERR_FORMAT, f.st, "overlap");
    k->begin = e;
    k->end = b;
    fixture_write(&f);
    expect_fail(f.dir, KF_ERR_FORMAT, f.st, "end before begin");
    fixture_free(&f);
}

static void test_dtype_and_shape(void **state) {
    (void)state;
    fixture f;
    fixture_init(&f);
    st_entry *norm = &f.e[1]; // input_layernorm (8) F32 = 32 bytes
    snprintf(norm->dtype, sizeof norm->dtype, "I8");
    norm->ne[0] = 32; // consistent span, so only the dtype is wrong
    fixture_write(&f);
    expect_fail(f.dir, KF_ERR_UNSUPPORTED, f.st, "'model.layers.0.input_layernorm.weight' has dtype I8");
    snprintf(norm->dtype, sizeof norm->dtype, "Q7");
    fixture_write(&f);
    expect_fail(f.dir, KF_ERR_UNSUPPORTED, f.st, "unknown dtype 'Q7'");
    snprintf(norm->dtype, sizeof norm->dtype, "F32");
    norm->ne[0] = 9; // 9 floats in 32 bytes
    fixture_write(&f);
    expect_fail(f.dir, KF_ERR_FORMAT, f.st, "'model.layers.0.input_layernorm.weight' has 9 F32 elements but spans 32");
    norm->ne[0] = 8;
    f.e[2].ne[0] = 4; // q_proj (4, 16): right size, wrong shape for config.json
    f.e[2].ne[1] = 16;
    fixture_write(&f);
    expect_fail(f.dir, KF_ERR_FORMAT, f.st, "'model.layers.0.self_attn.q_proj.weight' has shape (4, 16), config.json implies (8, 8)");
    fixture_free(&f);
}

static void test_tensor_set(void **state) {
    (void)state;
    fixture f;
    fixture_init(&f);
    f.e[8] = f.e[10]; // drop up_proj
    f.n--;
    f.bytes = st_layout(f.e, f.n);
    fixture_write(&f);
    expect_fail(f.dir, KF_ERR_FORMAT, f.st, "missing tensor 'model.layers.0.mlp.up_proj.weight'");
    fixture_free(&f);

    fixture_init(&f);
    f.e[f.n] = f.e[1];
    snprintf(f.e[f.n].name, sizeof f.e[f.n].name, "model.layers.0.mlp.up_proj.bias");
    f.n++;
    f.bytes = st_layout(f.e, f.n);
    f.data = realloc(f.data, f.bytes);
    memset(f.data + f.bytes - 32, 0, 32);
    fixture_write(&f);
    expect_fail(f.dir, KF_ERR_FORMAT, f.st, "unexpected tensor 'model.layers.0.mlp.up_proj.bias'");
    snprintf(f.e[f.n - 1].name, sizeof f.e[f.n - 1].name, "model.norm.weight"); // a duplicate name
    fixture_write(&f);
    expect_fail(f.dir, KF_ERR_FORMAT, f.st, "appears twice");
    fixture_free(&f);
}

static void test_config(void **state) {
    (void)state;
    fixture f;
    fixture_init(&f);
    fixture_write(&f);
    char want[256];
    write_text_file(f.dir, "config.json", "{\"architectures\": [\"FooForCausalLM\"]}");
    snprintf(want, sizeof want, "%s/config.json: unknown architecture 'FooForCausalLM' (supported: LlamaForCausalLM", f.dir);
    expect_fail(f.dir, KF_ERR_UNSUPPORTED, want, "GPT2LMHeadModel");
    write_text_file(f.dir, "config.json", "{\"architectures\": [\"LlamaForCausalLM\"");
    expect_fail(f.dir, KF_ERR_FORMAT, f.cfg, "not valid JSON");
    write_text_file(f.dir, "config.json", "{} {}");
    expect_fail(f.dir, KF_ERR_FORMAT, f.cfg, "not valid JSON");
    write_text_file(f.dir, "config.json", "{\"architectures\": []}");
    expect_fail(f.dir, KF_ERR_FORMAT, f.cfg, "architectures");
    const char *bad[][2] = {
        {"\"hidden_size\": 8", "\"hidden_size\": \"eight\""},
        {"\"vocab_size\": 16", "\"vocab_size\": -16"},
        {"\"intermediate_size\": 12", "\"intermediate_size\": 16"},
        {"\"intermediate_size\": 12", "\"intermediate_size\": [12, 12]"},
        {"\"num_attention_heads\": 2", "\"num_attention_heads\": 3"},
        {"\"tie_word_embeddings\": true", "\"tie_word_embeddings\": 1"},
        {"\"vocab_size\": 16", "\"vocab_size\": 17"},
        {"\"num_hidden_layers\": 1", "\"num_hidden_layers\": 2"},
        {"\"vocab_size\": 16", "\"hidden_act\": \"gelu\", \"vocab_size\": 16"},
        {"\"vocab_size\": 16", "\"num_key_value_heads\": 4, \"vocab_size\": 16"},
    };
    const char *needle[] = {"hidden_size", "vocab_size", "gate_proj.weight' has shape (12, 8), config.json implies (16, 8)",
                            "lists 2 values for 1 layers", "not a multiple", "tie_word_embeddings",
                            "embed_tokens.weight' has shape (16, 8), config.json implies (17, 8)",
                            "missing tensor 'model.layers.1.", "hidden_act 'gelu'", "num_key_value_heads"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char cfg[1024];
        const char *at = strstr(CONFIG, bad[i][0]);
        snprintf(cfg, sizeof cfg, "%.*s%s%s", (int)(at - CONFIG), CONFIG, bad[i][1], at + strlen(bad[i][0]));
        write_text_file(f.dir, "config.json", cfg);
        bool in_tensors = strstr(needle[i], "tensor") || strstr(needle[i], "implies");
        expect_fail(f.dir, strstr(needle[i], "hidden_act") ? KF_ERR_UNSUPPORTED : KF_ERR_FORMAT,
                    in_tensors ? f.st : f.cfg, needle[i]);
    }
    remove(f.cfg);
    expect_fail(f.dir, KF_ERR_IO, f.cfg, "missing");
    fixture_free(&f);
    expect_fail("/nonexistent/kf_model", KF_ERR_IO, "/nonexistent/kf_model/config.json", "missing");
}

static void test_truncated(void **state) {
    (void)state;
    fixture f;
    fixture_init(&f);
    fixture_write(&f);
    size_t n = file_size(f.st);
    uint8_t *whole = malloc(n);
    FILE *fp = fopen(f.st, "rb");
    assert_int_equal(fread(whole, 1, n, fp), n);
    fclose(fp);
    write_bytes(f.st, whole, n - f.bytes / 2); // cut in the middle of the data
    expect_fail(f.dir, KF_ERR_FORMAT, f.st, "past the end");
    // Cuts all over the file fail cleanly too (the sanitizers check the reads).
    for (size_t cut = 0; cut < n; cut += 1 + cut % 17) {
        write_bytes(f.st, whole, cut);
        kf_model *m;
        kf_error err = {0};
        assert_int_equal(kf_model_load_hf(&m, f.dir, &err), KF_ERR_FORMAT);
        assert_non_null(strstr(err.msg, f.st));
    }
    free(whole);
    fixture_free(&f);
}

// Random byte flips in the header: any outcome but a crash, and a message on error.
static void test_header_flips(void **state) {
    (void)state;
    fixture f;
    fixture_init(&f);
    fixture_write(&f);
    size_t n = file_size(f.st);
    uint8_t *whole = malloc(n), *copy = malloc(n);
    FILE *fp = fopen(f.st, "rb");
    assert_int_equal(fread(whole, 1, n, fp), n);
    fclose(fp);
    size_t hend = n - f.bytes;
    for (int it = 0; it < 150; it++) {
        memcpy(copy, whole, n);
        for (int k = 0; k < 3; k++) {
            size_t at = kf_rng_u64(kf_test_rng()) % hend;
            copy[at] = "0123456789[]{}\",:-. eE\x00\xff"[kf_rng_below(kf_test_rng(), 24)];
        }
        write_bytes(f.st, copy, n);
        kf_model *m;
        kf_error err = {0};
        kf_status s = kf_model_load_hf(&m, f.dir, &err);
        if (s == KF_OK) kf_model_free(m);
        else assert_true(err.msg[0] != 0 && !strchr(err.msg, '\n'));
    }
    free(whole);
    free(copy);
    fixture_free(&f);
}

static void test_sharded_index(void **state) {
    (void)state;
    fixture f;
    fixture_init(&f);
    fixture_write(&f);
    char idx[128];
    snprintf(idx, sizeof idx, "%s/model.safetensors.index.json", f.dir);
    write_text_file(f.dir, "model.safetensors.index.json", "{\"weight_map\": {\"model.norm.weight\": \"../x\"}}");
    expect_fail(f.dir, KF_ERR_FORMAT, idx, "bad shard name");
    write_text_file(f.dir, "model.safetensors.index.json", "{\"weight_map\": {\"model.norm.weight\": \"gone.safetensors\"}}");
    expect_fail(f.dir, KF_ERR_IO, f.dir, "gone.safetensors");
    write_text_file(f.dir, "model.safetensors.index.json", "{\"weight_map\": [1]}");
    expect_fail(f.dir, KF_ERR_FORMAT, idx, "weight_map");
    write_text_file(f.dir, "model.safetensors.index.json", "{\"weight_map\": {\"model.norm.weight\": \"model.safetensors\"}}");
    expect_fail(f.dir, KF_ERR_FORMAT, idx, "index lists 1");
    write_text_file(f.dir, "model.safetensors.index.json",
                    "{\"weight_map\": {\"model.norm.weight\": \"model.safetensors\", \"nope\": \"model.safetensors\"}}");
    expect_fail(f.dir, KF_ERR_FORMAT, idx, "tensor 'nope' is not in shard");
    fixture_free(&f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_fixture_loads),
        cmocka_unit_test(test_header_length),
        cmocka_unit_test(test_bad_json),
        cmocka_unit_test(test_offsets),
        cmocka_unit_test(test_dtype_and_shape),
        cmocka_unit_test(test_tensor_set),
        cmocka_unit_test(test_config),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_header_flips),
        cmocka_unit_test(test_sharded_index),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
