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
#include "synth_model.h"
#include "test_util.h"

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

// A per-process path under /tmp; out must hold 256 bytes.
static inline void tmp_file(char *out, const char *name) {
    snprintf(out, 256, "/tmp/kf_gguf_test_%d_%s", (int)getpid(), name);
}

// Uniform in [-0.5, 0.5), norm weights too.
static inline void fill_random(kf_tensor *t, bool norm, void *user) {
    (void)norm, (void)user;
    for (int64_t i = 0; i < kf_tensor_nelem(t); i++) t->data[i] = (float)(0.5 * kf_test_urand());
}

// A small Llama in memory: vocabulary n_vocab, GQA 4/2 heads of 8, one FFN
// width per layer (n_ff[l]), untied head, Q/K/V biases when with_bias.
static inline kf_model *make_llama_vocab(int n_layer, const int *n_ff, bool with_bias, int n_vocab) {
    kf_synth_shape sh = {.n_vocab = n_vocab, .n_embd = 32, .n_layer = n_layer, .n_head = 4, .n_head_kv = 2,
                         .head_dim = 8, .n_ctx_train = 16, .n_ff = n_ff, .qkv_bias = with_bias, .norm_eps = 1e-6f,
                         .rope_theta = 20000.0f};
    kf_model *m;
    kf_error err = {0};
    if (kf_synth_llama(&sh, fill_random, NULL, &m, &err) != KF_OK) fail_msg("%s", err.msg);
    return m;
}

static inline kf_model *make_llama(int n_layer, const int *n_ff, bool with_bias) {
    return make_llama_vocab(n_layer, n_ff, with_bias, 40);
}

// Hyper-parameters equal, and every tensor present in both with the same
// shape and values within tol (0: bit-exact).
static inline void assert_models_equal(const kf_model *a, const kf_model *b, float tol) {
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
static inline double fixture_logits_diff(const kf_model *m, const char *name) {
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

// An independent Llama forward pass (double precision, naive loops) with the
// RoPE of llama.cpp's `llama` architecture and llama2.c's run.c: adjacent
// pairs (2i, 2i+1) of each head rotate by pos * theta^(-2i/Dh). Run on wq/wk
// exactly as stored in a written file, it checks that the file is what those
// programs expect. Returns the largest |logit - fixture| like
// fixture_logits_diff.
static inline void ref_matvec(const float *w, const double *x, double *y, int64_t rows, int64_t cols) {
    for (int64_t r = 0; r < rows; r++) {
        double acc = 0;
        for (int64_t c = 0; c < cols; c++) acc += (double)w[r * cols + c] * x[c];
        y[r] = acc;
    }
}

static inline void ref_rmsnorm(const double *x, const float *w, double *y, int64_t n, double eps) {
    double ss = 0;
    for (int64_t i = 0; i < n; i++) ss += x[i] * x[i];
    double s = 1.0 / sqrt(ss / (double)n + eps);
    for (int64_t i = 0; i < n; i++) y[i] = x[i] * s * w[i];
}

static inline void ref_rope_interleaved(double *v, int n_heads, int D, int pos, double theta) {
    for (int h = 0; h < n_heads; h++)
        for (int i = 0; i < D / 2; i++) {
            double a = pos * pow(theta, -2.0 * i / D), c = cos(a), s = sin(a);
            double *p = v + h * D + 2 * i, x0 = p[0], x1 = p[1];
            p[0] = x0 * c - x1 * s;
            p[1] = x0 * s + x1 * c;
        }
}

// m: a Llama whose wq/wk are replaced by wq_file[l]/wk_file[l] (interleaved rows).
static inline double ref_interleaved_logits_diff(const kf_model *m, const float *const *wq_file, const float *const *wk_file,
                                          const char *name) {
    char path[1200];
    kf_error err = {0};
    char *text, *ref;
    size_t len;
    snprintf(path, sizeof path, "%s/tests/fixtures/models/%s.ids.txt", kf_test_root(), name);
    ASSERT_OK(kf_file_read_all(path, &text, &len, &err));
    int ids[256], T = 0;
    for (char *p = text; *p && T < 256;) {
        ids[T++] = (int)strtol(p, &p, 10);
        while (*p == ',' || *p == ' ' || *p == '\n') p++;
    }
    free(text);
    snprintf(path, sizeof path, "%s/tests/fixtures/models/%s.logits.bin", kf_test_root(), name);
    ASSERT_OK(kf_file_read_all(path, &ref, &len, &err));
    int C = m->n_embd, H = m->n_head, Hkv = m->n_head_kv, D = m->head_dim, V = m->n_vocab;
    int Q = H * D, KV = Hkv * D, Fmax = 0;
    for (int l = 0; l < m->n_layer; l++) Fmax = m->layers[l].n_ff > Fmax ? m->layers[l].n_ff : Fmax;
    double *x = calloc((size_t)T * C, sizeof *x), *h = malloc(sizeof *h * C), *q = malloc(sizeof *q * Q);
    double *k = malloc(sizeof *k * (size_t)T * KV), *v = malloc(sizeof *v * (size_t)T * KV);
    double *att = malloc(sizeof *att * Q), *o = malloc(sizeof *o * C), *g = malloc(sizeof *g * Fmax);
    double *u = malloc(sizeof *u * Fmax), *sc = malloc(sizeof *sc * T), *logit = malloc(sizeof *logit * V);
    for (int t = 0; t < T; t++)
        for (int c = 0; c < C; c++) x[(int64_t)t * C + c] = m->tok_embd.data[(int64_t)ids[t] * C + c];
    for (int l = 0; l < m->n_layer; l++) {
        const kf_layer *L = &m->layers[l];
        int F = L->n_ff;
        for (int t = 0; t < T; t++) { // K, V of every position first (causal: t attends to 0..t)
            ref_rmsnorm(x + (int64_t)t * C, L->attn_norm_w.data, h, C, m->norm_eps);
            ref_matvec(wk_file[l], h, k + (int64_t)t * KV, KV, C);
            ref_matvec(L->wv.data, h, v + (int64_t)t * KV, KV, C);
            ref_rope_interleaved(k + (int64_t)t * KV, Hkv, D, t, m->rope_theta);
        }
        for (int t = 0; t < T; t++) {
            double *xt = x + (int64_t)t * C;
            ref_rmsnorm(xt, L->attn_norm_w.data, h, C, m->norm_eps);
            ref_matvec(wq_file[l], h, q, Q, C);
            ref_rope_interleaved(q, H, D, t, m->rope_theta);
            for (int hd = 0; hd < H; hd++) {
                int kh = hd / (H / Hkv);
                double mx = -INFINITY, sum = 0;
                for (int s = 0; s <= t; s++) {
                    double d = 0;
                    for (int i = 0; i < D; i++) d += q[hd * D + i] * k[(int64_t)s * KV + kh * D + i];
                    sc[s] = d / sqrt((double)D);
                    mx = sc[s] > mx ? sc[s] : mx;
                }
                for (int s = 0; s <= t; s++) sum += sc[s] = exp(sc[s] - mx);
                for (int i = 0; i < D; i++) {
                    double a = 0;
                    for (int s = 0; s <= t; s++) a += sc[s] / sum * v[(int64_t)s * KV + kh * D + i];
                    att[hd * D + i] = a;
                }
            }
            ref_matvec(L->wo.data, att, o, C, Q);
            for (int c = 0; c < C; c++) xt[c] += o[c];
            ref_rmsnorm(xt, L->ffn_norm_w.data, h, C, m->norm_eps);
            ref_matvec(L->w_gate.data, h, g, F, C);
            ref_matvec(L->w_up.data, h, u, F, C);
            for (int j = 0; j < F; j++) g[j] = g[j] / (1 + exp(-g[j])) * u[j];
            ref_matvec(L->w_down.data, g, o, C, F);
            for (int c = 0; c < C; c++) xt[c] += o[c];
        }
    }
    double worst = 0;
    for (int t = 0; t < T; t++) {
        ref_rmsnorm(x + (int64_t)t * C, m->out_norm_w.data, h, C, m->norm_eps);
        ref_matvec(m->lm_head.data, h, logit, V, C);
        for (int i = 0; i < V; i++) {
            float r;
            memcpy(&r, ref + 4 * ((int64_t)t * V + i), 4);
            double d = fabs(logit[i] - r);
            if (isnan(d) || d > worst) worst = isnan(d) ? INFINITY : d;
        }
    }
    free(x), free(h), free(q), free(k), free(v), free(att), free(o), free(g), free(u), free(sc), free(logit);
    free(ref);
    return worst;
}

#endif
