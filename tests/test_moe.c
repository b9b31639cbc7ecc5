// kfuse moefy on the 1.4m model, calibrated on the first 60 kB of a training
// book (tokenised with the model's tokenizer):
// - with every expert selected (top-k = E) the MoE model's logits equal the
//   dense model's within 1e-5, through the grouped prefill, the sliced decode
//   and the masked path, for each split (kmeans, coact, fold);
// - the coact (METIS) split gives experts of exactly F / E neurons;
// - the trained routers (linear, MLP) recall the oracle's top-k experts on
//   held-out tokens better than the similarity router;
// - top-k below E: the grouped prefill equals the decode position by position;
//   it changes the logits (the branch is really taken) and the
//   oracle router's are closer to the dense ones than the similarity router's;
// - save/load: an HF folder and a GGUF of the MoE model give identical logits;
// - bad option values are refused with a message.
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

#include "io/save.h"
#include "io/load.h"
#include "formats/gguf.h"
#include "moe/moefy.h"
#include "moe/split.h"
#include "core/rng.h"
#include "runtime/forward.h"
#include "tokenizer/tokenizer.h"

#define CTX 64
#define NTEST 48 // tokens of the logits comparison
#define SPARSE_TOL 2e-5 // prefill vs decode logits of a sparse MoE (observed: 5.3e-6)

static int32_t *ids;
static size_t n_ids;
static char model_path[1024];

static kf_model *load(const char *path) {
    kf_model *m = NULL;
    kf_error err = {0};
    if (kf_model_load(&m, path, &err) != KF_OK) fail_msg("%s", err.msg);
    return m;
}

static int setup(void **state) {
    (void)state;
    const char *root = getenv("KF_ROOT");
    snprintf(model_path, sizeof model_path, "%s/models/llama-gutenberg-1.4m", root ? root : ".");
    char path[1100];
    snprintf(path, sizeof path, "%s/data/calib/calib.txt", root ? root : "."); // training-split books
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    static char text[60000];
    size_t len = fread(text, 1, sizeof text, f);
    fclose(f);
    kf_tokenizer *tok;
    kf_error err = {0};
    if (kf_tokenizer_load_for_model(&tok, model_path, 4096, &err) != KF_OK) return -1;
    kf_status s = kf_tokenizer_encode(tok, text, len, true, &ids, &n_ids, &err);
    kf_tokenizer_free(tok);
    return s == KF_OK && n_ids > 4096 ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    free(ids);
    return 0;
}

static void small_opts(kf_moefy_opts *o, int E, kf_split_kind split, kf_moefy_router router, int top_k) {
    kf_moefy_opts_default(o);
    o->n_expert = E;
    o->split = split;
    o->router = router;
    o->top_k = top_k;
    o->ctx = CTX;
    o->n_tokens = 4096;
    o->router_tokens = 4096;
    o->hidden = 32;
}

static kf_model *moefy(const kf_moefy_opts *o, kf_moefy_report *rep) {
    kf_model *m = load(model_path);
    kf_error err = {0};
    kf_moefy_report tmp;
    if (kf_moefy_run(m, ids, (int64_t)n_ids, 1, o, rep ? rep : &tmp, &err) != KF_OK) fail_msg("%s", err.msg);
    if (!rep) kf_moefy_report_free(&tmp);
    return m;
}

// Prefill logits (NTEST, V) of the test tokens (taken after the calibration
// sample), then decode logits (NTEST, V) of the same tokens one by one.
static void logits_of(const kf_model *m, float *prefill, float *decode) {
    kf_ctx *c;
    kf_error err = {0};
    if (kf_ctx_init(&c, m, NTEST, NTEST, &err) != KF_OK) fail_msg("%s", err.msg);
    const int32_t *t = ids + n_ids - NTEST;
    if (kf_forward_prefill(c, t, 1, NTEST, prefill, &err) != KF_OK) fail_msg("%s", err.msg);
    for (int p = 0; decode && p < NTEST; p++)
        if (kf_forward_decode(c, t[p], p, decode + (size_t)p * m->n_vocab, &err) != KF_OK) fail_msg("%s", err.msg);
    kf_ctx_free(c);
}

// kf_ctx_ffn_share after a prefill and NTEST decode steps of the test tokens.
static double share_of(const kf_model *m) {
    kf_ctx *c;
    kf_error err = {0};
    float *logits = malloc(sizeof(float) * (size_t)NTEST * m->n_vocab);
    if (kf_ctx_init(&c, m, NTEST, NTEST, &err) != KF_OK) fail_msg("%s", err.msg);
    const int32_t *t = ids + n_ids - NTEST;
    if (kf_forward_prefill(c, t, 1, NTEST, logits, &err) != KF_OK) fail_msg("%s", err.msg);
    for (int p = 0; p < NTEST; p++)
        if (kf_forward_decode(c, t[p], p, logits, &err) != KF_OK) fail_msg("%s", err.msg);
    double share = kf_ctx_ffn_share(c);
    kf_ctx_free(c);
    free(logits);
    return share;
}

static double max_abs_diff(const float *a, const float *b, size_t n) {
    double d = 0;
    for (size_t i = 0; i < n; i++) d = fmax(d, fabs((double)a[i] - b[i]));
    return d;
}

static void test_all_experts_equal_dense(void **state) {
    (void)state;
    kf_model *dense = load(model_path);
    const size_t n = (size_t)NTEST * dense->n_vocab;
    float *ref = malloc(n * sizeof(float)), *pre = malloc(n * sizeof(float)), *dec = malloc(n * sizeof(float));
    logits_of(dense, ref, NULL);
    const kf_split_kind splits[] = {KF_SPLIT_KMEANS, KF_SPLIT_COACT, KF_SPLIT_FOLD};
    for (int i = 0; i < 3; i++) {
        kf_moefy_opts o;
        small_opts(&o, 8, splits[i], KF_MOEFY_LINEAR, 8);
        o.epochs = 1;
        kf_model *m = moefy(&o, NULL);
        assert_int_equal(m->layers[0].n_expert, 8);
        logits_of(m, pre, dec);
        double dp = max_abs_diff(ref, pre, n), dd = max_abs_diff(ref, dec, n);
        print_message("split %d: all experts: prefill max |diff| %.2e, decode %.2e\n", i, dp, dd);
        assert_true(dp < 1e-5);
        assert_true(dd < 1e-5);
        for (int l = 0; l < m->n_layer; l++) m->layers[l].router = KF_ROUTER_ORACLE; // masked path
        logits_of(m, pre, dec);
        assert_true(max_abs_diff(ref, pre, n) < 1e-5);
        assert_true(max_abs_diff(ref, dec, n) < 1e-5);
        kf_model_free(m);
    }
    free(ref);
    free(pre);
    free(dec);
    kf_model_free(dense);
}

static void test_coact_balanced(void **state) {
    (void)state;
    kf_model *m = load(model_path);
    const int F = m->layers[0].n_ff, E = 16;
    kf_moments mo;
    kf_error err = {0};
    assert_int_equal(kf_moments_init(&mo, F, 12, 0, &err), KF_OK);
    // Activations with planted co-activation blocks of uneven size, so that
    // an unbalanced cut would be cheaper.
    float *x = calloc((size_t)F, sizeof(float));
    kf_rng rng;
    kf_rng_seed(&rng, 7);
    for (int t = 0; t < 3000; t++) {
        uint64_t r = kf_rng_u64(&rng);
        int blk = (int)(r % 5), lo = blk * 60, hi = blk == 4 ? F : lo + 40 + blk * 10;
        for (int j = 0; j < F; j++) x[j] = (j >= lo && j < hi) ? 1.0f + (float)((r >> (j % 50)) & 7) : 0.01f * (j % 3);
        assert_int_equal(kf_moments_add(&mo, x, 1, &err), KF_OK);
    }
    int32_t *labels = malloc(sizeof(int32_t) * (size_t)F);
    assert_int_equal(kf_moe_split_coact(&mo, E, 1, labels, &err), KF_OK);
    int count[16] = {0};
    for (int j = 0; j < F; j++) {
        assert_true(labels[j] >= 0 && labels[j] < E);
        count[labels[j]]++;
    }
    for (int e = 0; e < E; e++) assert_int_equal(count[e], F / E);
    assert_int_equal(kf_moe_split_coact(&mo, 7, 1, labels, &err), KF_ERR_ARG); // 384 % 7 != 0
    free(labels);
    free(x);
    kf_moments_free(&mo);
    kf_model_free(m);
}

static void test_router_recall(void **state) {
    (void)state;
    const kf_moefy_router routers[] = {KF_MOEFY_LINEAR, KF_MOEFY_MLP};
    for (int i = 0; i < 2; i++) {
        kf_moefy_opts o;
        small_opts(&o, 16, KF_SPLIT_KMEANS, routers[i], 4);
        kf_moefy_report rep;
        kf_model *m = moefy(&o, &rep);
        double tr = 0, sim = 0;
        for (int l = 0; l < rep.n_layer; l++) tr += rep.layers[l].recall, sim += rep.layers[l].recall_similarity;
        tr /= rep.n_layer;
        sim /= rep.n_layer;
        print_message("%s router: recall@%d of the oracle on %d held-out tokens %.3f, similarity %.3f\n",
                      i ? "mlp" : "linear", rep.k_eval, rep.n_heldout, tr, sim);
        assert_true(tr > sim + 0.05);
        assert_true(rep.n_heldout >= 256);
        kf_moefy_report_free(&rep);
        kf_model_free(m);
    }
}

static void test_sparse_changes_and_oracle_best(void **state) {
    (void)state;
    kf_model *dense = load(model_path);
    const size_t n = (size_t)NTEST * dense->n_vocab;
    float *ref = malloc(n * sizeof(float)), *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float));
    logits_of(dense, ref, NULL);
    kf_moefy_opts o;
    small_opts(&o, 16, KF_SPLIT_KMEANS, KF_MOEFY_SIMILARITY, 4);
    kf_model *m = moefy(&o, NULL);
    logits_of(m, a, b);
    // the grouped prefill (tokens gathered per expert, outputs scattered back
    // to their rows) equals the decode of the same tokens, position by position
    double dmax = 0;
    for (int p = 0; p < NTEST; p++) {
        const size_t V = (size_t)m->n_vocab;
        double d = max_abs_diff(a + p * V, b + p * V, V);
        dmax = fmax(dmax, d);
        if (!(d < SPARSE_TOL)) fail_msg("top-4 of 16, position %d: prefill and decode logits differ by %.3g", p, d);
    }
    print_message("top-4 of 16: prefill vs decode max |logit diff| %.2e\n", dmax);
    // top-4 of 16 on every layer: a quarter of the neurons, prefill and decode
    assert_true(share_of(dense) == 1.0);
    assert_true(fabs(share_of(m) - 0.25) < 1e-12);
    for (int l = 0; l < m->n_layer; l++) m->layers[l].router = KF_ROUTER_ORACLE;
    logits_of(m, b, NULL);
    double d_sim = max_abs_diff(ref, a, n), d_orc = max_abs_diff(ref, b, n);
    print_message("top-4 of 16: max |logit diff| similarity %.3f, oracle %.3f\n", d_sim, d_orc);
    assert_true(d_sim > 1e-3 && d_orc > 1e-3);
    assert_true(d_orc < d_sim);
    free(ref);
    free(a);
    free(b);
    kf_model_free(m);
    kf_model_free(dense);
}

static void test_save_load(void **state) {
    (void)state;
    kf_moefy_opts o;
    small_opts(&o, 8, KF_SPLIT_KMEANS, KF_MOEFY_MLP, 0);
    o.coverage = 0.7f; // dynamic-k
    o.epochs = 2;
    kf_model *m = moefy(&o, NULL);
    const size_t n = (size_t)NTEST * m->n_vocab;
    float *ref = malloc(n * sizeof(float)), *dec = malloc(n * sizeof(float)), *got = malloc(n * sizeof(float)),
          *got_dec = malloc(n * sizeof(float));
    logits_of(m, ref, dec);
    char dir[] = "/tmp/kf_test_moe_XXXXXX", path[256];
    assert_non_null(mkdtemp(dir));
    kf_error err = {0};
    snprintf(path, sizeof path, "%s/hf", dir);
    if (kf_model_save(m, path, &(kf_save_opts){.format = KF_FORMAT_HF}, &err) != KF_OK) fail_msg("%s", err.msg);
    kf_model *h = load(path);
    assert_int_equal(h->layers[1].n_expert, 8);
    assert_int_equal(h->layers[1].router, KF_ROUTER_MLP);
    assert_int_equal(h->layers[1].top_k, 0);
    assert_true(h->layers[1].coverage == 0.7f);
    logits_of(h, got, got_dec);
    assert_memory_equal(ref, got, n * sizeof(float));
    assert_memory_equal(dec, got_dec, n * sizeof(float));
    kf_model_free(h);
    snprintf(path, sizeof path, "%s/m.gguf", dir);
    if (kf_model_save(m, path, &(kf_save_opts){.format = KF_FORMAT_GGUF, .tok = NULL}, &err) != KF_OK) fail_msg("%s", err.msg);
    h = load(path);
    logits_of(h, got, got_dec);
    assert_memory_equal(ref, got, n * sizeof(float));
    assert_memory_equal(dec, got_dec, n * sizeof(float));
    kf_model_free(h);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    free(ref);
    free(dec);
    free(got);
    free(got_dec);
    kf_model_free(m);
}

static void test_bad_options(void **state) {
    (void)state;
    kf_model *m = load(model_path);
    kf_moefy_opts o;
    kf_moefy_report rep;
    kf_error err = {0};
    small_opts(&o, 7, KF_SPLIT_KMEANS, KF_MOEFY_LINEAR, 2); // 384 neurons are not 7 equal experts
    assert_int_equal(kf_moefy_run(m, ids, (int64_t)n_ids, 1, &o, &rep, &err), KF_ERR_ARG);
    assert_non_null(strstr(err.msg, "equal experts"));
    small_opts(&o, 8, KF_SPLIT_KMEANS, KF_MOEFY_LINEAR, 9); // top-k above E
    assert_int_equal(kf_moefy_run(m, ids, (int64_t)n_ids, 1, &o, &rep, &err), KF_ERR_ARG);
    small_opts(&o, 8, KF_SPLIT_KMEANS, KF_MOEFY_LINEAR, 0);
    o.coverage = 1.5f;
    assert_int_equal(kf_moefy_run(m, ids, (int64_t)n_ids, 1, &o, &rep, &err), KF_ERR_ARG);
    small_opts(&o, 8, KF_SPLIT_KMEANS, KF_MOEFY_LINEAR, 2);
    assert_int_equal(kf_moefy_run(m, ids, 10, 1, &o, &rep, &err), KF_ERR_ARG); // shorter than a window
    kf_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_all_experts_equal_dense), cmocka_unit_test(test_coact_balanced),
        cmocka_unit_test(test_router_recall),          cmocka_unit_test(test_sparse_changes_and_oracle_best),
        cmocka_unit_test(test_save_load),              cmocka_unit_test(test_bad_options),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
