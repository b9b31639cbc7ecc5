// Hardening against hostile files (issue 11): names and strings read from a
// file reach error messages escaped (kf_str_escape), so a crafted name cannot
// drive the terminal; sizes from a file are checked against the file before
// anything is allocated for them; and the fuzzers' findings stay fixed.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "core/file.h"
#include "io/load.h"
#include "io/save.h"
#include "model/model.h"
#include "stats/statsfile.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

// Terminal escapes: set the window title, clear the screen.
#define HOSTILE "\x1b]0;owned\x07\x1b[2J"
#define HOSTILE_JSON "\\u001b]0;owned\\u0007\\u001b[2J"
#define HOSTILE_SHOWN "\\x1B]0;owned\\x07\\x1B[2J"

#define ASSERT_OK(call)                                                                                                \
    do {                                                                                                               \
        if ((call) != KF_OK) fail_msg("%s: %s", #call, err.msg);                                                       \
    } while (0)

// The call fails with a message holding `what`.
#define ASSERT_FAILS(call, what)                                                                                       \
    do {                                                                                                               \
        err.msg[0] = 0;                                                                                                \
        if ((call) == KF_OK) fail_msg("%s succeeded, expected '%s'", #call, what);                                     \
        if (!strstr(err.msg, what)) fail_msg("%s: message '%s' should say '%s'", #call, err.msg, what);                \
    } while (0)

static void tmp_file(char *out, const char *name) { snprintf(out, 256, "/tmp/kf_hardening_%d_%s", (int)getpid(), name); }

// The message holds no control byte and shows the hostile name escaped.
static void assert_escaped(const kf_error *err) {
    for (const char *p = err->msg; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p == 0x7F) fail_msg("raw control byte in '%s'", err->msg);
    if (!strstr(err->msg, HOSTILE_SHOWN)) fail_msg("message '%s' does not show the name escaped", err->msg);
}

static void tmp_dir(char *out, const char *name) {
    tmp_file(out, name);
    mkdir(out, 0700);
}

static void write_in(const char *dir, const char *name, const void *data, size_t n) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    write_bytes(path, data, n);
}

static void test_str_escape(void **state) {
    (void)state;
    char b[16];
    assert_string_equal(kf_str_escape(b, sizeof b, "plain", KF_STR_NUL), "plain");
    assert_string_equal(kf_str_escape(b, sizeof b, "a\x1b[2J", KF_STR_NUL), "a\\x1B[2J");
    assert_string_equal(kf_str_escape(b, sizeof b, "a\\b", KF_STR_NUL), "a\\\\b");
    assert_string_equal(kf_str_escape(b, sizeof b, "\xE2\x96\x81", KF_STR_NUL), "\\xE2\\x96\\x81");
    assert_string_equal(kf_str_escape(b, sizeof b, "ab\0cd", 5), "ab\\x00cd"); // n bytes, NUL included
    // 15 characters fit exactly; one more is cut with "..." within the buffer
    assert_string_equal(kf_str_escape(b, sizeof b, "0123456789abcde", KF_STR_NUL), "0123456789abcde");
    assert_string_equal(kf_str_escape(b, sizeof b, "0123456789abcdef", KF_STR_NUL), "0123456789ab...");
    assert_string_equal(kf_str_escape(b, sizeof b, "0123456789a\x01", KF_STR_NUL), "0123456789a\\x01");
    assert_string_equal(kf_str_escape(b, sizeof b, "0123456789a\x01z", KF_STR_NUL), "0123456789a..."); // whole escapes
    assert_string_equal(kf_str_escape(b, 4, "abcdef", KF_STR_NUL), "...");
    assert_string_equal(kf_str_escape(b, 3, "abcdef", KF_STR_NUL), "");
    char big[KF_ESC_NAME];
    char name[300];
    memset(name, '\x1b', sizeof name - 1);
    name[sizeof name - 1] = 0;
    assert_true(strlen(kf_str_escape(big, sizeof big, name, KF_STR_NUL)) < sizeof big);
}

// The case: a safetensors tensor name with terminal escapes.
static void test_safetensors_name_escaped(void **state) {
    (void)state;
    char dir[256];
    tmp_dir(dir, "st_escape");
    const char *cfg = "{\"architectures\": [\"LlamaForCausalLM\"]}";
    write_in(dir, "config.json", cfg, strlen(cfg));
    char hdr[128];
    int n = snprintf(hdr, sizeof hdr, "{\"%s\": {\"shape\": [1]}}", HOSTILE_JSON);
    uint8_t file[8 + 128];
    uint64_t len = (uint64_t)n;
    memcpy(file, &len, 8);
    memcpy(file + 8, hdr, (size_t)n);
    write_in(dir, "model.safetensors", file, 8 + (size_t)n);
    kf_model *m;
    kf_error err = {0};
    assert_int_equal(kf_model_load(&m, dir, &err), KF_ERR_FORMAT);
    assert_escaped(&err);
}

// A GGUF key of an unknown type, named with terminal escapes.
static void test_gguf_key_escaped(void **state) {
    (void)state;
    uint8_t b[64];
    size_t o = 0;
    uint32_t v3 = 3, type = 99;
    uint64_t nt = 0, nkv = 1, klen = strlen(HOSTILE);
    memcpy(b + o, "GGUF", 4), o += 4;
    memcpy(b + o, &v3, 4), o += 4;
    memcpy(b + o, &nt, 8), o += 8;
    memcpy(b + o, &nkv, 8), o += 8;
    memcpy(b + o, &klen, 8), o += 8;
    memcpy(b + o, HOSTILE, klen), o += klen;
    memcpy(b + o, &type, 4), o += 4;
    char path[256];
    tmp_file(path, "escape.gguf");
    write_bytes(path, b, o);
    kf_model *m;
    kf_error err = {0};
    assert_int_equal(kf_model_load(&m, path, &err), KF_ERR_FORMAT);
    assert_escaped(&err);
}

static void test_tokenizer_json_escaped(void **state) {
    (void)state;
    char dir[256];
    tmp_dir(dir, "tok_escape");
    char js[256];
    int n = snprintf(js, sizeof js, "{\"model\": {\"type\": \"%s\", \"vocab\": {}, \"merges\": []}}", HOSTILE_JSON);
    write_in(dir, "tokenizer.json", js, (size_t)n);
    kf_tokenizer *tok;
    kf_error err = {0};
    assert_int_equal(kf_tokenizer_load_hf(&tok, dir, &err), KF_ERR_UNSUPPORTED);
    assert_escaped(&err);
}

// A tokenizer.json whose one piece has id 2^24 - 1 is refused before the
// 2^24 entries are allocated.
static void test_tokenizer_json_sparse_ids(void **state) {
    (void)state;
    char dir[256];
    tmp_dir(dir, "tok_sparse");
    static const char js[] =
        "{\"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Prepend\", \"prepend\": \"\xE2\x96\x81\"}, "
        "{\"type\": \"Replace\", \"pattern\": {\"String\": \" \"}, \"content\": \"\xE2\x96\x81\"}]}, "
        "\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 16777215}, \"merges\": []}}";
    write_in(dir, "tokenizer.json", js, sizeof js - 1);
    kf_tokenizer *tok;
    kf_error err = {0};
    ASSERT_FAILS(kf_tokenizer_load_hf(&tok, dir, &err), "ids run up to 16777215 but vocab and added_tokens hold 1 entries");
}

// A statistics entry with a bad header (d = 0), named with terminal escapes.
static void test_statsfile_name_escaped(void **state) {
    (void)state;
    uint8_t b[256] = {0};
    size_t o = 0;
    uint32_t version = KF_STATSFILE_VERSION, n_entries = 1, name_len = (uint32_t)strlen(HOSTILE);
    uint64_t nb = 4 + name_len + 4 + 4 + 4 + 4 + 8 + 8;
    memcpy(b, "KFSTATS\0", 8), o = 8;
    memcpy(b + o, &version, 4), o += 4;
    memcpy(b + o, &n_entries, 4), o += 4;
    o += 8; // fingerprint 0
    int32_t protocol[4] = {256, 4, -1, 1}; // ctx, batch, no BOS, one rank
    memcpy(b + o, protocol, sizeof protocol), o += sizeof protocol;
    memcpy(b + o, &(int64_t){1024}, 8), o += 8; // tokens run
    memcpy(b + o, &nb, 8), o += 8;
    memcpy(b + o, &name_len, 4), o += 4;
    memcpy(b + o, HOSTILE, name_len), o += name_len;
    o += (size_t)nb - 4 - name_len; // d = 0 and the rest zero
    char path[256];
    tmp_file(path, "escape.kfs");
    write_bytes(path, b, o);
    kf_statsfile f;
    kf_error err = {0};
    assert_int_equal(kf_statsfile_load(&f, path, 0, NULL, &err), KF_ERR_FORMAT);
    assert_escaped(&err);
}

// Fuzzer finding (fuzz_config): router tensors for a layer that kfuse_moe
// makes dense were taken on read and dropped by the GGUF writer, so the
// model written back differed. Such a folder is refused now.
static void test_dense_layer_routers_refused(void **state) {
    (void)state;
    char src[512];
    snprintf(src, sizeof src, "%s/tests/fixtures/models/llama-gqa-bf16", kf_test_root());
    kf_model *m;
    kf_error err = {0};
    ASSERT_OK(kf_model_load(&m, src, &err));
    for (int l = 0; l < m->n_layer; l++) {
        kf_layer *L = &m->layers[l];
        L->n_expert = 2;
        L->router = KF_ROUTER_LINEAR;
        L->top_k = 1;
        ASSERT_OK(kf_model_alloc_tensor(m, &L->router_w, 2, (int64_t[]){2, m->n_embd}, &err));
    }
    char dir[256], cfg_path[512];
    tmp_file(dir, "dense_routers");
    kf_save_opts o = {.format = KF_FORMAT_HF};
    ASSERT_OK(kf_model_save(m, dir, &o, &err));
    kf_model_free(m);
    // layer 1 dense in config.json; its router stays in moe_router.safetensors
    snprintf(cfg_path, sizeof cfg_path, "%s/config.json", dir);
    char *text;
    size_t len;
    ASSERT_OK(kf_file_read_all(cfg_path, &text, &len, &err));
    cJSON *cfg = cJSON_Parse(text);
    free(text);
    cJSON *ne = cJSON_GetObjectItem(cJSON_GetObjectItem(cfg, "kfuse_moe"), "n_expert");
    assert_non_null(ne);
    cJSON_ReplaceItemInArray(ne, 1, cJSON_CreateNumber(0));
    text = cJSON_PrintUnformatted(cfg);
    cJSON_Delete(cfg);
    write_bytes(cfg_path, text, strlen(text));
    free(text);
    ASSERT_FAILS(kf_model_load(&m, dir, &err), "layer 1 has router tensors but no experts");
}

// config.json sizes out of range fail at once, naming the key.
static void test_config_limits(void **state) {
    (void)state;
    char dir[256];
    tmp_dir(dir, "cfg_limits");
    static const char *const cases[][2] = {
        {"\"hidden_size\": 2147483648, \"num_hidden_layers\": 2", "\"hidden_size\" must be an integer in [1, "},
        {"\"hidden_size\": 64, \"num_hidden_layers\": 1000000", "\"num_hidden_layers\" must be an integer in [1, "},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char cfg[512];
        int n = snprintf(cfg, sizeof cfg,
                         "{\"architectures\": [\"LlamaForCausalLM\"], \"vocab_size\": 32, %s, "
                         "\"num_attention_heads\": 4, \"intermediate_size\": 16}", cases[i][0]);
        write_in(dir, "config.json", cfg, (size_t)n);
        uint8_t st[16] = {2, 0, 0, 0, 0, 0, 0, 0, '{', '}'}; // an empty safetensors file
        write_in(dir, "model.safetensors", st, 10);
        kf_model *m;
        kf_error err = {0};
        clock_t t0 = clock();
        ASSERT_FAILS(kf_model_load(&m, dir, &err), cases[i][1]);
        assert_true((double)(clock() - t0) / CLOCKS_PER_SEC < 0.5);
    }
}

// llama2.c: a header implying more than the file, and a tokenizer.bin too
// small for the model's vocabulary, fail before anything is allocated.
static void test_llama2c_limits(void **state) {
    (void)state;
    char path[256];
    tmp_file(path, "limits.bin");
    int32_t hdr[7] = {1 << 30, 1 << 30, 1 << 20, 1 << 10, 1 << 10, 1 << 30, 1 << 30};
    write_bytes(path, hdr, sizeof hdr);
    kf_model *m;
    kf_error err = {0};
    ASSERT_FAILS(kf_model_load(&m, path, &err), "file is 28 bytes but its llama2.c header");
    // a tokenizer.bin of one 1-byte piece, asked for 10^8 tokens
    uint8_t tb[13] = {1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 'a'};
    tmp_file(path, "limits_tokenizer.bin");
    write_bytes(path, tb, sizeof tb);
    kf_tokenizer *tok;
    ASSERT_FAILS(kf_tokenizer_load_llama2c(&tok, path, 100000000, &err), "13 bytes cannot hold the model's 100000000 tokens");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_str_escape),
        cmocka_unit_test(test_safetensors_name_escaped),
        cmocka_unit_test(test_gguf_key_escaped),
        cmocka_unit_test(test_tokenizer_json_escaped),
        cmocka_unit_test(test_tokenizer_json_sparse_ids),
        cmocka_unit_test(test_statsfile_name_escaped),
        cmocka_unit_test(test_dense_layer_routers_refused),
        cmocka_unit_test(test_config_limits),
        cmocka_unit_test(test_llama2c_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
