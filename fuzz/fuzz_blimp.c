// BLiMP JSONL (task/blimp): the input is one .jsonl file. What loads must
// hold non-empty, valid UTF-8 sentences in paradigms that count them right,
// and tokenize with the tiny tokenizer, BOS first; every sentence put through
// the typo perturbation at rate 0.5 must stay valid UTF-8.
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "task/blimp.h"
#include "task/perturb.h"
#include "task/utf8.h"

static kf_tokenizer *g_tok;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    g_tok = kf_fuzz_tiny_tokenizer();
    return 0;
}

static void check_sentence(const char *s) {
    size_t n = strlen(s), m;
    if (n == 0 || kf_utf8_check(s, n) != n) kf_fuzz_fail("blimp", "a loaded sentence is empty or not UTF-8");
    kf_perturb_opts o = {.rate = 0.5, .seed = n};
    kf_perturb_stats st;
    kf_error err = {0};
    char *y;
    if (kf_perturb_typo(s, n, &o, &y, &m, &st, &err) != KF_OK) kf_fuzz_fail("perturb refused valid UTF-8", err.msg);
    if (kf_utf8_check(y, m) != m || strlen(y) != m) kf_fuzz_fail("perturb", "output is not valid UTF-8");
    free(y);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = kf_fuzz_write("pairs.jsonl", data, size);
    kf_blimp_set s;
    kf_error err = {0};
    if (kf_blimp_load(&s, path, 0, &err) == KF_OK) {
        int total = 0;
        for (int p = 0; p < s.n_paradigms; p++) total += s.paradigms[p].n_pairs;
        if (total != s.n_pairs || s.n_pairs < 1) kf_fuzz_fail("blimp", "paradigm counts do not add up to the pairs");
        for (int i = 0; i < s.n_pairs; i++) check_sentence(s.pairs[i].good), check_sentence(s.pairs[i].bad);
        int32_t *ids;
        int64_t *off;
        if (kf_blimp_tokenize(&s, g_tok, &ids, &off, &err) == KF_OK) {
            for (int i = 0; i < 2 * s.n_pairs; i++)
                if (off[i + 1] <= off[i] || ids[off[i]] != kf_tokenizer_bos(g_tok))
                    kf_fuzz_fail("blimp", "a tokenized sentence does not start with BOS");
            free(ids);
            free(off);
        } else {
            kf_fuzz_refused(&err);
        }
        kf_blimp_free(&s);
    } else {
        kf_fuzz_refused(&err);
    }
    kf_fuzz_clean();
    return 0;
}
