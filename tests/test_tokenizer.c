// Tokenizer behaviour other than reference ids (see test_tokenizer_ref.c):
// bad input (missing/malformed tokenizer.json, truncated tokenizer.bin,
// invalid UTF-8) gives one-line errors naming the file or byte offset; the
// model-path dispatch; BOS/EOS/add_bos from the config files; the Metaspace
// form of tokenizer.json; kf_tokenizer_init from an in-memory vocabulary
// (the GGUF path) gives the same ids as the file loaders; streaming decode.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "core/file.h"
#include "tokenizer/tokenizer.h"
#include "test_util.h"

static char g_root[1024], g_build[1024], g_llama[1200], g_shared[1200], g_tmp[1200], g_gpt2_small[1200];

static void path_of(char *out, size_t n, const char *dir, const char *name) {
    if ((size_t)snprintf(out, n, "%s/%s", dir, name) >= n) fail_msg("path too long: %s/%s", dir, name);
}

static char *read_file(const char *path, size_t *n) {
    char *buf;
    kf_error err = {0};
    if (kf_file_read_all(path, &buf, n, &err) != KF_OK) fail_msg("%s", err.msg);
    return buf;
}

// A fresh folder under the build directory.
static void make_dir(char *out, size_t n, const char *name) {
    path_of(out, n, g_tmp, name);
    mkdir(g_tmp, 0755);
    mkdir(out, 0755);
}

static void assert_one_line(const kf_error *err, const char *must_contain) {
    if (strchr(err->msg, '\n')) fail_msg("error is not one line: %s", err->msg);
    if (!strstr(err->msg, must_contain)) fail_msg("error \"%s\" does not mention \"%s\"", err->msg, must_contain);
}

static int32_t *encode(const kf_tokenizer *tok, const char *text, size_t len, bool bos, size_t *n) {
    int32_t *ids;
    kf_error err = {0};
    if (kf_tokenizer_encode(tok, text, len, bos, &ids, n, &err) != KF_OK) fail_msg("%s", err.msg);
    return ids;
}

static void assert_same_ids(const kf_tokenizer *a, const kf_tokenizer *b, const char *text, size_t len) {
    size_t na, nb;
    int32_t *ia = encode(a, text, len, false, &na), *ib = encode(b, text, len, false, &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(ia, ib, na * sizeof(int32_t));
    free(ia);
    free(ib);
}

static char *wiki_prefix(size_t n, size_t *len) {
    char path[2048];
    path_of(path, sizeof path, g_root, "data/wikitext-2-raw/wiki.test.raw");
    char *text = read_file(path, len);
    if (*len > n) *len = n;
    return text;
}

// ---------------------------------------------------------------- bad input

static void test_missing_and_malformed_json(void **state) {
    (void)state;
    kf_tokenizer *tok = (kf_tokenizer *)1;
    kf_error err = {0};
    char dir[2048];
    // a folder without tokenizer.json
    path_of(dir, sizeof dir, g_root, "tests/fixtures/tokenizer");
    assert_int_equal(kf_tokenizer_load_hf(&tok, dir, &err), KF_ERR_IO);
    assert_null(tok);
    assert_one_line(&err, "tests/fixtures/tokenizer/tokenizer.json");
    assert_int_equal(kf_tokenizer_load_hf(&tok, "/nonexistent/tokenizer.json", &err), KF_ERR_IO);
    assert_one_line(&err, "/nonexistent/tokenizer.json");

    static const struct {
        const char *dir, *says;
        kf_status code;
    } cases[] = {
        {"malformed", "malformed JSON", KF_ERR_FORMAT},
        {"unigram", "Unigram", KF_ERR_UNSUPPORTED},
        {"bad_merge", "merge 2 (\"b c\")", KF_ERR_FORMAT},
        {"bad_id", "\"a\" has a bad id", KF_ERR_FORMAT},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char sub[256];
        snprintf(sub, sizeof sub, "tests/fixtures/tokenizer/%s", cases[i].dir);
        path_of(dir, sizeof dir, g_root, sub);
        kf_status st = kf_tokenizer_load_hf(&tok, dir, &err);
        if (st != cases[i].code) fail_msg("%s: status %d, expected %d (%s)", cases[i].dir, st, cases[i].code, err.msg);
        assert_null(tok);
        assert_one_line(&err, cases[i].says);
        assert_one_line(&err, sub);
    }
}

// Truncations of a real tokenizer.json are malformed JSON naming the file.
static void test_truncated_tokenizer_json(void **state) {
    (void)state;
    char src[2048], dir[2048], dst[2048];
    path_of(src, sizeof src, g_llama, "tokenizer.json");
    size_t size;
    char *buf = read_file(src, &size);
    make_dir(dir, sizeof dir, "truncated_json");
    path_of(dst, sizeof dst, dir, "tokenizer.json");
    kf_tokenizer *tok;
    kf_error err = {0};
    for (size_t cut = 0; cut < size; cut += size / 23) {
        write_bytes(dst, buf, cut);
        kf_status st = kf_tokenizer_load_hf(&tok, dir, &err);
        if (st != KF_ERR_FORMAT) fail_msg("tokenizer.json cut to %zu bytes: status %d (%s)", cut, st, err.msg);
        assert_null(tok);
        assert_one_line(&err, dst);
    }
    free(buf);
}

// Every truncation of a real tokenizer.bin, and a corrupt length, is an
// error naming the file (run under ASan this also proves no read past the end).
static void test_truncated_tokenizer_bin(void **state) {
    (void)state;
    char src[2048], dst[2048], dir[2048];
    path_of(src, sizeof src, g_llama, "tokenizer.bin");
    size_t size;
    char *buf = read_file(src, &size);
    make_dir(dir, sizeof dir, "truncated");
    path_of(dst, sizeof dst, dir, "tokenizer.bin");
    kf_tokenizer *tok;
    kf_error err = {0};
    int n_cuts = 0;
    for (size_t cut = 0; cut < size; cut += cut < 64 ? 1 : 997) {
        write_bytes(dst, buf, cut);
        kf_status st = kf_tokenizer_load_llama2c(&tok, dst, 4096, &err);
        if (st != KF_ERR_FORMAT) fail_msg("truncated to %zu bytes: status %d (%s)", cut, st, err.msg);
        assert_null(tok);
        assert_one_line(&err, dst);
        n_cuts++;
    }
    write_bytes(dst, buf, size - 1);
    assert_int_equal(kf_tokenizer_load_llama2c(&tok, dst, 4096, &err), KF_ERR_FORMAT);
    assert_one_line(&err, "truncated");
    // token 0's length set to -5, then to 1 GiB
    int32_t bad[2] = {-5, 1 << 30};
    for (int k = 0; k < 2; k++) {
        memcpy(buf + 8, &bad[k], 4);
        write_bytes(dst, buf, size);
        assert_int_equal(kf_tokenizer_load_llama2c(&tok, dst, 4096, &err), KF_ERR_FORMAT);
        assert_one_line(&err, "token 0 has length");
    }
    path_of(dst, sizeof dst, dir, "missing.bin");
    assert_int_equal(kf_tokenizer_load_llama2c(&tok, dst, 4096, &err), KF_ERR_IO);
    assert_one_line(&err, "missing.bin");
    printf("%d truncations of tokenizer.bin rejected\n", n_cuts);
    free(buf);
}

// A folder with a llama2.c tokenizer.bin and no tokenizer.json: the model's
// tokenizer is that file.
static void test_folder_tokenizer_bin(void **state) {
    (void)state;
    char src[2048], dst[2048], dir[2048];
    path_of(src, sizeof src, g_llama, "tokenizer.bin");
    size_t size;
    char *buf = read_file(src, &size);
    make_dir(dir, sizeof dir, "binonly");
    path_of(dst, sizeof dst, dir, "tokenizer.bin");
    write_bytes(dst, buf, size);
    free(buf);
    kf_tokenizer *a, *b;
    kf_error err = {0};
    if (kf_tokenizer_load_for_model(&a, dir, 4096, &err) != KF_OK) fail_msg("%s", err.msg);
    if (kf_tokenizer_load_llama2c(&b, src, 4096, &err) != KF_OK) fail_msg("%s", err.msg);
    size_t na, nb;
    int32_t *x = encode(a, "Hello world, said he.", 21, true, &na), *y = encode(b, "Hello world, said he.", 21, true, &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(x, y, sizeof *x * na);
    free(x), free(y);
    kf_tokenizer_free(a);
    kf_tokenizer_free(b);
}

static void test_invalid_utf8_and_ids(void **state) {
    (void)state;
    kf_tokenizer *tok;
    kf_error err = {0};
    if (kf_tokenizer_load_hf(&tok, g_llama, &err) != KF_OK) fail_msg("%s", err.msg);
    int32_t *ids = (int32_t *)1;
    size_t n = 7;
    assert_int_equal(kf_tokenizer_encode(tok, "ab\xFF" "cd", 5, true, &ids, &n, &err), KF_ERR_FORMAT);
    assert_null(ids);
    assert_int_equal(n, 0);
    assert_one_line(&err, "byte offset 2");
    assert_int_equal(kf_tokenizer_encode(tok, "caf\xC3", 4, false, &ids, &n, &err), KF_ERR_FORMAT);
    assert_one_line(&err, "byte offset 3");
    int32_t bad[3] = {5, 4096, 6};
    char *text = (char *)1;
    assert_int_equal(kf_tokenizer_decode(tok, bad, 3, &text, &err), KF_ERR_ARG);
    assert_null(text);
    assert_one_line(&err, "4096");
    // empty text: no ids, or just BOS
    ids = encode(tok, "", 0, false, &n);
    assert_int_equal(n, 0);
    free(ids);
    ids = encode(tok, "", 0, true, &n);
    assert_int_equal(n, 1);
    assert_int_equal(ids[0], 1);
    free(ids);
    kf_tokenizer_free(tok);
}

// ---------------------------------------------------------------- loading

static void test_load_for_model(void **state) {
    (void)state;
    kf_tokenizer *tok;
    kf_error err = {0};
    if (kf_tokenizer_load_for_model(&tok, g_llama, 4096, &err) != KF_OK) fail_msg("%s", err.msg);
    assert_int_equal(kf_tokenizer_kind(tok), KF_TOK_SPM);
    assert_int_equal(kf_tokenizer_bos(tok), 1);
    assert_int_equal(kf_tokenizer_eos(tok), 2);
    assert_true(kf_tokenizer_add_bos(tok));
    size_t n;
    int32_t *ids = encode(tok, "Hello world", 11, kf_tokenizer_add_bos(tok), &n);
    assert_true(n >= 2);
    assert_int_equal(ids[0], 1);
    free(ids);

    // a llama2.c model.bin finds the tokenizer.bin beside it
    char dir[2048], path[2048], src[2048];
    make_dir(dir, sizeof dir, "llama2c_model");
    path_of(path, sizeof path, dir, "model.bin");
    write_bytes(path, "x", 1);
    path_of(src, sizeof src, dir, "tokenizer.bin");
    unlink(src);
    kf_tokenizer *bin;
    assert_int_equal(kf_tokenizer_load_for_model(&bin, path, 4096, &err), KF_ERR_IO);
    assert_one_line(&err, "tokenizer.bin");
    path_of(src, sizeof src, g_llama, "tokenizer.bin");
    size_t size;
    char *buf = read_file(src, &size);
    path_of(path, sizeof path, dir, "tokenizer.bin");
    write_bytes(path, buf, size);
    free(buf);
    path_of(path, sizeof path, dir, "model.bin");
    if (kf_tokenizer_load_for_model(&bin, path, 4096, &err) != KF_OK) fail_msg("%s", err.msg);
    assert_int_equal(kf_tokenizer_n_vocab(bin), 4096);
    size_t len;
    char *text = wiki_prefix(50000, &len);
    assert_same_ids(tok, bin, text, len);
    free(text);
    kf_tokenizer_free(bin);
    kf_tokenizer_free(tok);

    path_of(path, sizeof path, dir, "model.gguf");
    write_bytes(path, "GGUF", 4);
    assert_int_not_equal(kf_tokenizer_load_for_model(&tok, path, 0, &err), KF_OK); // a 4-byte, truncated GGUF
    assert_null(tok);
    assert_one_line(&err, "model.gguf");
    assert_int_equal(kf_tokenizer_load_for_model(&tok, "/nonexistent/m.bin", 0, &err), KF_ERR_IO);
    assert_one_line(&err, "/nonexistent/m.bin");
}

// tokenizer_config.json and generation_config.json override the defaults.
static void test_config_files(void **state) {
    (void)state;
    char dir[2048], path[2048], src[2048];
    make_dir(dir, sizeof dir, "configs");
    path_of(src, sizeof src, g_llama, "tokenizer.json");
    size_t size;
    char *buf = read_file(src, &size);
    path_of(path, sizeof path, dir, "tokenizer.json");
    write_bytes(path, buf, size);
    free(buf);
    const char *tc = "{\"add_bos_token\": false, \"bos_token\": {\"content\": \"</s>\"}, \"eos_token\": \"<unk>\"}";
    path_of(path, sizeof path, dir, "tokenizer_config.json");
    write_bytes(path, tc, strlen(tc));
    path_of(path, sizeof path, dir, "generation_config.json");
    unlink(path);
    kf_tokenizer *tok;
    kf_error err = {0};
    if (kf_tokenizer_load_hf(&tok, dir, &err) != KF_OK) fail_msg("%s", err.msg);
    assert_false(kf_tokenizer_add_bos(tok));
    assert_int_equal(kf_tokenizer_bos(tok), 2);
    assert_int_equal(kf_tokenizer_eos(tok), 0);
    kf_tokenizer_free(tok);
    const char *gc = "{\"bos_token_id\": 1, \"eos_token_id\": [2, 0]}";
    write_bytes(path, gc, strlen(gc));
    if (kf_tokenizer_load_hf(&tok, dir, &err) != KF_OK) fail_msg("%s", err.msg);
    assert_int_equal(kf_tokenizer_bos(tok), 1);
    assert_int_equal(kf_tokenizer_eos(tok), 2);
    kf_tokenizer_free(tok);
    write_bytes(path, "{\"eos_token_id\": ", 17);
    assert_int_equal(kf_tokenizer_load_hf(&tok, dir, &err), KF_ERR_FORMAT);
    assert_one_line(&err, "generation_config.json");
}

// The older Metaspace pre-tokenizer form of the same tokenizer gives the
// same ids; with split=true no merge crosses a "▁".
static void test_metaspace_form(void **state) {
    (void)state;
    char src[2048], dir[2048], path[2048];
    path_of(src, sizeof src, g_llama, "tokenizer.json");
    size_t size;
    char *buf = read_file(src, &size);
    cJSON *root = cJSON_ParseWithLength(buf, size);
    assert_non_null(root);
    free(buf);
    cJSON_ReplaceItemInObject(root, "normalizer", cJSON_CreateNull());
    cJSON *meta = cJSON_CreateObject();
    cJSON_AddStringToObject(meta, "type", "Metaspace");
    cJSON_AddStringToObject(meta, "replacement", "\xE2\x96\x81");
    cJSON_AddStringToObject(meta, "prepend_scheme", "first");
    cJSON_AddBoolToObject(meta, "split", false);
    cJSON_ReplaceItemInObject(root, "pre_tokenizer", meta);
    make_dir(dir, sizeof dir, "metaspace");
    path_of(path, sizeof path, dir, "tokenizer.json");
    char *json = cJSON_PrintUnformatted(root);
    write_bytes(path, json, strlen(json));
    free(json);

    kf_tokenizer *orig, *tok;
    kf_error err = {0};
    if (kf_tokenizer_load_hf(&orig, g_llama, &err) != KF_OK) fail_msg("%s", err.msg);
    if (kf_tokenizer_load_hf(&tok, path, &err) != KF_OK) fail_msg("%s", err.msg);
    size_t len;
    char *text = wiki_prefix(100000, &len);
    assert_same_ids(orig, tok, text, len);
    kf_tokenizer_free(tok);

    cJSON_ReplaceItemInObject(meta, "split", cJSON_CreateTrue());
    json = cJSON_PrintUnformatted(root);
    write_bytes(path, json, strlen(json));
    free(json);
    if (kf_tokenizer_load_hf(&tok, path, &err) != KF_OK) fail_msg("%s", err.msg);
    int32_t two = -1, one = -1;
    for (int i = 0; i < kf_tokenizer_n_vocab(tok); i++) {
        if (strcmp(kf_tokenizer_piece(tok, i), "\xE2\x96\x81\xE2\x96\x81") == 0) two = i;
        if (strcmp(kf_tokenizer_piece(tok, i), "\xE2\x96\x81") == 0) one = i;
    }
    assert_true(two >= 0 && one >= 0);
    size_t n_joined, n_split;
    int32_t *joined = encode(orig, "Hello  <s>", 10, false, &n_joined), *split = encode(tok, "Hello  <s>", 10, false, &n_split);
    bool joined_has_two = false, split_has_two = false, split_has_one = false;
    for (size_t i = 0; i < n_joined; i++) joined_has_two |= joined[i] == two;
    for (size_t i = 0; i < n_split; i++) split_has_two |= split[i] == two, split_has_one |= split[i] == one;
    assert_true(joined_has_two);
    assert_false(split_has_two);
    assert_true(split_has_one);
    free(joined);
    free(split);
    free(text);
    kf_tokenizer_free(tok);
    kf_tokenizer_free(orig);
    cJSON_Delete(root);
}

// ---------------------------------------------------------------- in-memory spec

// Byte-level: a tokenizer made from the pieces and merges of a GPT-2 folder
// (tokenizer.json's vocabulary, merges.txt of n_want merges) tokenizes the
// first 200 kB of WikiText-2 as the folder's tokenizer.json does.
static void check_bytelevel_spec(const char *dir, int n_want) {
    char merges_path[2048];
    kf_tokenizer *file, *mem;
    kf_error err = {0};
    size_t len;
    char *text = wiki_prefix(200000, &len);
    path_of(merges_path, sizeof merges_path, dir, "merges.txt");
    if (kf_tokenizer_load_hf(&file, dir, &err) != KF_OK) fail_msg("%s", err.msg);
    int n = kf_tokenizer_n_vocab(file), eos = kf_tokenizer_eos(file);
    assert_int_equal(eos, n - 1); // <|endoftext|>, after the pieces of the merges
    const char **pieces = malloc((size_t)n * sizeof(char *));
    for (int i = 0; i < n; i++) pieces[i] = kf_tokenizer_piece(file, i);
    size_t msize;
    char *mbuf = read_file(merges_path, &msize);
    const char **merges = malloc(60000 * sizeof(char *));
    int n_merges = 0;
    // skip the "#version" line; one "left right" merge per line after it
    for (size_t o = strcspn(mbuf, "\n") + 1; o < msize && n_merges < 60000;) {
        size_t k = strcspn(mbuf + o, "\n");
        mbuf[o + k] = '\0';
        merges[n_merges++] = mbuf + o;
        o += k + 1;
    }
    assert_int_equal(n_merges, n_want);
    // the merges the tokenizer exposes (for writers) are merges.txt, in order
    assert_int_equal(kf_tokenizer_n_merges(file), n_want);
    for (int i = 0; i < n_merges; i++) {
        int32_t l, r;
        char joined[512];
        assert_true(kf_tokenizer_merge(file, i, &l, &r));
        snprintf(joined, sizeof joined, "%s %s", kf_tokenizer_piece(file, l), kf_tokenizer_piece(file, r));
        if (strcmp(joined, merges[i]) != 0) fail_msg("merge %d: \"%s\", merges.txt has \"%s\"", i, joined, merges[i]);
    }
    int32_t l, r;
    assert_false(kf_tokenizer_merge(file, n_want, &l, &r));
    kf_tokenizer_spec bl = {.kind = KF_TOK_BYTELEVEL, .n_vocab = n, .pieces = pieces, .n_merges = n_merges,
                            .merges = merges, .bos_id = eos, .eos_id = eos, .unk_id = -1};
    if (kf_tokenizer_init(&mem, &bl, &err) != KF_OK) fail_msg("%s", err.msg);
    assert_same_ids(file, mem, text, len);
    assert_int_equal(kf_tokenizer_eos(mem), eos);
    kf_tokenizer_free(mem);
    merges[7] = "nosuchpiece t";
    assert_int_equal(kf_tokenizer_init(&mem, &bl, &err), KF_ERR_FORMAT);
    assert_one_line(&err, "merge 7");
    merges[7] = "nospace";
    assert_int_equal(kf_tokenizer_init(&mem, &bl, &err), KF_ERR_FORMAT);
    free(merges);
    free(mbuf);
    free(pieces);
    kf_tokenizer_free(file);
    free(text);
}


static void test_init_from_spec(void **state) {
    (void)state;
    char path[2048];
    kf_tokenizer *file, *mem;
    kf_error err = {0};
    size_t len;
    char *text = wiki_prefix(200000, &len);

    // SPM: pieces + scores + types of the llama2.c tokenizer
    path_of(path, sizeof path, g_llama, "tokenizer.bin");
    if (kf_tokenizer_load_llama2c(&file, path, 4096, &err) != KF_OK) fail_msg("%s", err.msg);
    int n = kf_tokenizer_n_vocab(file);
    const char **pieces = malloc((size_t)n * sizeof(char *));
    float *scores = malloc((size_t)n * sizeof(float));
    int32_t *types = malloc((size_t)n * sizeof(int32_t));
    for (int i = 0; i < n; i++) {
        pieces[i] = kf_tokenizer_piece(file, i);
        scores[i] = kf_tokenizer_score(file, i);
        types[i] = (int32_t)kf_tokenizer_piece_type(file, i);
    }
    assert_int_equal(types[0], KF_PIECE_UNKNOWN);
    assert_int_equal(types[1], KF_PIECE_CONTROL);
    assert_int_equal(types[3], KF_PIECE_BYTE);
    assert_int_equal(kf_tokenizer_n_merges(file), 0); // merged by score
    kf_tokenizer_spec spec = {.kind = KF_TOK_SPM, .n_vocab = n, .pieces = pieces, .scores = scores, .types = types,
                              .bos_id = 1, .eos_id = 2, .unk_id = 0, .add_bos = true};
    if (kf_tokenizer_init(&mem, &spec, &err) != KF_OK) fail_msg("%s", err.msg);
    assert_same_ids(file, mem, text, len);
    assert_int_equal(kf_tokenizer_bos(mem), 1);
    kf_tokenizer_free(mem);
    spec.scores = NULL;
    assert_int_equal(kf_tokenizer_init(&mem, &spec, &err), KF_ERR_ARG);
    assert_null(mem);
    free(pieces);
    free(scores);
    free(types);
    kf_tokenizer_free(file);

    free(text);
    check_bytelevel_spec(g_gpt2_small, 1000);
    char dir[2048];
    path_of(dir, sizeof dir, g_shared, "models/gpt2-tokenizer");
    if (kf_test_have(dir)) check_bytelevel_spec(dir, 50000);
}

// A SentencePiece vocabulary without "▁" but with the byte pieces of its
// UTF-8 (E2 96 81) encodes every space, and the dummy prefix, as three ids:
// more ids than bytes. Issue 11 item 1: the id buffer was sized for one id
// per byte and overflowed (caught by ASan; the ids below catch a short count).
static void test_spm_space_as_bytes(void **state) {
    (void)state;
    const char *pieces[] = {"<unk>", "<s>", "</s>", "<0xE2>", "<0x96>", "<0x81>", "a"};
    float scores[] = {0, 0, 0, 0, 0, 0, -1};
    int32_t types[] = {KF_PIECE_UNKNOWN, KF_PIECE_CONTROL, KF_PIECE_CONTROL, KF_PIECE_BYTE,
                       KF_PIECE_BYTE,    KF_PIECE_BYTE,    KF_PIECE_NORMAL};
    kf_tokenizer_spec spec = {.kind = KF_TOK_SPM, .n_vocab = 7, .pieces = pieces, .scores = scores, .types = types,
                              .bos_id = 1, .eos_id = 2, .unk_id = 0, .add_bos = true};
    kf_tokenizer *tok;
    kf_error err = {0};
    if (kf_tokenizer_init(&tok, &spec, &err) != KF_OK) fail_msg("%s", err.msg);
    // "a a a" plus 40 spaces: BOS, prefix, then per space three byte ids
    char text[64] = "a a a";
    size_t len = strlen(text);
    memset(text + len, ' ', 40);
    len += 40;
    size_t n;
    int32_t *ids = encode(tok, text, len, true, &n);
    size_t n_space = 2 + 40;
    assert_int_equal(n, 1 + 3 + 3 + 3 * n_space);
    assert_int_equal(ids[0], 1);
    size_t k = 1, n_a = 0;
    for (size_t i = 0; i <= len; i++) { // i == 0: the dummy prefix, then text[i - 1]
        if (i == 0 || text[i - 1] == ' ') {
            assert_int_equal(ids[k], 3);
            assert_int_equal(ids[k + 1], 4);
            assert_int_equal(ids[k + 2], 5);
            k += 3;
        } else {
            assert_int_equal(ids[k++], 6);
            n_a++;
        }
    }
    assert_int_equal(k, n);
    assert_int_equal(n_a, 3);
    free(ids);
    kf_tokenizer_free(tok);
}

// ---------------------------------------------------------------- decoding

// Concatenating decode_piece over a sequence that starts with BOS gives the
// text, as decode does (which skips BOS).
static void check_streaming(const kf_tokenizer *tok, const char *text) {
    size_t n;
    int32_t *ids = encode(tok, text, strlen(text), true, &n);
    char out[4096] = "", piece[256];
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        size_t k = kf_tokenizer_decode_piece(tok, i ? ids[i - 1] : -1, ids[i], piece, sizeof piece);
        assert_int_equal(k, strlen(piece));
        assert_true(o + k < sizeof out);
        memcpy(out + o, piece, k);
        o += k;
    }
    out[o] = '\0';
    assert_string_equal(out, text);
    char *dec;
    kf_error err = {0};
    assert_int_equal(kf_tokenizer_decode(tok, ids, n, &dec, &err), KF_OK);
    assert_string_equal(dec, text);
    free(dec);
    // a short buffer is cut, still NUL-terminated
    assert_int_equal(kf_tokenizer_decode_piece(tok, -1, ids[n - 1], piece, 1), 0);
    assert_int_equal(piece[0], '\0');
    free(ids);
}

static void test_decode_piece(void **state) {
    (void)state;
    kf_tokenizer *tok;
    kf_error err = {0};
    if (kf_tokenizer_load_hf(&tok, g_llama, &err) != KF_OK) fail_msg("%s", err.msg);
    check_streaming(tok, "Hello world, caf\xC3\xA9 \xF0\x9F\x98\x80 <s> end");
    kf_tokenizer_free(tok);
    char dir[2048];
    path_of(dir, sizeof dir, g_shared, "models/gpt2-tokenizer");
    const char *bytelevel[] = {g_gpt2_small, kf_test_have(dir) ? dir : NULL};
    for (int i = 0; i < 2 && bytelevel[i]; i++) {
        if (kf_tokenizer_load_hf(&tok, bytelevel[i], &err) != KF_OK) fail_msg("%s", err.msg);
        check_streaming(tok, " Hello world, caf\xC3\xA9 \xF0\x9F\x98\x80 <|endoftext|>\n\n end");
        kf_tokenizer_free(tok);
    }
}

int main(void) {
    const char *root = getenv("KF_ROOT"), *build = getenv("KF_BUILD");
    snprintf(g_root, sizeof g_root, "%s", root ? root : ".");
    snprintf(g_build, sizeof g_build, "%s", build ? build : "/tmp");
    snprintf(g_llama, sizeof g_llama, "%s/models/llama-gutenberg-1.4m", g_root);
    snprintf(g_shared, sizeof g_shared, "%s/../shared", g_root);
    snprintf(g_gpt2_small, sizeof g_gpt2_small, "%s/tests/fixtures/tokenizer/gpt2-small", g_root);
    snprintf(g_tmp, sizeof g_tmp, "%s/test_tokenizer_tmp", g_build);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_missing_and_malformed_json),
        cmocka_unit_test(test_truncated_tokenizer_json),
        cmocka_unit_test(test_truncated_tokenizer_bin),
        cmocka_unit_test(test_folder_tokenizer_bin),
        cmocka_unit_test(test_invalid_utf8_and_ids),
        cmocka_unit_test(test_load_for_model),
        cmocka_unit_test(test_config_files),
        cmocka_unit_test(test_metaspace_form),
        cmocka_unit_test(test_init_from_spec),
        cmocka_unit_test(test_spm_space_as_bytes),
        cmocka_unit_test(test_decode_piece),
    };
    return kf_test_status(cmocka_run_group_tests(tests, NULL, NULL));
}
