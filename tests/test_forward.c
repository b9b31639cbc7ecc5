// The forward pass against the PyTorch reference (tests/ref/model_ref.py) and
// against itself: decode with the KV cache equals prefill, a batch equals
// single runs, hooks see the right shapes and their edits take effect, and
// per-layer FFN widths are honoured.
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "io/load.h"
#include "runtime/forward.h"

// Logits of a float32 forward vs the float64 reference: observed max errors
// are ~1e-6 .. 1e-5 on logits of magnitude up to ~10.
#define PARITY_TOL 1e-4f
// Two float32 runs of the same computation in different groupings (decode
// vs prefill, batch vs single): same bound.
#define SELF_TOL 1e-4f

typedef struct {
    const char *dir;  // model folder, relative to KF_ROOT
    const char *dump; // reference dump prefix under tests/fixtures/models/
} fixture;

static const fixture FIXTURES[] = {
    {"models/llama-gutenberg-1.4m", "llama-gutenberg-1.4m"},
    {"tests/fixtures/models/gpt2-tiny", "gpt2-tiny"},
    {"tests/fixtures/models/llama-gqa-bf16", "llama-gqa-bf16"},
};
enum { LLAMA_1P4M = 0, GPT2_TINY, LLAMA_GQA, N_FIXTURES };

static const char *root(void) {
    const char *r = getenv("KF_ROOT");
    return r ? r : ".";
}

static kf_model *load_model(const fixture *f) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", root(), f->dir);
    kf_model *m = NULL;
    kf_error err = {0};
    if (kf_model_load(&m, path, &err) != KF_OK) fail_msg("load %s: %s", path, err.msg);
    return m;
}

// Reads the reference ids (comma-separated) into ids (cap entries); returns T.
static int load_ids(const fixture *f, int32_t *ids, int cap) {
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/fixtures/models/%s.ids.txt", root(), f->dump);
    FILE *fp = fopen(path, "r");
    if (!fp) fail_msg("cannot open %s", path);
    int T = 0;
    while (T < cap && fscanf(fp, "%d", &ids[T]) == 1) {
        T++;
        if (fgetc(fp) != ',') break;
    }
    fclose(fp);
    assert_true(T > 0);
    return T;
}

// Reference logits (T, V), malloc'd.
static float *load_dump(const fixture *f, int T, int V) {
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/fixtures/models/%s.logits.bin", root(), f->dump);
    FILE *fp = fopen(path, "rb");
    if (!fp) fail_msg("cannot open %s", path);
    float *ref = malloc(sizeof(float) * (size_t)T * V);
    assert_non_null(ref);
    size_t n = fread(ref, sizeof(float), (size_t)T * V + 1, fp); // one more: the size must be exact
    fclose(fp);
    if (n != (size_t)T * V) fail_msg("%s: %zu floats, expected %d x %d", path, n, T, V);
    return ref;
}

static float max_abs_diff(const float *a, const float *b, int64_t n) {
    float d = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        float e = fabsf(a[i] - b[i]);
        if (!(e <= d)) d = e; // NaN counts as the largest
    }
    return d;
}

// Prefill of (B, T) tokens on a fresh context; logits (B*T, V) malloc'd.
static float *run_prefill(const kf_model *m, const int32_t *ids, int B, int T, int kv_len) {
    kf_ctx *ctx = NULL;
    kf_error err = {0};
    if (kf_ctx_init(&ctx, m, B * T, kv_len, &err) != KF_OK) fail_msg("ctx: %s", err.msg);
    float *logits = malloc(sizeof(float) * (size_t)B * T * m->n_vocab);
    assert_non_null(logits);
    if (kf_forward_prefill(ctx, ids, B, T, logits, &err) != KF_OK) fail_msg("prefill: %s", err.msg);
    kf_ctx_free(ctx);
    return logits;
}

// Replaces t by an owned copy of itself (weights may sit in a read-only map).
static void own_copy(kf_model *m, kf_tensor *t) {
    kf_tensor old = *t;
    kf_error err = {0};
    assert_int_equal(kf_model_alloc_tensor(m, t, old.ndim, old.ne, &err), KF_OK);
    memcpy(t->data, old.data, sizeof(float) * (size_t)kf_tensor_nelem(&old));
}

// ---- parity with the reference ---------------------------------------------------

static void check_parity(int which) {
    const fixture *f = &FIXTURES[which];
    kf_model *m = load_model(f);
    int32_t ids[64];
    int T = load_ids(f, ids, 64);
    float *ref = load_dump(f, T, m->n_vocab);
    float *got = run_prefill(m, ids, 1, T, 0);
    float d = max_abs_diff(got, ref, (int64_t)T * m->n_vocab);
    print_message("%s: max |dlogit| = %.3g over %d x %d\n", f->dump, d, T, m->n_vocab);
    assert_true(d <= PARITY_TOL);
    free(ref), free(got);
    kf_model_free(m);
}

static void test_parity_llama_1p4m(void **state) { check_parity(LLAMA_1P4M); }
static void test_parity_gpt2_tiny(void **state) { check_parity(GPT2_TINY); }
static void test_parity_llama_gqa_bf16(void **state) { check_parity(LLAMA_GQA); }

// The parity check has teeth: nudging one weight by 0.05 moves the logits by
// far more than the tolerance.
static void test_parity_detects_perturbation(void **state) {
    const fixture *f = &FIXTURES[LLAMA_GQA];
    kf_model *m = load_model(f);
    int32_t ids[64];
    int T = load_ids(f, ids, 64);
    float *ref = load_dump(f, T, m->n_vocab);
    own_copy(m, &m->layers[1].w_down);
    m->layers[1].w_down.data[5] += 0.05f;
    float *got = run_prefill(m, ids, 1, T, 0);
    float d = max_abs_diff(got, ref, (int64_t)T * m->n_vocab);
    print_message("perturbed: max |dlogit| = %.3g\n", d);
    assert_true(d > 10 * PARITY_TOL);
    free(ref), free(got);
    kf_model_free(m);
}

// ---- decode vs prefill, batch vs single -----------------------------------------------

static void check_decode(int which) {
    const fixture *f = &FIXTURES[which];
    kf_model *m = load_model(f);
    const int V = m->n_vocab;
    int32_t ids[64];
    int T = load_ids(f, ids, 64);
    float *full = run_prefill(m, ids, 1, T, 0);
    float *step = malloc(sizeof(float) * V);
    assert_non_null(step);
    kf_ctx *ctx = NULL;
    kf_error err = {0};
    assert_int_equal(kf_ctx_init(&ctx, m, T, T, &err), KF_OK);

    // Token by token from position 0.
    for (int p = 0; p < T; p++) {
        assert_int_equal(kf_forward_decode(ctx, ids[p], p, step, &err), KF_OK);
        float d = max_abs_diff(step, full + (int64_t)p * V, V);
        if (d > SELF_TOL) fail_msg("%s: decode at %d differs from prefill by %g", f->dump, p, d);
    }
    // Prefill of a prefix fills the cache of a fresh context; decoding
    // continues from there.
    kf_ctx_free(ctx);
    assert_int_equal(kf_ctx_init(&ctx, m, T, T, &err), KF_OK);
    const int P = T / 2;
    float *pre = malloc(sizeof(float) * (size_t)P * V);
    assert_non_null(pre);
    assert_int_equal(kf_forward_prefill(ctx, ids, 1, P, pre, &err), KF_OK);
    assert_true(max_abs_diff(pre, full, (int64_t)P * V) <= SELF_TOL);
    for (int p = P; p < T; p++) {
        assert_int_equal(kf_forward_decode(ctx, ids[p], p, step, &err), KF_OK);
        float d = max_abs_diff(step, full + (int64_t)p * V, V);
        if (d > SELF_TOL) fail_msg("%s: decode at %d after prefill differs by %g", f->dump, p, d);
    }
    kf_ctx_free(ctx);
    free(full), free(step), free(pre);
    kf_model_free(m);
}

static void test_decode_llama_1p4m(void **state) { check_decode(LLAMA_1P4M); }
static void test_decode_gpt2_tiny(void **state) { check_decode(GPT2_TINY); }
static void test_decode_llama_gqa_bf16(void **state) { check_decode(LLAMA_GQA); }

static void check_batch(int which) {
    const fixture *f = &FIXTURES[which];
    kf_model *m = load_model(f);
    const int V = m->n_vocab;
    int32_t ids[128];
    int T = load_ids(f, ids, 64);
    for (int t = 0; t < T; t++) ids[T + t] = ids[T - 1 - t]; // second sequence: the first reversed
    float *both = run_prefill(m, ids, 2, T, 0);
    for (int b = 0; b < 2; b++) {
        float *one = run_prefill(m, ids + b * T, 1, T, 0);
        float d = max_abs_diff(both + (int64_t)b * T * V, one, (int64_t)T * V);
        if (d > SELF_TOL) fail_msg("%s: sequence %d of a batch differs from a single run by %g", f->dump, b, d);
        free(one);
    }
    free(both);
    kf_model_free(m);
}

static void test_batch_llama_1p4m(void **state) { check_batch(LLAMA_1P4M); }
static void test_batch_gpt2_tiny(void **state) { check_batch(GPT2_TINY); }
static void test_batch_llama_gqa_bf16(void **state) { check_batch(LLAMA_GQA); }

// ---- hooks ----------------------------------------------------------------------------

typedef struct {
    int calls[8][KF_HOOK_COUNT]; // per layer and point
    int n[8][KF_HOOK_COUNT], dim[8][KF_HOOK_COUNT];
    int zero_layer;              // FFN_ACT of this layer is zeroed (-1: none)
} hook_log;

static void record_hook(void *user, int layer, kf_hook_point p, float *x, int n, int dim) {
    hook_log *h = user;
    assert_true(layer >= 0 && layer < 8 && p < KF_HOOK_COUNT);
    h->calls[layer][p]++;
    h->n[layer][p] = n;
    h->dim[layer][p] = dim;
    if (p == KF_HOOK_FFN_ACT && layer == h->zero_layer) memset(x, 0, sizeof(float) * (size_t)n * dim);
}

// Widens layer l's FFN by `extra` neurons with random gate/up rows and zero
// w_down columns: the function is unchanged, the width is not.
static void widen_ffn(kf_model *m, int l, int extra) {
    kf_layer *L = &m->layers[l];
    const int C = m->n_embd, F = L->n_ff, F2 = F + extra;
    kf_error err = {0};
    kf_tensor *in_w[] = {&L->w_gate, &L->w_up};
    for (int i = 0; i < 2; i++) {
        kf_tensor old = *in_w[i];
        if (!kf_tensor_present(&old)) continue;
        assert_int_equal(kf_model_alloc_tensor(m, in_w[i], 2, (int64_t[]){F2, C}, &err), KF_OK);
        memcpy(in_w[i]->data, old.data, sizeof(float) * (size_t)F * C);
        for (int64_t j = (int64_t)F * C; j < (int64_t)F2 * C; j++) in_w[i]->data[j] = (float)((j * 7919) % 13) / 13.0f;
    }
    if (kf_tensor_present(&L->b_up)) {
        kf_tensor old = L->b_up;
        assert_int_equal(kf_model_alloc_tensor(m, &L->b_up, 1, (int64_t[]){F2}, &err), KF_OK);
        memcpy(L->b_up.data, old.data, sizeof(float) * (size_t)F);
        for (int j = F; j < F2; j++) L->b_up.data[j] = 0.5f;
    }
    kf_tensor old = L->w_down; // (C, F) -> (C, F2), new columns zero
    assert_int_equal(kf_model_alloc_tensor(m, &L->w_down, 2, (int64_t[]){C, F2}, &err), KF_OK);
    for (int r = 0; r < C; r++) memcpy(L->w_down.data + (int64_t)r * F2, old.data + (int64_t)r * F, sizeof(float) * F);
    L->n_ff = F2;
}

static void check_hooks(int which) {
    const fixture *f = &FIXTURES[which];
    kf_model *m = load_model(f);
    const int V = m->n_vocab, C = m->n_embd, L = m->n_layer;
    assert_true(L <= 8);
    int32_t ids[64];
    int T = load_ids(f, ids, 64);
    float *base = run_prefill(m, ids, 1, T, 0);

    // Layer 0 wider than the others: shapes follow the layer, output unchanged.
    widen_ffn(m, 0, 5);
    kf_ctx *ctx = NULL;
    kf_error err = {0};
    assert_int_equal(kf_ctx_init(&ctx, m, T, 0, &err), KF_OK);
    hook_log log = {.zero_layer = -1};
    kf_ctx_set_hook(ctx, record_hook, &log, (1u << KF_HOOK_COUNT) - 1);
    float *got = malloc(sizeof(float) * (size_t)T * V), *zeroed = malloc(sizeof(float) * (size_t)T * V);
    assert_non_null(got);
    assert_non_null(zeroed);
    assert_int_equal(kf_forward_prefill(ctx, ids, 1, T, got, &err), KF_OK);
    assert_true(max_abs_diff(got, base, (int64_t)T * V) <= SELF_TOL);
    for (int l = 0; l < L; l++)
        for (int p = 0; p < KF_HOOK_COUNT; p++) {
            assert_int_equal(log.calls[l][p], 1);
            assert_int_equal(log.n[l][p], T);
            assert_int_equal(log.dim[l][p], p == KF_HOOK_FFN_ACT ? m->layers[l].n_ff : C);
        }
    assert_int_equal(log.dim[0][KF_HOOK_FFN_ACT], m->layers[1].n_ff + 5);

    // Zeroing the activations of the last layer equals zeroing its w_down.
    memset(&log, 0, sizeof log);
    log.zero_layer = L - 1;
    kf_ctx_set_hook(ctx, record_hook, &log, 1u << KF_HOOK_FFN_ACT);
    assert_int_equal(kf_forward_prefill(ctx, ids, 1, T, zeroed, &err), KF_OK);
    assert_int_equal(log.calls[0][KF_HOOK_BLOCK_IN], 0); // only the masked point runs
    assert_true(max_abs_diff(zeroed, base, (int64_t)T * V) > 1e-2f);
    kf_ctx_set_hook(ctx, NULL, NULL, 0);
    kf_tensor *wd = &m->layers[L - 1].w_down;
    assert_int_equal(kf_model_alloc_tensor(m, wd, 2, wd->ne, &err), KF_OK); // a zeroed (C, F)
    assert_int_equal(kf_forward_prefill(ctx, ids, 1, T, got, &err), KF_OK);
    assert_true(max_abs_diff(got, zeroed, (int64_t)T * V) <= SELF_TOL);

    // Decode calls the hooks with one row.
    kf_ctx_free(ctx);
    assert_int_equal(kf_ctx_init(&ctx, m, 1, 2, &err), KF_OK);
    memset(&log, 0, sizeof log);
    log.zero_layer = -1;
    kf_ctx_set_hook(ctx, record_hook, &log, 1u << KF_HOOK_FFN_ACT | 1u << KF_HOOK_BLOCK_OUT);
    assert_int_equal(kf_forward_decode(ctx, ids[0], 0, got, &err), KF_OK);
    assert_int_equal(log.calls[0][KF_HOOK_FFN_ACT], 1);
    assert_int_equal(log.n[0][KF_HOOK_FFN_ACT], 1);
    assert_int_equal(log.dim[0][KF_HOOK_FFN_ACT], m->layers[0].n_ff);
    assert_int_equal(log.calls[L - 1][KF_HOOK_BLOCK_OUT], 1);
    assert_int_equal(log.calls[0][KF_HOOK_ATTN_OUT], 0);
    kf_ctx_free(ctx);
    free(base), free(got), free(zeroed);
    kf_model_free(m);
}

static void test_hooks_gpt2_tiny(void **state) { check_hooks(GPT2_TINY); }
static void test_hooks_llama_gqa_bf16(void **state) { check_hooks(LLAMA_GQA); }

// An edit at BLOCK_OUT of the last layer reaches the logits: doubling the
// residual stream before a scale-invariant RMSNorm leaves logits unchanged,
// while adding a constant does not.
static void scale_block_out(void *user, int layer, kf_hook_point p, float *x, int n, int dim) {
    const kf_model *m = user;
    if (layer != m->n_layer - 1) return;
    for (int64_t i = 0; i < (int64_t)n * dim; i++) x[i] *= 2.0f;
}

static void test_hook_edit_block_out(void **state) {
    kf_model *m = load_model(&FIXTURES[LLAMA_GQA]);
    int32_t ids[64];
    int T = load_ids(&FIXTURES[LLAMA_GQA], ids, 64);
    const int V = m->n_vocab;
    float *base = run_prefill(m, ids, 1, T, 0), *got = malloc(sizeof(float) * (size_t)T * V);
    assert_non_null(got);
    kf_ctx *ctx = NULL;
    kf_error err = {0};
    assert_int_equal(kf_ctx_init(&ctx, m, T, 0, &err), KF_OK);
    kf_ctx_set_hook(ctx, scale_block_out, m, 1u << KF_HOOK_BLOCK_OUT);
    assert_int_equal(kf_forward_prefill(ctx, ids, 1, T, got, &err), KF_OK);
    assert_true(max_abs_diff(got, base, (int64_t)T * V) <= SELF_TOL); // eps 1e-5 is negligible here
    kf_ctx_set_hook(ctx, scale_block_out, m, 1u << KF_HOOK_BLOCK_IN); // layer L-1's input: not scale-free
    assert_int_equal(kf_forward_prefill(ctx, ids, 1, T, got, &err), KF_OK);
    assert_true(max_abs_diff(got, base, (int64_t)T * V) > 1e-2f);
    kf_ctx_free(ctx);
    free(base), free(got);
    kf_model_free(m);
}

// ---- bad arguments ----------------------------------------------------------------

static void test_bad_arguments(void **state) {
    kf_model *m = load_model(&FIXTURES[GPT2_TINY]);
    kf_ctx *ctx = NULL;
    kf_error err = {0};
    float *logits = malloc(sizeof(float) * 128 * (size_t)m->n_vocab);
    assert_non_null(logits);
    assert_int_equal(kf_ctx_init(&ctx, m, 0, 0, &err), KF_ERR_ARG);
    assert_null(ctx);
    assert_int_equal(kf_ctx_init(&ctx, m, 128, 4, &err), KF_OK);
    int32_t ids[128] = {0};
    ids[3] = m->n_vocab;
    assert_int_equal(kf_forward_prefill(ctx, ids, 1, 4, logits, &err), KF_ERR_ARG);
    assert_non_null(strstr(err.msg, "vocabulary"));
    ids[3] = -1;
    assert_int_equal(kf_forward_prefill(ctx, ids, 1, 4, logits, &err), KF_ERR_ARG);
    ids[3] = 0;
    assert_int_equal(kf_forward_prefill(ctx, ids, 3, 50, logits, &err), KF_ERR_ARG);        // 150 > 128 rows
    assert_int_equal(kf_forward_prefill(ctx, ids, 1, 65, logits, &err), KF_ERR_ARG);        // > 64 positions
    assert_int_equal(kf_forward_prefill(ctx, ids, 0, 4, logits, &err), KF_ERR_ARG);
    assert_int_equal(kf_forward_decode(ctx, 0, 4, logits, &err), KF_ERR_ARG);               // cache of 4
    assert_int_equal(kf_forward_decode(ctx, 0, -1, logits, &err), KF_ERR_ARG);
    assert_int_equal(kf_forward_decode(ctx, m->n_vocab, 0, logits, &err), KF_ERR_ARG);
    assert_int_equal(kf_forward_prefill(ctx, ids, 2, 64, NULL, &err), KF_OK); // logits optional
    kf_ctx_free(ctx);
    m->layers[1].n_ff += 1; // shapes no longer agree: refused at init
    assert_int_equal(kf_ctx_init(&ctx, m, 4, 0, &err), KF_ERR_FORMAT);
    assert_null(ctx);
    free(logits);
    kf_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parity_llama_1p4m),
        cmocka_unit_test(test_parity_gpt2_tiny),
        cmocka_unit_test(test_parity_llama_gqa_bf16),
        cmocka_unit_test(test_parity_detects_perturbation),
        cmocka_unit_test(test_decode_llama_1p4m),
        cmocka_unit_test(test_decode_gpt2_tiny),
        cmocka_unit_test(test_decode_llama_gqa_bf16),
        cmocka_unit_test(test_batch_llama_1p4m),
        cmocka_unit_test(test_batch_gpt2_tiny),
        cmocka_unit_test(test_batch_llama_gqa_bf16),
        cmocka_unit_test(test_hooks_gpt2_tiny),
        cmocka_unit_test(test_hooks_llama_gqa_bf16),
        cmocka_unit_test(test_hook_edit_block_out),
        cmocka_unit_test(test_bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
