// BLiMP minimal pairs (task/blimp) and sentence scoring (eval/zeroshot):
// the fixture folder reads as its 5 paradigms and 27 pairs, with the cap per
// paradigm honoured; bad JSONL is one error naming the file and line; the
// tally counts a tie as wrong; the batched, padded scoring equals the one-
// sentence-per-call reference on a Llama and a GPT-2 fixture (and with it
// the ids BOS-first). Parity with the PyTorch reference is test_blimp_ref.sh.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "eval/zeroshot.h"
#include "io/load.h"
#include "task/blimp.h"
#include "test_util.h"

static void fixture_path(char *out, size_t n, const char *rel) { snprintf(out, n, "%s/%s", kf_test_root(), rel); }

static void test_read_fixture(void **state) {
    (void)state;
    char dir[1024];
    fixture_path(dir, sizeof dir, "tests/fixtures/blimp");
    kf_blimp_set s;
    kf_error err = {0};
    assert_int_equal(kf_blimp_load(&s, dir, 0, &err), KF_OK);
    assert_int_equal(s.n_pairs, 27);
    assert_int_equal(s.n_paradigms, 5);
    assert_int_equal(s.n_files, 5);
    // files in name order: adjunct_island first, principle_A_case_2 last
    assert_string_equal(s.paradigms[0].uid, "adjunct_island");
    assert_string_equal(s.fields[s.paradigms[0].field], "syntax");
    assert_string_equal(s.paradigms[0].term, "island_effects");
    assert_int_equal(s.paradigms[0].n_pairs, 7);
    assert_string_equal(s.paradigms[4].uid, "principle_A_case_2");
    assert_string_equal(s.fields[s.paradigms[4].field], "syntax/semantics");
    assert_int_equal(s.pairs[0].line, 1);
    assert_string_equal(s.pairs[0].good, "Who should Derek hug after shocking Richard?");
    assert_string_equal(s.pairs[0].bad, "Who should Derek hug Richard after shocking?");
    assert_int_equal(s.n_fields, 4); // syntax, morphology, semantics, syntax/semantics
    kf_blimp_free(&s);
    assert_int_equal(kf_blimp_load(&s, dir, 2, &err), KF_OK);
    assert_int_equal(s.n_pairs, 10);
    for (int p = 0; p < s.n_paradigms; p++) assert_int_equal(s.paradigms[p].n_pairs, 2);
    kf_blimp_free(&s);
}

// Writes text to a temporary .jsonl and expects the load to fail with a
// message holding "PATH:want".
static void expect_bad(const char *text, const char *want) {
    char path[] = "/tmp/kf_blimp_XXXXXX.jsonl";
    int fd = mkstemps(path, 6);
    assert_true(fd >= 0);
    close(fd);
    write_bytes(path, text, strlen(text));
    kf_blimp_set s;
    kf_error err = {0};
    char msg[1200];
    snprintf(msg, sizeof msg, "%s:%s", path, want);
    assert_int_not_equal(kf_blimp_load(&s, path, 0, &err), KF_OK);
    if (!strstr(err.msg, msg)) fail_msg("message '%s' lacks '%s'", err.msg, msg);
    assert_true(strchr(err.msg, '\n') == NULL);
    assert_true(s.n_pairs == 0 && s.pairs == NULL && s.n_paradigms == 0);
    unlink(path);
}

#define GOOD_LINE "{\"sentence_good\": \"A cat runs.\", \"sentence_bad\": \"A cat run.\", \"field\": \"morphology\", " \
                  "\"linguistics_term\": \"agreement\", \"UID\": \"sv\"}\n"

static void test_bad_input(void **state) {
    (void)state;
    expect_bad(GOOD_LINE "{\"sentence_good\": \"x\",\n", "2: not a JSON object");
    expect_bad(GOOD_LINE "[1, 2]\n", "2: not a JSON object");
    expect_bad(GOOD_LINE "\n" GOOD_LINE "{\"sentence_good\": \"A b.\", \"field\": \"f\", \"linguistics_term\": \"t\", \"UID\": \"u\"}\n",
               "4: no string \"sentence_bad\"");
    expect_bad("{\"sentence_good\": \"A b.\", \"sentence_bad\": 3, \"field\": \"f\", \"linguistics_term\": \"t\", \"UID\": \"u\"}\n",
               "1: no string \"sentence_bad\"");
    expect_bad(GOOD_LINE "{\"sentence_good\": \"\", \"sentence_bad\": \"x\", \"field\": \"f\", \"linguistics_term\": \"t\", \"UID\": \"u\"}\n",
               "2: \"sentence_good\" is empty");
    expect_bad("{\"sentence_good\": \"caf\xC3\", \"sentence_bad\": \"x\", \"field\": \"f\", \"linguistics_term\": \"t\", \"UID\": \"u\"}\n",
               "1: \"sentence_good\" is not valid UTF-8 (byte 3)");
    expect_bad(GOOD_LINE "{\"sentence_good\": \"A b.\", \"sentence_bad\": \"B a.\", \"field\": \"syntax\", "
                         "\"linguistics_term\": \"agreement\", \"UID\": \"sv\"}\n",
               "2: UID 'sv' has field 'syntax'");
    expect_bad("\n\n", " no minimal pairs");
    expect_bad("", " no minimal pairs");
}

static void test_tally(void **state) {
    (void)state;
    char dir[1024];
    fixture_path(dir, sizeof dir, "tests/fixtures/blimp");
    kf_blimp_set s;
    kf_blimp_tally t;
    kf_error err = {0};
    assert_int_equal(kf_blimp_load(&s, dir, 0, &err), KF_OK);
    assert_int_equal(kf_blimp_tally_init(&t, &s, &err), KF_OK);
    double *lp = malloc(sizeof *lp * (size_t)(2 * s.n_pairs));
    // pair i: good wins when i % 3 == 0, ties when i % 3 == 1 (a tie is wrong), loses otherwise
    int want = 0, want_p[8] = {0};
    for (int i = 0; i < s.n_pairs; i++) {
        lp[2 * i] = -10.0 - (i % 3);
        lp[2 * i + 1] = -11.0;
        if (i % 3 == 1) lp[2 * i + 1] = lp[2 * i];
        if (i % 3 == 2) lp[2 * i + 1] = -9.0;
        want += i % 3 == 0;
        want_p[s.pairs[i].paradigm] += i % 3 == 0;
    }
    kf_blimp_count(&t, &s, lp);
    assert_int_equal(t.correct, want);
    assert_int_equal(t.n_pairs, 27);
    int sum_f = 0, sum_n = 0;
    for (int f = 0; f < s.n_fields; f++) sum_f += t.field_correct[f], sum_n += t.field_pairs[f];
    assert_int_equal(sum_f, want);
    assert_int_equal(sum_n, 27);
    for (int p = 0; p < s.n_paradigms; p++) assert_int_equal(t.paradigm_correct[p], want_p[p]);
    free(lp);
    kf_blimp_tally_free(&t);
    kf_blimp_free(&s);
}

// Batched scoring against one sentence per call, on random sentences of
// 1..40 tokens with BOS first, at a row budget that forces many batches.
static void check_batched(const char *rel) {
    char path[1024];
    fixture_path(path, sizeof path, rel);
    kf_model *m = NULL;
    kf_error err = {0};
    if (kf_model_load(&m, path, &err) != KF_OK) fail_msg("%s", err.msg);
    enum { N = 37 };
    int64_t off[N + 1] = {0};
    int32_t ids[N * 40];
    kf_rng r;
    kf_rng_seed(&r, 7);
    for (int s = 0; s < N; s++) {
        int len = 1 + kf_rng_below(&r, 40);
        ids[off[s]] = 1;
        kf_test_random_ids(ids + off[s] + 1, len - 1, 3, m->n_vocab, 100 + (uint64_t)s);
        off[s + 1] = off[s] + len;
    }
    double a[N], b[N], c[N];
    assert_int_equal(kf_eval_sentence_logprobs_ref(m, ids, off, N, a, &err), KF_OK);
    assert_int_equal(kf_eval_sentence_logprobs(m, ids, off, N, 128, b, NULL, NULL, &err), KF_OK);
    assert_int_equal(kf_eval_sentence_logprobs(m, ids, off, N, 1, c, NULL, NULL, &err), KF_OK); // one per call
    double worst = 0;
    for (int s = 0; s < N; s++) {
        double d = fabs(a[s] - b[s]);
        worst = d > worst ? d : worst;
        if (off[s + 1] - off[s] == 1) assert_true(a[s] == 0 && b[s] == 0);
        else assert_true(a[s] < 0);
        assert_true(fabs(a[s] - c[s]) <= 1e-4);
    }
    print_message("%s: batched vs one per call, max |diff| %.2e\n", rel, worst);
    assert_true(worst <= 1e-4);
    kf_model_free(m);
}

static void test_batched_vs_reference(void **state) {
    (void)state;
    check_batched("tests/fixtures/models/llama-gqa-bf16");
    check_batched("tests/fixtures/models/gpt2-tiny");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_read_fixture),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_tally),
        cmocka_unit_test(test_batched_vs_reference),
    };
    return kf_test_status(cmocka_run_group_tests(tests, NULL, NULL));
}
