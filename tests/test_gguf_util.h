// Helpers shared by the GGUF and llama2.c tests: temporary files, a model
// built in memory, tensor-by-tensor model comparison, and logits checked
// against the PyTorch fixtures of tests/fixtures/models/.
#ifndef KF_TEST_GGUF_UTIL_H
#define KF_TEST_GGUF_UTIL_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/file.h"
#include "model/model.h"
#include "runtime/forward.h"

// Fails with the library's message when a call does not return KF_OK.
#define ASSERT_OK(call)                                                                                                \
    do {                                                                                                               \
        kf_status s_ = (call);                                                                                         \
        if (s_ != KF_OK) fail_msg("%s: %s", #call, err.msg);                                                           \
    } while (0)

// The call must fail, with a message that names the file and says `what`.
#define ASSERT_FAILS(call, path, what)                                                                                 \
    do {                                                                                                               \
        err.msg[0] = 0;                                                                                                \
        kf_status s_ = (call);                                                                                         \
        if (s_ == KF_OK) fail_msg("%s succeeded, expected an error about '%s'", #call, what);                          \
        if (!strstr(err.msg, path) || !strstr(err.msg, what))                                                          \
            fail_msg("%s: message '%s' should name %s and say '%s'", #call, err.msg, path, what);                      \
    } while (0)

static const char *kf_test_root(void) {
    const char *r = getenv("KF_ROOT");
    return r ? r : ".";
}

// A per-process path under /tmp; out must hold 256 bytes.
static void tmp_file(char *out, const char *name) {
    snprintf(out, 256, "/tmp/kf_gguf_test_%d_%s", (int)getpid(), name);
}

static void write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, n, f) != n || fclose(f) != 0) {
        perror(path);
        exit(1);
    }
}

static uint32_t rng_state = 12345;
static float rng_uniform(void) { // in [-1, 1)
    rng_state = rng_state * 1664525u + 1013904223u;
    return (float)(rng_state >> 8) / (float)(1u << 23) - 1.0f;
}

static void fill_random(kf_model *m, kf_tensor *t, int ndim, int64_t d0, int64_t d1) {
    int64_t ne[2] = {d0, d1};
    kf_error err = {0};
    if (kf_model_alloc_tensor(m, t, ndim, ne, &err) != KF_OK) fail_msg("%s", err.msg);
    for (int64_t i = 0; i < kf_tensor_nelem(t); i++) t->data[i] = 0.5f * rng_uniform();
}

// A small Llama in memory: GQA 4/2 heads of 8, one FFN width per layer
// (n_ff[l]), untied head, Q/K/V biases when with_bias.
static kf_model *make_llama(int n_layer, const int *n_ff, bool with_bias) {
    kf_model *m = kf_model_new();
    m->arch = KF_ARCH_LLAMA;
    m->norm = KF_NORM_RMS;
    m->act = KF_ACT_SILU;
    m->pos = KF_POS_ROPE;
    m->gated_ffn = true;
    m->n_vocab = 40;
    m->n_embd = 32;
    m->n_layer = n_layer;
    m->n_head = 4;
    m->n_head_kv = 2;
    m->head_dim = 8;
    m->n_ctx_train = 16;
    m->norm_eps = 1e-6f;
    m->rope_theta = 20000.0f;
    int64_t C = 32, Q = 32, KV = 16;
    fill_random(m, &m->tok_embd, 2, m->n_vocab, C);
    fill_random(m, &m->lm_head, 2, m->n_vocab, C);
    fill_random(m, &m->out_norm_w, 1, C, 0);
    m->layers = calloc((size_t)n_layer, sizeof *m->layers);
    for (int l = 0; l < n_layer; l++) {
        kf_layer *L = &m->layers[l];
        L->n_ff = n_ff[l];
        fill_random(m, &L->attn_norm_w, 1, C, 0);
        fill_random(m, &L->wq, 2, Q, C);
        fill_random(m, &L->wk, 2, KV, C);
        fill_random(m, &L->wv, 2, KV, C);
        fill_random(m, &L->wo, 2, C, Q);
        if (with_bias) {
            fill_random(m, &L->bq, 1, Q, 0);
            fill_random(m, &L->bk, 1, KV, 0);
            fill_random(m, &L->bv, 1, KV, 0);
        }
        fill_random(m, &L->ffn_norm_w, 1, C, 0);
        fill_random(m, &L->w_gate, 2, n_ff[l], C);
        fill_random(m, &L->w_up, 2, n_ff[l], C);
        fill_random(m, &L->w_down, 2, C, n_ff[l]);
    }
    return m;
}

// Hyper-parameters equal, and every tensor present in both with the same
// shape and values within tol (0: bit-exact).
static void assert_models_equal(const kf_model *a, const kf_model *b, float tol) {
    assert_int_equal(a->arch, b->arch);
    assert_int_equal(a->norm, b->norm);
    assert_int_equal(a->act, b->act);
    assert_int_equal(a->pos, b->pos);
    assert_int_equal(a->gated_ffn, b->gated_ffn);
    assert_int_equal(a->n_vocab, b->n_vocab);
    assert_int_equal(a->n_embd, b->n_embd);
    assert_int_equal(a->n_layer, b->n_layer);
    assert_int_equal(a->n_head, b->n_head);
    assert_int_equal(a->n_head_kv, b->n_head_kv);
    assert_int_equal(a->head_dim, b->head_dim);
    assert_int_equal(a->n_ctx_train, b->n_ctx_train);
    assert_float_equal(a->norm_eps, b->norm_eps, 0);
    assert_int_equal(a->tied_head, b->tied_head);
    assert_int_equal(a->bos_id, b->bos_id);
    assert_int_equal(a->eos_id, b->eos_id);
    for (int l = 0; l < a->n_layer; l++) assert_int_equal(a->layers[l].n_ff, b->layers[l].n_ff);
    int na = kf_model_list_tensors(a, NULL, 0), nb = kf_model_list_tensors(b, NULL, 0);
    assert_int_equal(na, nb);
    kf_named_tensor *ta = calloc((size_t)na, sizeof *ta), *tb = calloc((size_t)nb, sizeof *tb);
    kf_model_list_tensors(a, ta, na);
    kf_model_list_tensors(b, tb, nb);
    for (int i = 0; i < na; i++) {
        assert_string_equal(ta[i].name, tb[i].name);
        assert_int_equal(ta[i].t->ndim, tb[i].t->ndim);
        for (int d = 0; d < ta[i].t->ndim; d++) assert_int_equal(ta[i].t->ne[d], tb[i].t->ne[d]);
        int64_t n = kf_tensor_nelem(ta[i].t);
        if (tol == 0) {
            if (memcmp(ta[i].t->data, tb[i].t->data, sizeof(float) * (size_t)n) != 0)
                fail_msg("tensor %s differs", ta[i].name);
            continue;
        }
        for (int64_t j = 0; j < n; j++)
            if (!(fabsf(ta[i].t->data[j] - tb[i].t->data[j]) <= tol * fmaxf(1.0f, fabsf(ta[i].t->data[j]))))
                fail_msg("tensor %s element %lld: %g vs %g", ta[i].name, (long long)j, ta[i].t->data[j],
                         tb[i].t->data[j]);
    }
    free(ta);
    free(tb);
}

// Runs the prefill on the fixture's ids and returns the largest absolute
// difference from the PyTorch logits in tests/fixtures/models/<name>.logits.bin.
static double fixture_logits_diff(const kf_model *m, const char *name) {
    char path[1200];
    kf_error err = {0};
    char *text;
    size_t len;
    snprintf(path, sizeof path, "%s/tests/fixtures/models/%s.ids.txt", kf_test_root(), name);
    ASSERT_OK(kf_file_read_all(path, &text, &len, &err));
    int32_t ids[256];
    int T = 0;
    for (char *p = text; *p && T < 256;) {
        ids[T++] = (int32_t)strtol(p, &p, 10);
        while (*p == ',' || *p == ' ' || *p == '\n') p++;
    }
    free(text);
    snprintf(path, sizeof path, "%s/tests/fixtures/models/%s.logits.bin", kf_test_root(), name);
    char *ref;
    ASSERT_OK(kf_file_read_all(path, &ref, &len, &err));
    assert_int_equal(len, sizeof(float) * (size_t)T * (size_t)m->n_vocab);
    float *logits = malloc(sizeof(float) * (size_t)T * (size_t)m->n_vocab);
    kf_ctx *ctx;
    ASSERT_OK(kf_ctx_init(&ctx, m, T, 0, &err));
    ASSERT_OK(kf_forward_prefill(ctx, ids, 1, T, logits, &err));
    double worst = 0;
    for (int64_t i = 0; i < (int64_t)T * m->n_vocab; i++) {
        float r;
        memcpy(&r, ref + 4 * i, 4);
        double d = fabs((double)logits[i] - r);
        if (isnan(d) || d > worst) worst = isnan(d) ? INFINITY : d; // NaN counts as a failure
    }
    kf_ctx_free(ctx);
    free(logits);
    free(ref);
    return worst;
}

#endif
