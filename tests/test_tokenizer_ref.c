// Token ids against independent references, computed at test time by
// tests/ref/tokenize_ref.py with /usr/bin/python3:
// - SentencePiece (python3-sentencepiece, the tokenizer.model beside each
//   tokenizer) for the llama-gutenberg tokenizer.json and tokenizer.bin and the
//   32k Llama 2 tokenizer.bin;
// - a Python GPT-2 BPE (python3-regex + vocab.json/merges.txt) for GPT-2's
//   tokenizer.json and for the shipped cut of it (tests/fixtures/tokenizer/gpt2-small).
// WikiText-2 test is encoded as ONE text, exactly as stored (no line
// splitting): the models' normalizer is the identity with a dummy prefix and
// no whitespace folding, so SentencePiece's own encode of the whole file is
// the honest reference. Every id must match; decode(encode(x)) must give x back
// byte for byte; and the whole file must encode in well under a second.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "core/file.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

static char g_root[1024], g_shared[2048], g_wiki[2048], g_tricky[2048], g_llama_dir[2048];

static void path_of(char *out, size_t n, const char *dir, const char *name) {
    if ((size_t)snprintf(out, n, "%s/%s", dir, name) >= n) fail_msg("path too long: %s/%s", dir, name);
}

// CPU time of this thread: the machine is shared, so wall time would measure the neighbours.
static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

// Runs the Python reference; returns its stdout (malloc'd).
static char *run_ref(const char *kind, const char *model, const char *text, bool cases) {
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 '%s/tests/ref/tokenize_ref.py' %s '%s' '%s'%s", g_root, kind, model,
             text, cases ? " --cases" : "");
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t cap = 1 << 20, n = 0;
    char *buf = malloc(cap);
    assert_non_null(buf);
    size_t got;
    while ((got = fread(buf + n, 1, cap - n - 1, p)) > 0) {
        n += got;
        if (cap - n - 1 == 0) {
            cap *= 2;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
    }
    buf[n] = '\0';
    int rc = pclose(p);
    if (rc != 0) fail_msg("reference failed (exit %d): %s", rc, cmd);
    return buf;
}

// Parses one line of space-separated ids; returns the count. *line advances
// past the newline.
static size_t parse_ids(char **line, int32_t **ids) {
    char *s = *line, *end = strchr(s, '\n');
    assert_non_null(end);
    size_t cap = 16, n = 0;
    *ids = malloc(cap * sizeof(int32_t));
    while (s < end) {
        char *e;
        long v = strtol(s, &e, 10);
        if (e == s) break;
        if (n == cap) *ids = realloc(*ids, (cap *= 2) * sizeof(int32_t));
        (*ids)[n++] = (int32_t)v;
        s = e;
    }
    *line = end + 1;
    return n;
}

static void compare_ids(const char *what, const int32_t *got, size_t n_got, const int32_t *want, size_t n_want) {
    size_t n = n_got < n_want ? n_got : n_want, i = 0;
    while (i < n && got[i] == want[i]) i++;
    if (i == n && n_got == n_want) return;
    fail_msg("%s: ids differ at index %zu of %zu/%zu (C %d, reference %d)", what, i, n_got, n_want,
             i < n_got ? got[i] : -1, i < n_want ? want[i] : -1);
}

// Encodes the whole WikiText-2 test file; compares with the reference line,
// checks the round trip and the time.
static void check_wiki(const kf_tokenizer *tok, const char *ref_line, const char *what) {
    char *text;
    size_t len;
    kf_error err = {0};
    assert_int_equal(kf_file_read_all(g_wiki, &text, &len, &err), KF_OK);
    int32_t *ids, *want;
    size_t n;
    double t0 = now_s();
    kf_status st = kf_tokenizer_encode(tok, text, len, false, &ids, &n, &err);
    double dt = now_s() - t0;
    if (st != KF_OK) fail_msg("%s: %s", what, err.msg);
    char *line = (char *)ref_line;
    size_t n_want = parse_ids(&line, &want);
    compare_ids(what, ids, n, want, n_want);
    char *back;
    assert_int_equal(kf_tokenizer_decode(tok, ids, n, &back, &err), KF_OK);
    if (strlen(back) != len || memcmp(back, text, len) != 0) fail_msg("%s: decode(encode(wiki)) != wiki", what);
    printf("%s: %zu bytes -> %zu ids, all equal to the reference; encode %.3f s CPU\n", what, len, n, dt);
#if !defined(__SANITIZE_ADDRESS__)
    if (dt > 0.5) fail_msg("%s: encoding %zu bytes took %.3f s CPU (limit 0.5 s)", what, len, dt);
#endif
    free(back);
    free(want);
    free(ids);
    free(text);
}

// Encodes each case of the tricky fixture; each reference line is the ids or
// "ERROR <offset>" for invalid UTF-8, which the C side must report likewise.
static void check_cases(const kf_tokenizer *tok, const char *ref, const char *what) {
    char *raw;
    size_t len;
    kf_error err = {0};
    assert_int_equal(kf_file_read_all(g_tricky, &raw, &len, &err), KF_OK);
    char *line = (char *)ref;
    int n_cases = 0, n_errors = 0;
    for (char *s = raw; s < raw + len;) {
        char *eol = memchr(s, '\n', (size_t)(raw + len - s));
        if (!eol) eol = raw + len;
        if (eol == s) {
            s++;
            continue;
        }
        // unescape \n \t \r \\ \xHH as the reference does
        char buf[4096];
        size_t n = 0;
        for (char *c = s; c < eol; c++) {
            if (*c == '\\' && c + 1 < eol) {
                char e = *++c;
                if (e == 'x') {
                    char hex[3] = {c[1], c[2], 0};
                    buf[n++] = (char)strtol(hex, NULL, 16);
                    c += 2;
                } else {
                    buf[n++] = e == 'n' ? '\n' : e == 't' ? '\t' : e == 'r' ? '\r' : '\\';
                }
            } else {
                buf[n++] = *c;
            }
            assert_true(n < sizeof buf);
        }
        s = eol + 1;
        n_cases++;
        int32_t *ids;
        size_t n_ids;
        kf_status st = kf_tokenizer_encode(tok, buf, n, false, &ids, &n_ids, &err);
        if (strncmp(line, "ERROR ", 6) == 0) {
            long off = strtol(line + 6, NULL, 10);
            char want[64];
            snprintf(want, sizeof want, "byte offset %ld", off);
            if (st != KF_ERR_FORMAT || !strstr(err.msg, want))
                fail_msg("%s case %d: expected invalid UTF-8 at %ld, got status %d (%s)", what, n_cases, off, st,
                         err.msg);
            line = strchr(line, '\n') + 1;
            n_errors++;
            continue;
        }
        if (st != KF_OK) fail_msg("%s case %d: %s", what, n_cases, err.msg);
        int32_t *want;
        size_t n_want = parse_ids(&line, &want);
        char label[128];
        snprintf(label, sizeof label, "%s case %d", what, n_cases);
        compare_ids(label, ids, n_ids, want, n_want);
        char *back;
        assert_int_equal(kf_tokenizer_decode(tok, ids, n_ids, &back, &err), KF_OK);
        if (strlen(back) != n || memcmp(back, buf, n) != 0) fail_msg("%s: decode(encode(x)) != x", label);
        free(back);
        free(want);
        free(ids);
    }
    printf("%s: %d tricky cases equal to the reference (%d invalid UTF-8)\n", what, n_cases, n_errors);
    assert_true(n_cases >= 20 && n_errors >= 3);
    free(raw);
}

static void test_spm_llama_gutenberg(void **state) {
    (void)state;
    char model[4096];
    path_of(model, sizeof model, g_llama_dir, "tokenizer.model");
    char *wiki_ref = run_ref("spm", model, g_wiki, false);
    char *cases_ref = run_ref("spm", model, g_tricky, true);
    kf_tokenizer *tok;
    kf_error err = {0};
    // tokenizer.json: merges by rank, Prepend/Replace normalizer
    if (kf_tokenizer_load_hf(&tok, g_llama_dir, &err) != KF_OK) fail_msg("%s", err.msg);
    assert_int_equal(kf_tokenizer_kind(tok), KF_TOK_SPM);
    assert_int_equal(kf_tokenizer_n_vocab(tok), 4096);
    check_wiki(tok, wiki_ref, "llama-gutenberg tokenizer.json");
    check_cases(tok, cases_ref, "llama-gutenberg tokenizer.json");
    kf_tokenizer_free(tok);
    // tokenizer.bin: merges by score
    char bin[4096];
    path_of(bin, sizeof bin, g_llama_dir, "tokenizer.bin");
    if (kf_tokenizer_load_llama2c(&tok, bin, 4096, &err) != KF_OK) fail_msg("%s", err.msg);
    check_wiki(tok, wiki_ref, "llama-gutenberg tokenizer.bin");
    check_cases(tok, cases_ref, "llama-gutenberg tokenizer.bin");
    kf_tokenizer_free(tok);
    free(wiki_ref);
    free(cases_ref);
}

static void test_spm_llama2_32k(void **state) {
    (void)state;
    char dir[4096], model[4096], bin[4096];
    path_of(dir, sizeof dir, g_shared, "models/llama2c-tokenizer-32k");
    path_of(model, sizeof model, dir, "tokenizer.model");
    path_of(bin, sizeof bin, dir, "tokenizer.bin");
    if (!kf_test_have(bin)) return;
    char *wiki_ref = run_ref("spm", model, g_wiki, false);
    char *cases_ref = run_ref("spm", model, g_tricky, true);
    kf_tokenizer *tok;
    kf_error err = {0};
    if (kf_tokenizer_load_llama2c(&tok, bin, 32000, &err) != KF_OK) fail_msg("%s", err.msg);
    assert_int_equal(kf_tokenizer_bos(tok), 1);
    assert_int_equal(kf_tokenizer_eos(tok), 2);
    check_wiki(tok, wiki_ref, "llama2 32k tokenizer.bin");
    check_cases(tok, cases_ref, "llama2 32k tokenizer.bin");
    kf_tokenizer_free(tok);
    free(wiki_ref);
    free(cases_ref);
}

// A GPT-2 folder (tokenizer.json, vocab.json, merges.txt) of n_vocab pieces.
static void check_gpt2(const char *dir, int n_vocab) {
    char json[4096];
    path_of(json, sizeof json, dir, "tokenizer.json");
    char *wiki_ref = run_ref("gpt2", dir, g_wiki, false);
    char *cases_ref = run_ref("gpt2", dir, g_tricky, true);
    kf_tokenizer *tok;
    kf_error err = {0};
    if (kf_tokenizer_load_hf(&tok, json, &err) != KF_OK) fail_msg("%s", err.msg);
    assert_int_equal(kf_tokenizer_kind(tok), KF_TOK_BYTELEVEL);
    assert_int_equal(kf_tokenizer_n_vocab(tok), n_vocab);
    assert_int_equal(kf_tokenizer_eos(tok), n_vocab - 1);
    assert_false(kf_tokenizer_add_bos(tok));
    check_wiki(tok, wiki_ref, json);
    check_cases(tok, cases_ref, json);
    kf_tokenizer_free(tok);
    free(wiki_ref);
    free(cases_ref);
}

// The shipped cut of GPT-2 (1000 merges, tests/fixtures/tokenizer/gpt2-small)
// always; GPT-2's full tokenizer when the shared folder is there.
static void test_gpt2(void **state) {
    (void)state;
    char dir[4096];
    path_of(dir, sizeof dir, g_root, "tests/fixtures/tokenizer/gpt2-small");
    check_gpt2(dir, 1257);
    path_of(dir, sizeof dir, g_shared, "models/gpt2-tokenizer");
    if (kf_test_have(dir)) check_gpt2(dir, 50257);
}

int main(void) {
    const char *root = getenv("KF_ROOT");
    snprintf(g_root, sizeof g_root, "%s", root ? root : ".");
    path_of(g_shared, sizeof g_shared, g_root, "../shared");
    path_of(g_wiki, sizeof g_wiki, g_root, "data/wikitext-2-raw/wiki.test.raw");
    path_of(g_tricky, sizeof g_tricky, g_root, "tests/fixtures/tokenizer/tricky.txt");
    path_of(g_llama_dir, sizeof g_llama_dir, g_root, "models/llama-gutenberg-1.4m");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spm_llama_gutenberg),
        cmocka_unit_test(test_spm_llama2_32k),
        cmocka_unit_test(test_gpt2),
    };
    return kf_test_status(cmocka_run_group_tests(tests, NULL, NULL));
}
