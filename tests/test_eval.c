// kf_eval_compare and kf_kl_logits: KL against a hand-computed value, a model
// compared with itself (KL 0, agreement 1, perplexity equal to
// kf_eval_perplexity on the same windows), a damaged copy (KL > 0, the mean
// KL recomputed independently), and a vocabulary mismatch; the
// reference-first comparison (kf_eval_ref_cache_make, kf_eval_compare_cached)
// equal to kf_eval_compare bit for bit.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "io/load.h"
#include "eval/compare.h"
#include "eval/perplexity.h"
#include "model/model.h"
#include "runtime/forward.h"
#include "test_util.h"

#define CTX 32
#define N_TOK (CTX * 6 + 5)

static kf_model *load_small(void) {
    char path[1024];
    const char *root = getenv("KF_ROOT");
    snprintf(path, sizeof path, "%s/models/llama-gutenberg-1.4m", root ? root : ".");
    kf_model *m = NULL;
    kf_error err = {0};
    if (kf_model_load(&m, path, &err) != KF_OK) fail_msg("%s", err.msg);
    return m;
}

static void make_tokens(int32_t *ids, int n, int V) {
    kf_test_random_ids(ids, n, 0, V, 3);
}

static void test_kl_hand(void **state) {
    // p = (1/4, 3/4), q = (1/2, 1/2): KL = 1/4 ln(1/2) + 3/4 ln(3/2).
    float p[2] = {5.0f, 5.0f + (float)log(3.0)}, q[2] = {-2.0f, -2.0f};
    double want = 0.25 * log(0.5) + 0.75 * log(1.5);
    assert_true(fabs(kf_kl_logits(p, q, 2) - want) < 1e-7);
    assert_true(kf_kl_logits(p, p, 2) == 0.0);
}

static void test_self_and_damaged(void **state) {
    kf_model *a = load_small(), *b = load_small();
    int32_t ids[N_TOK];
    make_tokens(ids, N_TOK, a->n_vocab);
    kf_error err = {0};
    kf_compare_result r;
    kf_ppl_result p;
    assert_int_equal(kf_eval_compare(a, b, ids, N_TOK, CTX, 1, &r, NULL, NULL, &err), KF_OK);
    assert_int_equal(kf_eval_perplexity(a, ids, N_TOK, CTX, 1, &p, NULL, NULL, &err), KF_OK);
    assert_int_equal(r.n_scored, 6 * (CTX - 1 - CTX / 2));
    assert_true(r.kl_mean == 0 && r.kl_p99 == 0 && r.top1 == 1.0);
    assert_true(fabs(r.model.ppl - p.ppl) <= 1e-9 * p.ppl);
    assert_true(r.model.ppl == r.ref.ppl);

    // Zero the last layer's FFN in b: KL > 0, and its mean equals an
    // independent recomputation from full logits.
    kf_tensor *wd = &b->layers[b->n_layer - 1].w_down;
    float *z = kf_model_alloc(b, kf_tensor_nelem(wd));
    assert_non_null(z);
    wd->data = z;
    assert_int_equal(kf_eval_compare(b, a, ids, N_TOK, CTX, 1, &r, NULL, NULL, &err), KF_OK);
    assert_true(r.kl_mean > 1e-4 && r.kl_p99 >= r.kl_mean && r.kl_max >= r.kl_p99 && r.top1 < 1.0);
    // Several models against one reference pass: each result equals the
    // single-model comparison (the undamaged copy compares as identical).
    const kf_model *both[2] = {b, a};
    kf_compare_result rm[2];
    assert_int_equal(kf_eval_compare_many(both, 2, a, ids, N_TOK, CTX, 1, rm, NULL, NULL, &err), KF_OK);
    assert_true(rm[0].kl_mean == r.kl_mean && rm[0].kl_p99 == r.kl_p99 && rm[0].kl_max == r.kl_max);
    assert_true(rm[0].top1 == r.top1 && rm[0].model.ppl == r.model.ppl && rm[0].ref.ppl == r.ref.ppl);
    assert_true(rm[0].n_scored == r.n_scored && rm[1].n_scored == r.n_scored);
    assert_true(rm[1].kl_mean == 0 && rm[1].top1 == 1.0 && rm[1].model.ppl == r.ref.ppl);
    // Recompute the first window's mean KL independently from full logits.
    kf_compare_result r1;
    assert_int_equal(kf_eval_compare(b, a, ids, CTX, CTX, 1, &r1, NULL, NULL, &err), KF_OK);
    const int V = a->n_vocab;
    kf_ctx *ca, *cb;
    assert_int_equal(kf_ctx_init(&ca, a, CTX, 0, &err), KF_OK);
    assert_int_equal(kf_ctx_init(&cb, b, CTX, 0, &err), KF_OK);
    float *la = malloc(sizeof *la * CTX * V), *lb = malloc(sizeof *lb * CTX * V);
    int32_t w[CTX];
    memcpy(w, ids, sizeof w);
    w[0] = 1;
    assert_int_equal(kf_forward_prefill(ca, w, 1, CTX, la, &err), KF_OK);
    assert_int_equal(kf_forward_prefill(cb, w, 1, CTX, lb, &err), KF_OK);
    double sum = 0;
    for (int j = CTX / 2; j < CTX - 1; j++) {
        const float *x = la + j * V, *y = lb + j * V;
        long double za = 0, zb = 0;
        for (int v = 0; v < V; v++) za += expl((long double)x[v]), zb += expl((long double)y[v]);
        for (int v = 0; v < V; v++) {
            long double lpa = x[v] - logl(za), lpb = y[v] - logl(zb);
            sum += (double)(expl(lpa) * (lpa - lpb));
        }
    }
    double want = sum / (CTX - 1 - CTX / 2);
    assert_true(fabs(r1.kl_mean - want) <= 1e-9 * want);
    free(la);
    free(lb);
    kf_ctx_free(ca);
    kf_ctx_free(cb);
    kf_error e2 = {0};
    b->n_vocab = a->n_vocab - 1; // only compared, never used for compute
    assert_int_equal(kf_eval_compare(b, a, ids, N_TOK, CTX, 1, &r, NULL, NULL, &e2), KF_ERR_ARG);
    assert_non_null(strstr(e2.msg, "vocabularies differ"));
    b->n_vocab = a->n_vocab;
    kf_model_free(a);
    kf_model_free(b);
}

// The reference's pass first, its logits cached on disk, then the model
// alone: every number equal to the comparison with both loaded.
static void test_ref_first(void **state) {
    kf_model *a = load_small(), *b = load_small();
    int32_t ids[N_TOK];
    make_tokens(ids, N_TOK, a->n_vocab);
    kf_tensor *wd = &b->layers[0].w_down;
    float *z = kf_model_alloc(b, kf_tensor_nelem(wd));
    assert_non_null(z);
    for (int64_t i = 0; i < kf_tensor_nelem(wd); i++) z[i] = 0.5f * wd->data[i];
    wd->data = z;
    kf_error err = {0};
    kf_compare_result want, got;
    assert_int_equal(kf_eval_compare(b, a, ids, N_TOK, CTX, 1, &want, NULL, NULL, &err), KF_OK);
    kf_eval_ref_cache c;
    assert_int_equal(kf_eval_ref_cache_make(a, ids, N_TOK, CTX, 1, &c, &err), KF_OK);
    kf_model_free(a); // the reference is not needed any more
    assert_int_equal(kf_eval_compare_cached(b, &c, ids, N_TOK, &got, NULL, NULL, &err), KF_OK);
    assert_true(want.kl_mean > 1e-6);
    assert_true(got.kl_mean == want.kl_mean && got.kl_p99 == want.kl_p99 && got.kl_max == want.kl_max);
    assert_true(got.top1 == want.top1 && got.n_scored == want.n_scored && got.ffn_share == want.ffn_share);
    assert_true(got.model.ppl == want.model.ppl && got.model.ppl_se == want.model.ppl_se);
    assert_true(got.ref.ppl == want.ref.ppl && got.ref.ppl_se == want.ref.ppl_se);
    assert_true(got.model.n_chunks == want.model.n_chunks && got.ref.n_scored == want.ref.n_scored);
    ids[3] ^= 1; // other tokens: refused
    assert_int_equal(kf_eval_compare_cached(b, &c, ids, N_TOK, &got, NULL, NULL, &err), KF_ERR_ARG);
    kf_eval_ref_cache_free(&c);
    kf_model_free(b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kl_hand),
        cmocka_unit_test(test_self_and_damaged),
        cmocka_unit_test(test_ref_first),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
