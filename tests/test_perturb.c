// task/perturb: seeded typos. The same seed gives the same bytes and another
// seed other bytes; rate 0 leaves the text as it is; the share of edited
// code points is the rate asked for (4 binomial standard errors) at 2%, 10%
// and 50%, each of drop / insert / substitute is drawn about a quarter of
// the time; text with 2-, 3- and 4-byte code points stays valid UTF-8 and its
// code-point count moves by inserts minus drops exactly; whitespace is never
// edited; invalid UTF-8 in and a bad spec are refused.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "task/perturb.h"
#include "task/utf8.h"
#include "test_util.h"

// A long text of words with multi-byte letters: "naïve 東京 😀x word ..."
static char *make_text(size_t *len) {
    static const char *words[] = {"naïve", "東京", "\xF0\x9F\x98\x80x", "word", "Quick", "fox", "ÀÉÎ"};
    size_t cap = 1 << 21, n = 0;
    char *t = malloc(cap);
    kf_rng r;
    kf_rng_seed(&r, 5);
    while (n + 32 < cap) {
        const char *w = words[kf_rng_below(&r, 7)];
        size_t k = strlen(w);
        memcpy(t + n, w, k);
        n += k;
        t[n++] = kf_rng_below(&r, 9) == 0 ? '\n' : ' ';
    }
    t[n] = '\0';
    *len = n;
    return t;
}

static int64_t count_cp(const char *s, size_t len, int64_t *ws) {
    size_t i = 0;
    int64_t n = 0;
    uint32_t cp;
    *ws = 0;
    while (i < len) {
        assert_true(kf_utf8_next(s, len, &i, &cp));
        n++;
        *ws += cp == ' ' || cp == '\n';
    }
    return n;
}

static void test_reproducible(void **state) {
    (void)state;
    size_t len, la, lb, lc;
    char *t = make_text(&len), *a, *b, *c;
    kf_perturb_opts o = {.rate = 0.1, .seed = 3};
    kf_perturb_stats st;
    kf_error err = {0};
    assert_int_equal(kf_perturb_typo(t, len, &o, &a, &la, &st, &err), KF_OK);
    assert_int_equal(kf_perturb_typo(t, len, &o, &b, &lb, &st, &err), KF_OK);
    o.seed = 4;
    assert_int_equal(kf_perturb_typo(t, len, &o, &c, &lc, &st, &err), KF_OK);
    assert_true(la == lb && memcmp(a, b, la) == 0);
    assert_true(la != lc || memcmp(a, c, la) != 0);
    free(a), free(b), free(c);
    o.rate = 0;
    assert_int_equal(kf_perturb_typo(t, len, &o, &a, &la, &st, &err), KF_OK);
    assert_true(la == len && memcmp(a, t, len) == 0);
    assert_true(st.n_swap + st.n_drop + st.n_insert + st.n_sub == 0);
    free(a);
    free(t);
}

static void test_rate_and_utf8(void **state) {
    (void)state;
    size_t len, lo;
    char *t = make_text(&len), *y;
    int64_t ws_in, ws_out, cp_in = count_cp(t, len, &ws_in);
    const double rates[] = {0.02, 0.1, 0.5};
    for (int k = 0; k < 3; k++) {
        kf_perturb_opts o = {.rate = rates[k], .seed = 11};
        kf_perturb_stats st;
        kf_error err = {0};
        assert_int_equal(kf_perturb_typo(t, len, &o, &y, &lo, &st, &err), KF_OK);
        assert_int_equal(kf_utf8_check(y, lo), lo);
        assert_int_equal(strlen(y), lo);
        int64_t cp_out = count_cp(y, lo, &ws_out);
        assert_true(cp_out == cp_in - st.n_drop + st.n_insert);
        assert_true(ws_out == ws_in);
        assert_true(st.n_eligible == cp_in - ws_in);
        const int64_t edits = st.n_swap + st.n_drop + st.n_insert + st.n_sub;
        const double n = (double)st.n_considered, p = rates[k], share = edits / n;
        print_message("rate %.2f: %lld edits of %.0f drawn (%.4f); swap %lld drop %lld insert %lld sub %lld\n", p,
                      (long long)edits, n, share, (long long)st.n_swap, (long long)st.n_drop, (long long)st.n_insert,
                      (long long)st.n_sub);
        assert_true(fabs(share - p) <= 4 * sqrt(p * (1 - p) / n));
        // a swap needs an eligible neighbour; the other three take its share when there is none
        const int64_t kinds[3] = {st.n_drop, st.n_insert, st.n_sub};
        for (int j = 0; j < 3; j++) assert_true(kinds[j] > 0.22 * edits && kinds[j] < 0.36 * edits);
        assert_true(st.n_swap > 0.1 * edits && st.n_swap < 0.26 * edits);
        free(y);
    }
    free(t);
}

static void test_bad(void **state) {
    (void)state;
    kf_perturb_opts o;
    kf_error err = {0};
    assert_int_equal(kf_perturb_parse("typo:0.05,seed:7", &o, &err), KF_OK);
    assert_true(o.rate == 0.05 && o.seed == 7);
    assert_int_equal(kf_perturb_parse("typo:0.2", &o, &err), KF_OK);
    assert_true(o.rate == 0.2 && o.seed == 0);
    const char *bad[] = {"typo:1.5", "typo:", "noise:0.1", "typo:0.1,seed:x", "typo:0.1,seed:-1", "typo:0.1;", "typo:0.1,sed:1"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_equal(kf_perturb_parse(bad[i], &o, &err), KF_ERR_ARG);
        assert_non_null(strstr(err.msg, "--perturb"));
    }
    char *y;
    size_t ly;
    kf_perturb_stats st;
    o = (kf_perturb_opts){.rate = 0.1};
    assert_int_equal(kf_perturb_typo("ab\xE6\x9D", 4, &o, &y, &ly, &st, &err), KF_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "byte offset 2"));
    assert_null(y);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reproducible),
        cmocka_unit_test(test_rate_and_utf8),
        cmocka_unit_test(test_bad),
    };
    return kf_test_status(cmocka_run_group_tests(tests, NULL, NULL));
}
