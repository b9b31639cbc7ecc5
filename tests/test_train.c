// The training pass (src/train/):
// - each optimised kernel (sgemm matmul backward, sgemm attention forward and
//   backward) against its plain reference;
// - the training forward's logits against kf_forward_prefill's;
// - the gradient of the distillation objective (KL to teacher logits + 0.5 CE)
//   for every parameter against PyTorch autograd in float64
//   (tests/ref/grad_ref.py, forward from tests/ref/model_ref.py) on a random
//   Llama with GQA and an untied head (fixture llama-gqa-bf16), a random GPT-2
//   (fixture gpt2-tiny) and a random Llama with per-layer widths, Q/K/V biases,
//   a single KV head and a tied head (built here): max |g - g_ref| / max |g_ref|
//   per tensor <= 1e-4, the denominator at least 1e-3 of the model's largest
//   gradient (GPT-2's key bias has a gradient of exactly zero: a constant added
//   to all of a query's scores leaves the softmax unchanged);
// - MoE layers (kfuse moefy's models): the straight-through gate's optimised
//   kernels against their plain references; the same parity with autograd
//   (grad_ref.py implements the MoE layer from docs/moe-training.md) for
//   every parameter, experts and routers, of a random Llama with a linear
//   top-k, an MLP coverage and an oracle layer and of a random GPT-2 with a
//   linear top-k and an MLP coverage layer; the training forward against
//   prefill's MoE path; --train router's gradients equal the routers' under
//   all-weights training, and nothing else trains;
// - LoRA: gradients of every A and B against autograd through the PEFT
//   adapter folder kfuse writes (so its keys and layout are what the
//   reference reads), and the merged model computing what the adapted one did.
// ctest-labels: slow
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "formats/safetensors.h"
#include "io/load.h"
#include "io/save.h"
#include "runtime/forward.h"
#include "runtime/kernels.h"
#include "synth_model.h"
#include "test_hf_util.h"
#include "train/ops.h"
#include "train/train.h"

#define GRAD_TOL 1e-4   // max relative error per tensor (the bound)
#define LOGIT_TOL 2e-5  // training forward vs prefill (sgemm vs online-softmax attention)
#define KERNEL_TOL 1e-5 // optimised vs reference kernel, relative to the output's scale

static float *randn(int64_t n, double std) {
    float *x = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    assert_non_null(x);
    for (int64_t i = 0; i < n; i++) x[i] = (float)(kf_rng_normal(kf_test_rng()) * std);
    return x;
}

// max |a - b| / max |b|
static double rel_err(const float *a, const float *b, int64_t n) {
    double d = 0, s = 0;
    for (int64_t i = 0; i < n; i++) {
        d = fmax(d, fabs((double)a[i] - b[i]));
        s = fmax(s, fabs((double)b[i]));
    }
    return s > 0 ? d / s : d;
}

// max |a - b| / max(max |b|, floor)
static double rel_err_floor(const float *a, const float *b, int64_t n, double floor) {
    double d = 0, s = floor;
    for (int64_t i = 0; i < n; i++) {
        d = fmax(d, fabs((double)a[i] - b[i]));
        s = fmax(s, fabs((double)b[i]));
    }
    return d / s;
}

// ---- kernels against their references ------------------------------------------------

static void test_matmul_kernels(void **state) {
    (void)state;
    const int N = 37, C = 29, OC = 23;
    float *x = randn((int64_t)N * C, 1), *W = randn((int64_t)OC * C, 0.3), *b = randn(OC, 0.1),
          *dout = randn((int64_t)N * OC, 1);
    float *y = calloc((size_t)N * OC, 4), *y_ref = calloc((size_t)N * OC, 4);
    kf_train_matmul_forward(y, x, W, b, N, C, OC);
    kf_train_ref_matmul_forward(y_ref, x, W, b, N, C, OC);
    assert_true(rel_err(y, y_ref, (int64_t)N * OC) < KERNEL_TOL);
    // accumulating: start both from the same non-zero gradients
    float *dx = randn((int64_t)N * C, 1), *dW = randn((int64_t)OC * C, 1), *db = randn(OC, 1);
    float *dx_r = malloc(sizeof(float) * N * C), *dW_r = malloc(sizeof(float) * OC * C), *db_r = malloc(sizeof(float) * OC);
    memcpy(dx_r, dx, sizeof(float) * N * C);
    memcpy(dW_r, dW, sizeof(float) * OC * C);
    memcpy(db_r, db, sizeof(float) * OC);
    kf_train_matmul_backward(dx, dW, db, dout, x, W, N, C, OC);
    kf_train_ref_matmul_backward(dx_r, dW_r, db_r, dout, x, W, N, C, OC);
    assert_true(rel_err(dx, dx_r, (int64_t)N * C) < KERNEL_TOL);
    assert_true(rel_err(dW, dW_r, (int64_t)OC * C) < KERNEL_TOL);
    assert_true(rel_err(db, db_r, OC) < KERNEL_TOL);
    free(x), free(W), free(b), free(dout), free(y), free(y_ref), free(dx), free(dW), free(db), free(dx_r), free(dW_r),
        free(db_r);
}

static void test_attention_kernels(void **state) {
    (void)state;
    const int B = 2, T = 11, H = 6, Hkv = 2, Dh = 8, Q = H * Dh, KV = Hkv * Dh, N = B * T;
    float *q = randn((int64_t)N * Q, 1), *k = randn((int64_t)N * KV, 1), *v = randn((int64_t)N * KV, 1),
          *dout = randn((int64_t)N * Q, 1);
    const int64_t np = (int64_t)B * H * T * T;
    float *o = calloc((size_t)N * Q, 4), *o_r = calloc((size_t)N * Q, 4), *p = calloc((size_t)np, 4),
          *p_r = calloc((size_t)np, 4);
    kf_train_attention_forward(o, p, q, k, v, B, T, H, Hkv, Dh);
    kf_train_ref_attention_forward(o_r, p_r, q, k, v, B, T, H, Hkv, Dh);
    assert_true(rel_err(o, o_r, (int64_t)N * Q) < KERNEL_TOL);
    assert_true(rel_err(p, p_r, np) < KERNEL_TOL);
    // the runtime's attention computes the same output
    float *o_rt = calloc((size_t)N * Q, 4);
    kf_attention(o_rt, q, k, v, B, T, 0, H, Hkv, Dh, T);
    assert_true(rel_err(o, o_rt, (int64_t)N * Q) < KERNEL_TOL);
    float *dq = calloc((size_t)N * Q, 4), *dk = calloc((size_t)N * KV, 4), *dv = calloc((size_t)N * KV, 4);
    float *dq_r = calloc((size_t)N * Q, 4), *dk_r = calloc((size_t)N * KV, 4), *dv_r = calloc((size_t)N * KV, 4);
    float *scratch = calloc((size_t)(kf_train_attention_scratch(T) * 64), 4);
    kf_train_attention_backward(dq, dk, dv, dout, p, q, k, v, B, T, H, Hkv, Dh, scratch);
    kf_train_ref_attention_backward(dq_r, dk_r, dv_r, dout, p_r, q, k, v, B, T, H, Hkv, Dh);
    assert_true(rel_err(dq, dq_r, (int64_t)N * Q) < KERNEL_TOL);
    assert_true(rel_err(dk, dk_r, (int64_t)N * KV) < KERNEL_TOL);
    assert_true(rel_err(dv, dv_r, (int64_t)N * KV) < KERNEL_TOL);
    free(q), free(k), free(v), free(dout), free(o), free(o_r), free(p), free(p_r), free(o_rt), free(dq), free(dk),
        free(dv), free(dq_r), free(dk_r), free(dv_r), free(scratch);
}

static void test_moe_gate_kernels(void **state) {
    (void)state;
    const int N = 13, E = 6, S = 5, F = E * S;
    float *act = randn((int64_t)N * F, 1), *scores = randn((int64_t)N * E, 1.5), *dsel = randn((int64_t)N * F, 1);
    float *mask = calloc((size_t)N * E, 4), *mask_cov = calloc((size_t)N * E, 4);
    int scratch[2 * E];
    kf_train_moe_select(mask, scores, N, E, 2, 0, scratch);
    kf_train_moe_select(mask_cov, scores, N, E, 0, 0.7f, scratch);
    for (int r = 0; r < N; r++) { // top-2: the two best scores; coverage: at least one
        int n = 0, n_cov = 0;
        float worst_in = INFINITY, best_out = -INFINITY;
        for (int e = 0; e < E; e++) {
            const float sc = scores[r * E + e];
            n += mask[r * E + e] == 1.0f;
            n_cov += mask_cov[r * E + e] == 1.0f;
            if (mask[r * E + e] == 1.0f) worst_in = fminf(worst_in, sc);
            else best_out = fmaxf(best_out, sc);
        }
        assert_int_equal(n, 2);
        assert_true(n_cov >= 1 && worst_in > best_out);
    }
    for (int k = 0; k < 2; k++) {
        const float *mk = k ? mask_cov : mask;
        float *y = calloc((size_t)N * F, 4), *y_r = calloc((size_t)N * F, 4);
        kf_train_moe_gate_forward(y, act, mk, N, F, E);
        kf_train_ref_moe_gate_forward(y_r, act, mk, N, F, E);
        assert_true(rel_err(y, y_r, (int64_t)N * F) == 0); // (+0 and -0 for the unselected)
        float *d = malloc(sizeof(float) * (size_t)N * F), *d_r = malloc(sizeof(float) * (size_t)N * F);
        float *ds = calloc((size_t)N * E, 4), *ds_r = calloc((size_t)N * E, 4);
        memcpy(d, dsel, sizeof(float) * (size_t)N * F);
        memcpy(d_r, dsel, sizeof(float) * (size_t)N * F);
        kf_train_moe_gate_backward(d, ds, act, mk, scores, N, F, E);
        kf_train_ref_moe_gate_backward(d_r, ds_r, act, mk, scores, N, F, E);
        assert_true(rel_err(d, d_r, (int64_t)N * F) < KERNEL_TOL);
        assert_true(rel_err(ds, ds_r, (int64_t)N * E) < KERNEL_TOL);
        // the softmax Jacobian's rows sum to zero: the scores' gradient has no shift component
        for (int r = 0; r < N; r++) {
            double sum = 0, mx = 0;
            for (int e = 0; e < E; e++) sum += ds[r * E + e], mx = fmax(mx, fabs(ds[r * E + e]));
            assert_true(fabs(sum) <= 1e-5 * mx + 1e-12);
        }
        free(y), free(y_r), free(d), free(d_r), free(ds), free(ds_r);
    }
    free(act), free(scores), free(dsel), free(mask), free(mask_cov);
}

// ---- models -------------------------------------------------------------------------------

static void fill_random(kf_tensor *t, bool norm, void *user) {
    (void)user;
    const int64_t n = kf_tensor_nelem(t);
    const double std = t->ndim == 2 ? 1.5 / sqrt((double)t->ne[1]) : 0.1;
    for (int64_t i = 0; i < n; i++) t->data[i] = (float)((norm ? 1.0 : 0.0) + kf_rng_normal(kf_test_rng()) * std);
}

// Llama, 3 layers of widths 24, 56, 8; 2 query heads on one KV head; Q/K/V biases; tied head.
static kf_model *make_widths_model(void) {
    static const int n_ff[] = {24, 56, 8};
    kf_synth_shape sh = {.n_vocab = 96, .n_embd = 32, .n_layer = 3, .n_head = 2, .n_head_kv = 1, .head_dim = 16,
                         .n_ctx_train = 64, .n_ff = n_ff, .qkv_bias = true, .norm_eps = 1e-5f, .rope_theta = 10000.0f};
    kf_model *m;
    kf_error err;
    if (kf_synth_llama(&sh, fill_random, NULL, &m, &err) != KF_OK) fail_msg("%s", err.msg);
    m->lm_head = m->tok_embd;
    m->tied_head = true;
    m->bos_id = 1;
    return m;
}

static kf_model *load_fixture(const char *name) {
    char path[1200];
    snprintf(path, sizeof path, "%s/tests/fixtures/models/%s", kf_test_root(), name);
    kf_model *m;
    kf_error err;
    if (kf_model_load(&m, path, &err) != KF_OK) fail_msg("%s", err.msg);
    return m;
}

typedef struct {
    int B, T, N, V;
    int32_t *ids, *targets;
    float *teacher;
} batch;

static batch make_batch(const kf_model *m, int B, int T, uint64_t seed) {
    batch b = {B, T, B * T, m->n_vocab, malloc(sizeof(int32_t) * B * T), malloc(sizeof(int32_t) * B * T), NULL};
    kf_test_random_ids(b.ids, b.N, 0, m->n_vocab, seed);
    for (int r = 0; r < b.N; r++) b.targets[r] = r % T < T - 1 ? b.ids[r + 1] : -1;
    b.teacher = randn((int64_t)b.N * b.V, 2.0);
    return b;
}

static void free_batch(batch *b) { free(b->ids), free(b->targets), free(b->teacher); }

static double loss_and_backward(kf_train *t, const batch *b) {
    kf_error err;
    if (kf_train_forward(t, b->ids, &err) != KF_OK) fail_msg("%s", err.msg);
    kf_train_zero_grad(t);
    double loss = kf_train_distill_loss(kf_train_dlogits(t), kf_train_logits(t), b->teacher, b->targets, 1.0f, 0.5f,
                                        b->N, b->N, b->V, NULL, NULL);
    kf_train_backward(t);
    return loss;
}

static void write_work(const char *work, const batch *b) {
    char p[1200], json[256];
    snprintf(json, sizeof json, "{\"B\": %d, \"T\": %d, \"kl_weight\": 1.0, \"ce_weight\": 0.5, \"n_div\": %d}\n",
             b->B, b->T, b->N);
    write_text_file(work, "batch.json", json);
    snprintf(p, sizeof p, "%s/ids.bin", work);
    write_bytes(p, b->ids, sizeof(int32_t) * b->N);
    snprintf(p, sizeof p, "%s/targets.bin", work);
    write_bytes(p, b->targets, sizeof(int32_t) * b->N);
    snprintf(p, sizeof p, "%s/teacher.bin", work);
    write_bytes(p, b->teacher, sizeof(float) * (size_t)b->N * b->V);
}

static void run_ref(const char *model_dir, const char *work, const char *lora_dir) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 '%s/tests/ref/grad_ref.py' '%s' '%s'%s%s%s", kf_test_root(),
             model_dir, work, lora_dir ? " --lora '" : "", lora_dir ? lora_dir : "", lora_dir ? "'" : "");
    int rc = system(cmd);
    if (rc != 0) fail_msg("reference failed (status %d): %s", rc, cmd);
}

static double read_loss(const char *work) {
    char p[1200];
    snprintf(p, sizeof p, "%s/loss.txt", work);
    FILE *f = fopen(p, "r");
    assert_non_null(f);
    double v = NAN;
    assert_int_equal(fscanf(f, "%lf", &v), 1);
    fclose(f);
    return v;
}

// The folder the model is read from by the reference: the fixture's own, or m saved to a temporary one.
static void check_grads(kf_model *m, const char *model_dir, const char *label) {
    char work[64], gdir[1200];
    tmp_dir(work);
    batch b = make_batch(m, 2, 8, 99);
    kf_train *t;
    kf_error err;
    kf_train_opts o = {.mode = KF_TRAIN_ALL};
    if (kf_train_init(&t, m, b.B, b.T, &o, &err) != KF_OK) fail_msg("%s", err.msg);
    const double loss = loss_and_backward(t, &b);
    write_work(work, &b);
    run_ref(model_dir, work, NULL);
    const double loss_ref = read_loss(work);
    snprintf(gdir, sizeof gdir, "%s/grads", work);
    kf_model *ref;
    if (kf_model_load(&ref, gdir, &err) != KF_OK) fail_msg("%s", err.msg);

    const kf_model *g = kf_train_grads(t);
    int n_g = kf_model_list_tensors(g, NULL, 0), n_r = kf_model_list_tensors(ref, NULL, 0),
        n_m = kf_model_list_tensors(m, NULL, 0);
    assert_int_equal(n_g, n_m); // every parameter has a gradient
    assert_int_equal(n_r, n_m);
    kf_named_tensor *tg = calloc((size_t)n_g, sizeof *tg), *tr = calloc((size_t)n_r, sizeof *tr);
    kf_model_list_tensors(g, tg, n_g);
    kf_model_list_tensors(ref, tr, n_r);
    double worst = 0, g_max = 0;
    for (int i = 0; i < n_r; i++)
        for (int64_t j = 0; j < kf_tensor_nelem(tr[i].t); j++) g_max = fmax(g_max, fabs(tr[i].t->data[j]));
    for (int i = 0; i < n_g; i++) {
        assert_string_equal(tg[i].name, tr[i].name);
        const int64_t n = kf_tensor_nelem(tg[i].t);
        assert_int_equal(n, kf_tensor_nelem(tr[i].t));
        const double e = rel_err_floor(tg[i].t->data, tr[i].t->data, n, 1e-3 * g_max);
        if (e > GRAD_TOL) fail_msg("%s: gradient of %s off by %.3g (relative to its max)", label, tg[i].name, e);
        worst = fmax(worst, e);
    }
    printf("%s: loss %.9f vs %.9f; %d gradients, worst relative error %.3g\n", label, loss, loss_ref, n_g, worst);
    assert_true(fabs(loss - loss_ref) <= 1e-5 * fabs(loss_ref));
    free(tg), free(tr);
    kf_model_free(ref);
    kf_train_free(t);
    free_batch(&b);
    rm_tree(gdir);
    rm_tree(work);
}

static void test_grads_llama_gqa(void **state) {
    (void)state;
    kf_model *m = load_fixture("llama-gqa-bf16");
    char dir[1200];
    snprintf(dir, sizeof dir, "%s/tests/fixtures/models/llama-gqa-bf16", kf_test_root());
    assert_false(m->tied_head);
    assert_true(m->n_head_kv < m->n_head);
    check_grads(m, dir, "llama-gqa");
    kf_model_free(m);
}

static void test_grads_gpt2(void **state) {
    (void)state;
    kf_model *m = load_fixture("gpt2-tiny");
    char dir[1200];
    snprintf(dir, sizeof dir, "%s/tests/fixtures/models/gpt2-tiny", kf_test_root());
    check_grads(m, dir, "gpt2");
    kf_model_free(m);
}

static void test_grads_widths(void **state) {
    (void)state;
    kf_model *m = make_widths_model();
    char dir[64];
    tmp_dir(dir);
    kf_error err;
    if (kf_model_save(m, dir, &(kf_save_opts){.format = KF_FORMAT_HF}, &err) != KF_OK) fail_msg("%s", err.msg);
    check_grads(m, dir, "widths");
    rm_tree(dir);
    kf_model_free(m);
}

// ---- mixture-of-experts models ----------------------------------------------------------

static void alloc_random(kf_model *m, kf_tensor *t, int ndim, int64_t d0, int64_t d1, double std) {
    kf_error err;
    if (kf_model_alloc_tensor(m, t, ndim, (int64_t[]){d0, d1}, &err) != KF_OK) fail_msg("%s", err.msg);
    for (int64_t i = 0; i < kf_tensor_nelem(t); i++) t->data[i] = (float)(kf_rng_normal(kf_test_rng()) * std);
}

// Makes layer l a mixture of E experts with a random router of the given kind
// (MLP: Hr hidden units), selecting top_k (> 0) or by coverage.
static void make_moe_layer(kf_model *m, int l, int E, kf_router_kind kind, int Hr, int top_k, float coverage) {
    kf_layer *L = &m->layers[l];
    const int C = m->n_embd;
    L->n_expert = E, L->router = kind, L->top_k = top_k, L->coverage = coverage;
    if (kind == KF_ROUTER_ORACLE) return;
    const int O1 = kind == KF_ROUTER_MLP ? Hr : E;
    alloc_random(m, &L->router_w, 2, O1, C, 1.5 / sqrt((double)C));
    alloc_random(m, &L->router_b, 1, O1, 0, 0.3);
    if (kind != KF_ROUTER_MLP) return;
    alloc_random(m, &L->router_w2, 2, E, Hr, 2.0 / sqrt((double)Hr));
    alloc_random(m, &L->router_b2, 1, E, 0, 0.3);
}

// Llama, 3 layers of widths 24, 32, 16: 4 experts with a linear top-2 router,
// 8 experts with an MLP router at coverage 0.6, 4 experts with the oracle's top-2.
static kf_model *make_moe_llama(void) {
    static const int n_ff[] = {24, 32, 16};
    kf_synth_shape sh = {.n_vocab = 96, .n_embd = 32, .n_layer = 3, .n_head = 2, .n_head_kv = 1, .head_dim = 16,
                         .n_ctx_train = 64, .n_ff = n_ff, .norm_eps = 1e-5f, .rope_theta = 10000.0f};
    kf_model *m;
    kf_error err;
    if (kf_synth_llama(&sh, fill_random, NULL, &m, &err) != KF_OK) fail_msg("%s", err.msg);
    m->bos_id = 1;
    make_moe_layer(m, 0, 4, KF_ROUTER_LINEAR, 0, 2, 0);
    make_moe_layer(m, 1, 8, KF_ROUTER_MLP, 6, 0, 0.6f);
    make_moe_layer(m, 2, 4, KF_ROUTER_ORACLE, 0, 2, 0);
    return m;
}

// gpt2-tiny (FFN 128): 8 experts with a linear top-3 router, 4 experts with an MLP router at coverage 0.5.
static kf_model *make_moe_gpt2(void) {
    kf_model *m = load_fixture("gpt2-tiny");
    kf_error err;
    if (kf_model_load_to_memory(m, &err) != KF_OK) fail_msg("%s", err.msg);
    make_moe_layer(m, 0, 8, KF_ROUTER_LINEAR, 0, 3, 0);
    make_moe_layer(m, 1, 4, KF_ROUTER_MLP, 5, 0, 0.5f);
    return m;
}

static bool is_router(const char *name) { return strstr(name, ".router_") != NULL; }

// --train router: the parameters are the routers' tensors, and their gradients
// are those of all-weights training on the same batch.
static void check_router_mode(kf_model *m, const char *label) {
    batch b = make_batch(m, 2, 8, 99);
    kf_train *ta, *tr;
    kf_error err;
    if (kf_train_init(&ta, m, b.B, b.T, &(kf_train_opts){.mode = KF_TRAIN_ALL}, &err) != KF_OK ||
        kf_train_init(&tr, m, b.B, b.T, &(kf_train_opts){.mode = KF_TRAIN_ROUTER}, &err) != KF_OK)
        fail_msg("%s", err.msg);
    loss_and_backward(ta, &b);
    loss_and_backward(tr, &b);
    int na, nr, n_routers = 0;
    kf_param *pa = kf_train_params(ta, &na), *pr = kf_train_params(tr, &nr);
    double g_router = 0, g_all = 0;
    for (int i = 0; i < na; i++) {
        for (int64_t j = 0; j < pa[i].n; j++) g_all = fmax(g_all, fabs(pa[i].g[j]));
        if (!is_router(pa[i].name)) continue;
        assert_true(n_routers < nr);
        assert_string_equal(pr[n_routers].name, pa[i].name);
        assert_int_equal(pr[n_routers].n, pa[i].n);
        assert_true(rel_err(pr[n_routers].g, pa[i].g, pa[i].n) < 1e-6);
        for (int64_t j = 0; j < pa[i].n; j++) g_router = fmax(g_router, fabs(pa[i].g[j]));
        n_routers++;
    }
    assert_int_equal(n_routers, nr);
    printf("%s: --train router: %d router tensors, largest router gradient %.3g of the model's %.3g\n", label, nr,
           g_router, g_all);
    assert_true(g_router > 1e-2 * g_all); // the routers' gradients are well above check_grads' floor
    kf_train_free(ta);
    kf_train_free(tr);
    free_batch(&b);
}

static void check_moe(kf_model *m, const char *label) {
    char dir[64];
    tmp_dir(dir);
    kf_error err;
    if (kf_model_save(m, dir, &(kf_save_opts){.format = KF_FORMAT_HF}, &err) != KF_OK) fail_msg("%s", err.msg);
    check_grads(m, dir, label);
    check_router_mode(m, label);
    rm_tree(dir);
}

static void test_grads_moe_llama(void **state) {
    (void)state;
    kf_model *m = make_moe_llama();
    check_moe(m, "moe-llama");
    kf_model_free(m);
}

static void test_grads_moe_gpt2(void **state) {
    (void)state;
    kf_model *m = make_moe_gpt2();
    check_moe(m, "moe-gpt2");
    kf_model_free(m);
}

// ---- recomputed activations ---------------------------------------------------------

// Under a max_memory between the recomputed and the kept workspace, the
// gradients equal those of the run that keeps every layer's activations;
// a cap below the recomputed workspace fails at init and says what it needs.
static void check_recompute(kf_model *m, const char *label) {
    batch b = make_batch(m, 2, 8, 123);
    kf_train *tk, *tr;
    kf_error err;
    const kf_train_opts ok = {.mode = KF_TRAIN_ALL};
    if (kf_train_init(&tk, m, b.B, b.T, &ok, &err) != KF_OK) fail_msg("%s", err.msg);
    const int64_t kept = kf_train_workspace_bytes(tk);
    assert_false(kf_train_recomputes(tk));
    kf_train_opts capped = ok;
    capped.max_memory = (uint64_t)kept - 1;
    if (kf_train_init(&tr, m, b.B, b.T, &capped, &err) != KF_OK) fail_msg("%s", err.msg);
    assert_true(kf_train_recomputes(tr));
    const int64_t small = kf_train_workspace_bytes(tr);
    assert_true(small < kept);
    double lk = loss_and_backward(tk, &b), lr = loss_and_backward(tr, &b);
    assert_true(lk == lr);
    int nk, nr;
    kf_param *pk = kf_train_params(tk, &nk), *pr = kf_train_params(tr, &nr);
    assert_int_equal(nk, nr);
    double worst = 0;
    for (int i = 0; i < nk; i++) worst = fmax(worst, rel_err(pr[i].g, pk[i].g, pk[i].n));
    printf("%s: workspace %lld bytes kept, %lld recomputed; gradients' largest relative difference %.2e\n", label,
           (long long)kept, (long long)small, worst);
    assert_true(worst < 1e-6);
    kf_train_free(tk);
    kf_train_free(tr);
    capped.max_memory = (uint64_t)small - 1;
    assert_int_equal(kf_train_init(&tr, m, b.B, b.T, &capped, &err), KF_ERR_ARG);
    assert_non_null(strstr(err.msg, "recomputed layer by layer"));
    free_batch(&b);
}

static void test_recompute(void **state) {
    (void)state;
    kf_model *models[] = {make_widths_model(), make_moe_llama(), make_moe_gpt2()};
    const char *labels[] = {"widths", "moe-llama", "moe-gpt2"};
    for (int i = 0; i < 3; i++) {
        check_recompute(models[i], labels[i]);
        kf_model_free(models[i]);
    }
}

// ---- forward equals prefill ------------------------------------------------------------

static void check_forward(kf_model *m, const char *label) {
    const int B = 2, T = 16, N = B * T, V = m->n_vocab;
    int32_t *ids = malloc(sizeof(int32_t) * N);
    kf_test_random_ids(ids, N, 0, V, 7);
    kf_ctx *c;
    kf_error err;
    if (kf_ctx_init(&c, m, N, 0, &err) != KF_OK) fail_msg("%s", err.msg);
    float *want = malloc(sizeof(float) * (size_t)N * V);
    if (kf_forward_prefill(c, ids, B, T, want, &err) != KF_OK) fail_msg("%s", err.msg);
    kf_train *t;
    kf_train_opts o = {.mode = KF_TRAIN_FFN};
    if (kf_train_init(&t, m, B, T, &o, &err) != KF_OK) fail_msg("%s", err.msg);
    if (kf_train_forward(t, ids, &err) != KF_OK) fail_msg("%s", err.msg);
    const float *got = kf_train_logits(t);
    double d = 0;
    for (int64_t i = 0; i < (int64_t)N * V; i++) d = fmax(d, fabs((double)got[i] - want[i]));
    printf("%s: training forward vs prefill: max |dlogit| %.3g\n", label, d);
    if (d > LOGIT_TOL) fail_msg("%s: training logits differ from prefill by %g", label, d);
    kf_train_free(t);
    kf_ctx_free(c);
    free(want), free(ids);
}

static void test_forward_matches_prefill(void **state) {
    (void)state;
    kf_model *m = load_fixture("llama-gqa-bf16");
    check_forward(m, "llama-gqa");
    kf_model_free(m);
    m = load_fixture("gpt2-tiny");
    check_forward(m, "gpt2");
    kf_model_free(m);
    m = make_widths_model();
    check_forward(m, "widths");
    kf_model_free(m);
    m = make_moe_llama();
    check_forward(m, "moe-llama");
    kf_model_free(m);
    m = make_moe_gpt2();
    check_forward(m, "moe-gpt2");
    kf_model_free(m);
}

// ---- LoRA -------------------------------------------------------------------------------

static void check_lora(kf_model *m, const char *model_dir, const char *label) {
    char work[64], adir[64];
    tmp_dir(work);
    tmp_dir(adir);
    batch b = make_batch(m, 2, 8, 5);
    kf_train *t;
    kf_error err;
    kf_train_opts o = {.mode = KF_TRAIN_LORA, .lora_rank = 3, .lora_alpha = 6, .seed = 11};
    if (kf_train_init(&t, m, b.B, b.T, &o, &err) != KF_OK) fail_msg("%s", err.msg);
    // B starts at zero (no change to the model); make it random so every path carries gradient
    int n_slots = 0;
    for (int l = 0; l < m->n_layer; l++)
        for (int w = 0; w < KF_LIN_COUNT; w++) {
            float *A, *Bm;
            int in, out;
            if (!kf_train_lora_get(t, l, (kf_lin)w, &A, &Bm, &in, &out)) continue;
            for (int64_t i = 0; i < (int64_t)out * 3; i++) Bm[i] = (float)(kf_rng_normal(kf_test_rng()) * 0.3);
            n_slots++;
        }
    assert_true(n_slots >= 3 * m->n_layer);
    loss_and_backward(t, &b);
    if (kf_train_lora_save_peft(t, adir, model_dir, &err) != KF_OK) fail_msg("%s", err.msg);
    write_work(work, &b);
    run_ref(model_dir, work, adir);
    char p[1200];
    snprintf(p, sizeof p, "%s/lora_grads.safetensors", work);
    kf_st_set st = {0};
    if (kf_st_set_add_file(&st, p, &err) != KF_OK || kf_st_set_index(&st, &err) != KF_OK) fail_msg("%s", err.msg);
    int n_params, n_checked = 0;
    kf_param *ps = kf_train_params(t, &n_params);
    double worst = 0;
    for (int l = 0; l < m->n_layer; l++)
        for (int w = 0; w < KF_LIN_COUNT; w++) {
            float *A, *Bm;
            int in, out;
            if (!kf_train_lora_get(t, l, (kf_lin)w, &A, &Bm, &in, &out)) continue;
            for (int which = 0; which < 2; which++) {
                char key[200];
                kf_train_lora_peft_key(m, l, (kf_lin)w, which, key, sizeof key);
                const kf_st_tensor *rt = kf_st_set_find(&st, key);
                if (!rt) fail_msg("%s: reference has no %s", label, key);
                const float *mine = NULL;
                for (int i = 0; i < n_params; i++)
                    if (ps[i].w == (which ? Bm : A)) mine = ps[i].g;
                assert_non_null(mine);
                assert_int_equal(rt->nelem, which ? (int64_t)out * 3 : (int64_t)3 * in);
                const double e = rel_err(mine, rt->data, rt->nelem);
                if (e > GRAD_TOL) fail_msg("%s: gradient of %s off by %.3g", label, key, e);
                worst = fmax(worst, e);
                n_checked++;
            }
        }
    assert_int_equal(n_checked, n_params);
    printf("%s: %d LoRA gradients, worst relative error %.3g\n", label, n_checked, worst);
    kf_st_set_free(&st);

    // merged model alone = adapted model
    if (kf_train_forward(t, b.ids, &err) != KF_OK) fail_msg("%s", err.msg);
    float *adapted = malloc(sizeof(float) * (size_t)b.N * b.V);
    memcpy(adapted, kf_train_logits(t), sizeof(float) * (size_t)b.N * b.V);
    if (kf_train_lora_merge(t, &err) != KF_OK) fail_msg("%s", err.msg);
    kf_ctx *c;
    if (kf_ctx_init(&c, m, b.N, 0, &err) != KF_OK) fail_msg("%s", err.msg);
    float *merged = malloc(sizeof(float) * (size_t)b.N * b.V);
    if (kf_forward_prefill(c, b.ids, b.B, b.T, merged, &err) != KF_OK) fail_msg("%s", err.msg);
    double d = 0;
    for (int64_t i = 0; i < (int64_t)b.N * b.V; i++) d = fmax(d, fabs((double)merged[i] - adapted[i]));
    printf("%s: merged vs adapted max |dlogit| %.3g\n", label, d);
    assert_true(d < 1e-4);
    kf_ctx_free(c);
    free(adapted), free(merged);
    kf_train_free(t);
    free_batch(&b);
    snprintf(p, sizeof p, "%s/grads", work);
    rm_tree(work);
    rm_tree(adir);
}

static void test_lora_llama(void **state) {
    (void)state;
    kf_model *m = load_fixture("llama-gqa-bf16");
    char dir[1200];
    snprintf(dir, sizeof dir, "%s/tests/fixtures/models/llama-gqa-bf16", kf_test_root());
    check_lora(m, dir, "llama-gqa lora");
    kf_model_free(m);
}

static void test_lora_gpt2(void **state) {
    (void)state;
    kf_model *m = load_fixture("gpt2-tiny");
    char dir[1200];
    snprintf(dir, sizeof dir, "%s/tests/fixtures/models/gpt2-tiny", kf_test_root());
    check_lora(m, dir, "gpt2 lora");
    kf_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matmul_kernels),     cmocka_unit_test(test_attention_kernels),
        cmocka_unit_test(test_forward_matches_prefill), cmocka_unit_test(test_grads_llama_gqa),
        cmocka_unit_test(test_grads_gpt2),         cmocka_unit_test(test_grads_widths),
        cmocka_unit_test(test_lora_llama),         cmocka_unit_test(test_lora_gpt2),
        cmocka_unit_test(test_moe_gate_kernels),   cmocka_unit_test(test_grads_moe_llama),
        cmocka_unit_test(test_grads_moe_gpt2),     cmocka_unit_test(test_recompute),
    };
    return kf_test_status(cmocka_run_group_tests(tests, NULL, NULL));
}
