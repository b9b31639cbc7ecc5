// kfuse specialise (src/specialise/): importance statistics against numpy
// (tests/ref/specialise_ref.py), the first-order ablation estimate against
// PyTorch autograd (same file), the task probe's first-order estimate
// (kf_spec_task_first_order) against autograd, overlap and its permutation null on planted
// sets, expert concentration, and on a synthetic model with one planted
// neuron that only one dataset uses: selective pruning for that dataset
// removes it first and hurts that dataset only.
// ctest-timeout: 120
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "calib/calib.h"
#include "io/load.h"
#include "specialise/ablate.h"
#include "specialise/sets.h"
#include "specialise/specialise.h"
#include "specialise/task.h"
#include "synth_model.h"
#include "test_util.h"

// ---- importance against numpy ---------------------------------------------------

static void npy_save(const char *path, const char *descr, const void *data, size_t elem, int rows, int cols) {
    char dict[128];
    int n = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (%d, %d), }", descr, rows,
                     cols);
    int pad = (64 - (10 + n + 1) % 64) % 64;
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    unsigned hl = (unsigned)(n + pad + 1);
    unsigned char head[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(hl & 0xFF), (unsigned char)(hl >> 8)};
    fwrite(head, 1, 10, f);
    fwrite(dict, 1, (size_t)n, f);
    for (int i = 0; i < pad; i++) fputc(' ', f);
    fputc('\n', f);
    fwrite(data, elem, (size_t)rows * cols, f);
    assert_int_equal(fclose(f), 0);
}

static void test_importance_numpy(void **state) {
    (void)state;
    if (access("/usr/bin/python3", X_OK) != 0) {
        kf_test_skip("/usr/bin/python3 not found (scripts/install-deps.sh --test installs it with numpy)");
        return;
    }
    // two layers of 37 and 20 neurons, 500 tokens in 7 chunks; activations
    // with negatives, exact zeros and positives
    enum { T = 500, C = 7, F0 = 37, F1 = 20 };
    kf_layer layers[2] = {{.n_ff = F0}, {.n_ff = F1}};
    kf_model m = {.n_layer = 2, .layers = layers};
    kf_spec_acts a;
    kf_error err = {0};
    assert_int_equal(kf_spec_acts_init(&a, &m, C, &err), KF_OK);
    static float x0[T * F0], x1[T * F1];
    static int32_t chunk[T];
    for (int t = 0; t < T; t++) chunk[t] = t * C / T;
    for (int i = 0; i < T * F0; i++) x0[i] = kf_rng_uniform(kf_test_rng()) < 0.2 ? 0.0f : (float)kf_test_urand() * 3;
    for (int i = 0; i < T * F1; i++) x1[i] = (float)(kf_rng_normal(kf_test_rng()) - 0.3);
    for (int t = 0; t < T;) { // rows go in as runs of one chunk, as windows do
        int e = t;
        while (e < T && chunk[e] == chunk[t]) e++;
        kf_spec_acts_add(&a, 0, chunk[t], x0 + (int64_t)t * F0, e - t);
        kf_spec_acts_add(&a, 1, chunk[t], x1 + (int64_t)t * F1, e - t);
        kf_spec_acts_count(&a, chunk[t], e - t);
        t = e;
    }
    double w[C], out[2 * KF_IMP_COUNT][F0 + F1];
    for (int c = 0; c < C; c++) w[c] = kf_rng_below(kf_test_rng(), 4);
    for (int k = 0; k < KF_IMP_COUNT; k++) {
        kf_spec_acts_importance(&a, (kf_imp_kind)k, NULL, out[k]);
        kf_spec_acts_importance(&a, (kf_imp_kind)k, w, out[KF_IMP_COUNT + k]);
    }
    kf_spec_acts_free(&a);
    char dir[] = "/tmp/kf_spec_XXXXXX", path[256], cmd[1024];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/x0.npy", dir), npy_save(path, "<f4", x0, 4, T, F0);
    snprintf(path, sizeof path, "%s/x1.npy", dir), npy_save(path, "<f4", x1, 4, T, F1);
    snprintf(path, sizeof path, "%s/chunk.npy", dir), npy_save(path, "<i4", chunk, 4, T, 1);
    snprintf(path, sizeof path, "%s/w.npy", dir), npy_save(path, "<f8", w, 8, C, 1);
    snprintf(path, sizeof path, "%s/imp.npy", dir), npy_save(path, "<f8", out, 8, 2 * KF_IMP_COUNT, F0 + F1);
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 '%s/tests/ref/specialise_ref.py' importance '%s'", kf_test_root(), dir);
    int rc = system(cmd);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(rc, 0);
}

// ---- first-order estimate against PyTorch autograd ------------------------------------

static void first_order_case(const char *name, int ctx, int bos, int batch, int n_ids) {
    char mdir[1200], dir[] = "/tmp/kf_spec_fo_XXXXXX", path[256], cmd[2600];
    snprintf(mdir, sizeof mdir, "%s/tests/fixtures/models/%s", kf_test_root(), name);
    kf_model *m;
    kf_error err = {0};
    if (kf_model_load(&m, mdir, &err) != KF_OK) fail_msg("%s", err.msg);
    int32_t *ids = malloc(sizeof *ids * (size_t)n_ids);
    kf_test_random_ids(ids, n_ids, 2, m->n_vocab, 21);
    int64_t N = 0;
    for (int l = 0; l < m->n_layer; l++) N += m->layers[l].n_ff;
    double *fo = malloc(sizeof *fo * (size_t)N);
    kf_calib_protocol p = kf_calib_protocol_make(ctx, bos);
    p.batch = batch; // n_ids / ctx windows: the last batch is partial
    assert_int_equal(kf_spec_first_order(m, ids, n_ids, &p, fo, &err), KF_OK);
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/ids.npy", dir), npy_save(path, "<i4", ids, 4, n_ids, 1);
    snprintf(path, sizeof path, "%s/fo.npy", dir), npy_save(path, "<f8", fo, 8, 1, (int)N);
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 '%s/tests/ref/specialise_ref.py' first-order '%s' '%s' %d %d",
             kf_test_root(), mdir, dir, ctx, bos);
    int rc = system(cmd);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(rc, 0);
    free(ids), free(fo);
    kf_model_free(m);
}

static void test_first_order_torch(void **state) {
    (void)state;
    if (access("/usr/bin/python3", X_OK) != 0) {
        kf_test_skip("/usr/bin/python3 not found (scripts/install-deps.sh --test installs it with torch)");
        return;
    }
    // 5 windows in batches of 2 (the last one partial); GPT-2 with BOS, Llama (BF16, GQA) without
    first_order_case("gpt2-tiny", 16, 1, 2, 5 * 16 + 7);
    first_order_case("llama-gqa-bf16", 12, -1, 2, 5 * 12 + 3);
}

// ---- task probe's first-order estimate against PyTorch autograd ------------------

static void task_first_order_case(const char *name, int n_sent, int s0, uint64_t seed) {
    char mdir[1200], dir[] = "/tmp/kf_spec_tfo_XXXXXX", path[256], cmd[2600];
    snprintf(mdir, sizeof mdir, "%s/tests/fixtures/models/%s", kf_test_root(), name);
    kf_model *m;
    kf_error err = {0};
    if (kf_model_load(&m, mdir, &err) != KF_OK) fail_msg("%s", err.msg);
    enum { K = 5 };
    const int C = m->n_embd, max_len = m->n_ctx_train > 0 && m->n_ctx_train < 60 ? m->n_ctx_train : 60;
    kf_rng r;
    kf_rng_seed(&r, seed);
    // sentences of 3 .. max_len tokens (three length buckets, partial batches),
    // BOS first, items of 1-3 sub-words from position 1
    kf_task_tokens t = {.n_sent = n_sent};
    t.tok_off = calloc((size_t)n_sent + 1, sizeof *t.tok_off);
    t.item_off = calloc((size_t)n_sent + 1, sizeof *t.item_off);
    int *len = malloc(sizeof *len * (size_t)n_sent);
    for (int i = 0; i < n_sent; i++) {
        len[i] = 3 + (int)kf_rng_below(&r, max_len - 2);
        t.tok_off[i + 1] = t.tok_off[i] + len[i];
    }
    t.tokens = malloc(sizeof *t.tokens * (size_t)t.tok_off[n_sent]);
    t.span = malloc(sizeof *t.span * 2 * (size_t)t.tok_off[n_sent]);
    int32_t *y = malloc(sizeof *y * (size_t)t.tok_off[n_sent]);
    kf_test_random_ids(t.tokens, (int)t.tok_off[n_sent], 3, m->n_vocab, seed + 1);
    for (int i = 0; i < n_sent; i++) {
        t.tokens[t.tok_off[i]] = 1;
        int64_t k = t.item_off[i];
        for (int pos = 1; pos < len[i];) {
            const int w = 1 + (int)kf_rng_below(&r, 3), end = pos + w < len[i] ? pos + w : len[i];
            t.span[2 * k] = pos, t.span[2 * k + 1] = end;
            y[k++] = (int32_t)kf_rng_below(&r, K);
            pos = end;
        }
        t.item_off[i + 1] = k;
        if (len[i] > t.max_len) t.max_len = len[i];
    }
    t.n_items = t.item_off[n_sent];
    // a probe with random weights: the estimate's gradient, not the probe's training, is under test
    kf_spec_probe pr = {.dim = C, .lr = {.n_classes = K, .dim = C}};
    pr.lr.w = malloc(sizeof(float) * K * (size_t)C), pr.lr.b = malloc(sizeof(float) * K);
    pr.mean = malloc(sizeof(float) * (size_t)C), pr.inv_sd = malloc(sizeof(float) * (size_t)C);
    for (int i = 0; i < K * C; i++) pr.lr.w[i] = (float)kf_rng_normal(&r);
    for (int k = 0; k < K; k++) pr.lr.b[k] = (float)(0.5 * kf_rng_normal(&r));
    for (int c = 0; c < C; c++) pr.mean[c] = (float)(0.1 * kf_rng_normal(&r)), pr.inv_sd[c] = (float)(0.5 + kf_rng_uniform(&r));
    int64_t N = 0;
    for (int l = 0; l < m->n_layer; l++) N += m->layers[l].n_ff;
    double *fo = malloc(sizeof *fo * (size_t)N), loss = 0;
    const kf_spec_task_part part = {.tok = &t, .y = y, .s0 = s0, .s1 = n_sent};
    assert_int_equal(kf_spec_task_first_order(m, &part, &pr, fo, &loss, &err), KF_OK);
    assert_non_null(mkdtemp(dir));
    int32_t *off = malloc(sizeof *off * 2 * ((size_t)n_sent + 1));
    for (int i = 0; i <= n_sent; i++) off[2 * i] = (int32_t)t.tok_off[i], off[2 * i + 1] = (int32_t)t.item_off[i];
    snprintf(path, sizeof path, "%s/tokens.npy", dir), npy_save(path, "<i4", t.tokens, 4, (int)t.tok_off[n_sent], 1);
    snprintf(path, sizeof path, "%s/off.npy", dir), npy_save(path, "<i4", off, 4, n_sent + 1, 2);
    snprintf(path, sizeof path, "%s/span.npy", dir), npy_save(path, "<i4", t.span, 4, (int)t.n_items, 2);
    snprintf(path, sizeof path, "%s/y.npy", dir), npy_save(path, "<i4", y, 4, (int)t.n_items, 1);
    snprintf(path, sizeof path, "%s/w.npy", dir), npy_save(path, "<f4", pr.lr.w, 4, K, C);
    snprintf(path, sizeof path, "%s/b.npy", dir), npy_save(path, "<f4", pr.lr.b, 4, K, 1);
    snprintf(path, sizeof path, "%s/mean.npy", dir), npy_save(path, "<f4", pr.mean, 4, C, 1);
    snprintf(path, sizeof path, "%s/inv_sd.npy", dir), npy_save(path, "<f4", pr.inv_sd, 4, C, 1);
    snprintf(path, sizeof path, "%s/fo.npy", dir), npy_save(path, "<f8", fo, 8, 1, (int)N);
    snprintf(path, sizeof path, "%s/loss.npy", dir), npy_save(path, "<f8", &loss, 8, 1, 1);
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 '%s/tests/ref/specialise_ref.py' task-first-order '%s' '%s' %d",
             kf_test_root(), mdir, dir, s0);
    int rc = system(cmd);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(rc, 0);
    kf_spec_probe_free(&pr);
    free(fo), free(off), free(y), free(len);
    kf_task_tokens_free(&t);
    kf_model_free(m);
}

static void test_task_first_order_torch(void **state) {
    (void)state;
    if (access("/usr/bin/python3", X_OK) != 0) {
        kf_test_skip("/usr/bin/python3 not found (scripts/install-deps.sh --test installs it with torch)");
        return;
    }
    // sentences 3 .. 60 tokens: buckets T = 16, 32, 64, the first 4 sentences outside the part
    task_first_order_case("gpt2-tiny", 150, 4, 31);
    task_first_order_case("llama-gqa-bf16", 150, 4, 32);
}

static void test_spearman(void **state) {
    (void)state;
    const double x[4] = {1, 2, 3, 4}, y[4] = {1, 3, 2, 4}, xt[4] = {1, 1, 2, 3}, c[4] = {2, 2, 2, 2};
    assert_true(fabs(kf_spec_spearman(x, y, 4) - 0.8) < 1e-15);
    // ties at their average rank (scipy.stats.spearmanr: 0.9486832980505138)
    assert_true(fabs(kf_spec_spearman(xt, x, 4) - 0.9486832980505138) < 1e-15);
    assert_true(isnan(kf_spec_spearman(x, c, 4)) && isnan(kf_spec_spearman(x, y, 1)));
}

// ---- sets ----------------------------------------------------------------------

static void test_overlap_planted(void **state) {
    (void)state;
    enum { N = 100 };
    int32_t a[20], b[20];
    uint8_t mark[N] = {0};
    for (int i = 0; i < 20; i++) a[i] = i, b[i] = 10 + i; // |A ∩ B| = 10, |A ∪ B| = 30
    int in = kf_spec_intersect(a, 20, b, 20, mark);
    assert_int_equal(in, 10);
    assert_true(fabs(kf_spec_iou(in, 20, 20) - 10.0 / 30) < 1e-15);
    for (int i = 0; i < N; i++) assert_int_equal(mark[i], 0);
    // the null: E|A ∩ B| = ka kb / n = 4 for random 20-sets of 100 (hypergeometric),
    // so the planted overlap of 10 is far out and an overlap of 4 is typical
    kf_rng r;
    kf_rng_seed(&r, 7);
    const int draws = 20000;
    kf_spec_null nu = kf_spec_overlap_null(N, 20, 20, 10.0 / 30, draws, &r);
    // IoU = I / (40 - I) is convex in I; its mean from the exact hypergeometric law
    double mean = 0, pmf_sum = 0;
    for (int i = 0; i <= 20; i++) {
        // P(I = i) = C(20, i) C(80, 20 - i) / C(100, 20)
        double lp = lgamma(21) - lgamma(i + 1) - lgamma(21 - i) + lgamma(81) - lgamma(20 - i + 1) - lgamma(61 + i) -
                    (lgamma(101) - lgamma(21) - lgamma(81));
        mean += exp(lp) * i / (40.0 - i);
        pmf_sum += exp(lp);
    }
    assert_true(fabs(pmf_sum - 1) < 1e-9);
    printf("null mean %.5f (exact %.5f), q95 %.4f, p(planted) %.5f\n", nu.mean, mean, nu.q95, nu.p);
    assert_true(fabs(nu.mean - mean) < 0.003); // Monte Carlo SE ~ 0.0004
    assert_true(nu.p < 0.001);
    kf_rng_seed(&r, 7);
    kf_spec_null typical = kf_spec_overlap_null(N, 20, 20, 4.0 / 36, draws, &r);
    assert_true(typical.p > 0.3 && typical.p < 0.8);
    assert_true(nu.q95 > 4.0 / 36 && nu.q95 < 10.0 / 30);
}

static void test_top_k_and_concentration(void **state) {
    (void)state;
    double v[8] = {0.5, 2, 2, -1, 7, 0, 3, 2};
    int32_t idx[4];
    kf_spec_ranked scratch[8];
    kf_spec_top_k(v, 8, 4, idx, scratch);
    const int32_t want[4] = {4, 6, 1, 2}; // ties to the lower index
    for (int i = 0; i < 4; i++) assert_int_equal(idx[i], want[i]);
    // 12 neurons, 4 experts of 3
    int32_t expert_of[12], set[6] = {0, 1, 2, 3, 6, 9};
    for (int j = 0; j < 12; j++) expert_of[j] = j / 3;
    int counts[4];
    double share, ent;
    kf_spec_concentration(set, 3, expert_of, 4, 1, counts, &share, &ent); // {0,1,2}: one expert
    assert_true(share == 1 && ent == 0);
    kf_spec_concentration(set + 2, 4, expert_of, 4, 1, counts, &share, &ent); // {2,3,6,9}: one per expert
    assert_true(share == 0.25 && fabs(ent - 1) < 1e-12);
    kf_spec_concentration(set, 6, expert_of, 4, 2, counts, &share, &ent); // 3,1,1,1: best two hold 4 of 6
    assert_true(fabs(share - 4.0 / 6) < 1e-12);
    double h = -(0.5 * log(0.5) + 3 * (1.0 / 6) * log(1.0 / 6)) / log(4.0);
    assert_true(fabs(ent - h) < 1e-12);
}

// ---- the planted neuron -------------------------------------------------------------

enum { V = 64, CE = 32, FF = 48, X = 5, Y = 7, J = 13, BOS = 1, TOK = 4096 };

static void fill_random(kf_tensor *t, bool norm, void *user) {
    kf_rng *r = user;
    int64_t n = kf_tensor_nelem(t);
    for (int64_t i = 0; i < n; i++) t->data[i] = norm ? 1.0f : (float)(0.1 * kf_rng_normal(r));
}

// One layer; residual dimension 0 carries only "the token is X" (set by
// the embedding; nothing else writes it). Neuron J reads dimension 0 alone,
// so it is exactly silent on any text without X, and writes the direction
// the head reads as "next token is Y". Dataset A always follows X by Y.
static kf_model *planted_model(void) {
    kf_rng r;
    kf_rng_seed(&r, 3);
    const int n_ff[1] = {FF};
    kf_synth_shape sh = {.n_vocab = V, .n_embd = CE, .n_layer = 1, .n_head = 4, .n_head_kv = 2, .head_dim = 8,
                         .n_ctx_train = 256, .n_ff = n_ff, .norm_eps = 1e-5f, .rope_theta = 10000};
    kf_model *m;
    kf_error err = {0};
    assert_int_equal(kf_synth_llama(&sh, fill_random, &r, &m, &err), KF_OK);
    kf_layer *L = &m->layers[0];
    for (int v = 0; v < V; v++) m->tok_embd.data[v * CE] = v == X ? 4.0f : 0.0f;
    for (int c = 0; c < L->wo.ne[1]; c++) L->wo.data[c] = 0; // wo row 0
    for (int j = 0; j < FF; j++) L->w_down.data[j] = 0;       // w_down row 0
    float u[CE] = {0};
    double nu = 0;
    for (int c = 1; c < CE; c++) u[c] = (float)kf_rng_normal(&r), nu += u[c] * u[c];
    for (int c = 1; c < CE; c++) u[c] /= (float)sqrt(nu);
    for (int c = 0; c < CE; c++) {
        L->w_gate.data[J * CE + c] = c == 0 ? 3.0f : 0.0f;
        L->w_up.data[J * CE + c] = c == 0 ? 3.0f : 0.0f;
        L->w_down.data[c * FF + J] = 2.0f * u[c];
        m->lm_head.data[Y * CE + c] = 4.0f * u[c];
    }
    return m;
}

static void test_planted_neuron(void **state) {
    (void)state;
    kf_model *m = planted_model();
    int32_t *a = malloc(sizeof *a * TOK * 2), *b = malloc(sizeof *b * TOK * 2);
    kf_test_random_ids(a, TOK * 2, 10, V, 11);
    kf_test_random_ids(b, TOK * 2, 10, V, 12);
    for (int t = 2; t + 1 < TOK * 2; t += 4) a[t] = X, a[t + 1] = Y;
    for (int t = 0; t < TOK * 2; t++) assert_true(b[t] != X);
    kf_spec_data data[2] = {{"A", a, TOK * 2, NULL}, {"B", b, TOK * 2, NULL}};
    kf_spec_opts o;
    kf_spec_opts_default(&o);
    const double fracs[1] = {0.02}; // one neuron of 48
    o.fracs = fracs;
    o.n_frac = 1;
    o.ctx = 64;
    o.bos_id = BOS;
    o.tokens = TOK;
    o.eval_tokens = TOK;
    o.n_boot = 20;
    o.n_null = 200;
    o.ablate_top = 2;
    kf_spec_result r;
    kf_error err = {0};
    assert_int_equal(kf_spec_run(m, data, 2, &o, &r, &err), KF_OK);
    // J is silent on B and the most A-specific neuron
    assert_true(r.importance[FF + J] == 0);
    assert_true(r.importance[J] > 0);
    int32_t top;
    double ratio[FF];
    kf_spec_ranked scratch[FF];
    kf_spec_specific(r.importance, r.importance + FF, FF, 1, &top, ratio, scratch);
    assert_int_equal(top, J);
    assert_int_equal(r.n_removed[0], 1);
    // removing it hurts A (Y after X is no longer predicted) and leaves B exactly as it was
    const double dA = r.sel_focus[(0 * 2 + 1) * 1] - r.base_loss[0], dB = r.sel_retain[(0 * 2 + 1) * 1] - r.base_loss[1];
    printf("planted: base A %.4f B %.4f; A-specific removed: dA %.4f dB %.2e; random: dA %.4f\n", r.base_loss[0],
           r.base_loss[1], dA, dB, r.rand_mean[0] - r.base_loss[0]);
    assert_true(dA > 0.05);
    assert_true(fabs(dB) < 1e-6);
    // removing one random neuron costs A far less
    assert_true(r.rand_mean[0] - r.base_loss[0] < 0.25 * dA);
    // J is also A's most important neuron; its measured ablation is the same removal
    assert_int_equal(r.ablate_idx[0], J);
    assert_true(fabs(r.ablate_dloss[0] - dA) < 1e-12);
    // the first-order estimate is exactly 0 where J is silent (B); on A it
    // misses J: A's Y after X is predicted with p ~ 1, the loss is flat in a_J
    // there (a saturated softmax), and zeroing J is far from a small step
    printf("planted: first-order estimate of J on A %.3e (measured %.4f)\n", r.first_order[J], dA);
    assert_true(r.first_order[FF + J] == 0);
    assert_true(fabs(r.first_order[J]) < 0.01 * dA);
    kf_spec_result_free(&r);
    free(a);
    free(b);
    kf_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_importance_numpy),
        cmocka_unit_test(test_first_order_torch),
        cmocka_unit_test(test_task_first_order_torch),
        cmocka_unit_test(test_spearman),
        cmocka_unit_test(test_overlap_planted),
        cmocka_unit_test(test_top_k_and_concentration),
        cmocka_unit_test(test_planted_neuron),
    };
    return kf_test_status(cmocka_run_group_tests(tests, NULL, NULL));
}
