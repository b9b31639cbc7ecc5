// calib/: the one calibration protocol. On the shipped 1.4m model, the hook
// at the first block's input sees, row by row, the embedding of the token the
// protocol says: each window's first token replaced by BOS, the rest the
// text's; whole windows only, at most max_tokens of them, batch windows per
// call; ranks share the batches round-robin and together run every window
// once; a callback stops the run; the logits handed back are those of the
// windows as run; the checks and the one-line protocol mismatch. kf_analyze_run
// records under the same protocol: with BOS its statistics are those of the
// text with BOS written into every window, the statistics file says so, and
// no top context is a window's first (BOS) position.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "analyze/pipeline.h"
#include "calib/calib.h"
#include "io/load.h"
#include "model/model.h"
#include "runtime/forward.h"
#include "test_util.h"

#define CTX 16
#define N_WIN 7
#define N_IDS (CTX * N_WIN + 5) // a partial window at the end is not run
#define BOS 1

static kf_model *g_m;

static int setup(void **state) {
    (void)state;
    char path[1024];
    snprintf(path, sizeof path, "%s/models/llama-gutenberg-1.4m", kf_test_root());
    kf_error err = {0};
    if (kf_model_load(&g_m, path, &err) != KF_OK) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    return 0;
}

static int teardown(void **state) {
    (void)state;
    kf_model_free(g_m);
    return 0;
}

// Token ids 2.. (never BOS), different at every position.
static void make_ids(int32_t *ids, int n) {
    for (int i = 0; i < n; i++) ids[i] = 2 + (i * 7) % (g_m->n_vocab - 2);
}

typedef struct {
    int64_t first[N_WIN];   // each batch's first window, in call order
    int n[N_WIN];
    int64_t done[N_WIN], total;
    int n_calls;
    int64_t runs[N_WIN];    // how often each window ran
    int stop_after;         // set stop after this many calls (0: never)
    int bad_rows;           // rows whose embedding is not the protocol's token
    int64_t t0;
    const int32_t *ids;
    int bos_id;
    float *logits;          // copy of the first batch's logits, when asked
} trace;

static void embed_hook(void *user, int layer, kf_hook_point p, float *x, int n, int dim) {
    trace *t = user;
    if (p != KF_HOOK_BLOCK_IN || layer != 0) return;
    for (int r = 0; r < n; r++) {
        int64_t tok_pos = t->t0 + r; // row r of the call is token t0 + r of the text
        int32_t want = tok_pos % CTX == 0 && t->bos_id >= 0 ? t->bos_id : t->ids[tok_pos];
        if (memcmp(x + (size_t)r * dim, g_m->tok_embd.data + (size_t)want * dim, sizeof(float) * (size_t)dim) != 0)
            t->bad_rows++;
    }
}

static kf_status before(void *user, kf_calib_batch *b, kf_error *err) {
    (void)err;
    trace *t = user;
    t->t0 = b->first * b->ctx;
    return KF_OK;
}

static kf_status after(void *user, kf_calib_batch *b, kf_error *err) {
    (void)err;
    trace *t = user;
    t->first[t->n_calls] = b->first;
    t->n[t->n_calls] = b->n;
    t->done[t->n_calls] = b->done;
    t->total = b->total;
    for (int w = 0; w < b->n; w++) t->runs[b->first + w]++;
    if (b->logits && !t->logits) {
        size_t n = (size_t)b->n * b->ctx * g_m->n_vocab;
        t->logits = malloc(sizeof(float) * n);
        memcpy(t->logits, b->logits, sizeof(float) * n);
    }
    if (++t->n_calls == t->stop_after) b->stop = true;
    return KF_OK;
}

static void run(const kf_calib_protocol *p, const int32_t *ids, int64_t n_ids, trace *t, bool logits) {
    kf_error err = {0};
    kf_ctx *c = NULL;
    t->ids = ids;
    t->bos_id = p->bos_id;
    assert_int_equal(kf_ctx_init(&c, g_m, kf_calib_max_rows(p, n_ids), 0, &err), KF_OK);
    kf_ctx_set_hook(c, embed_hook, t, 1u << KF_HOOK_BLOCK_IN);
    kf_calib_sink sink = {.before = before, .after = after, .user = t, .logits = logits};
    if (kf_calib_run(c, g_m, ids, n_ids, p, &sink, &err) != KF_OK) fail_msg("%s", err.msg);
    kf_ctx_free(c);
}

static void test_windows_and_bos(void **state) {
    (void)state;
    int32_t ids[N_IDS];
    make_ids(ids, N_IDS);
    for (int bos = -1; bos <= BOS; bos += BOS + 1) {
        kf_calib_protocol p = kf_calib_protocol_make(CTX, bos);
        p.batch = 3;
        trace t = {0};
        run(&p, ids, N_IDS, &t, false);
        assert_int_equal(t.bad_rows, 0);
        assert_int_equal(t.n_calls, 3); // 3 + 3 + 1 windows
        assert_int_equal(t.first[0], 0);
        assert_int_equal(t.first[1], 3);
        assert_int_equal(t.first[2], 6);
        assert_int_equal(t.n[2], 1);
        assert_int_equal(t.done[2], N_WIN);
        assert_int_equal(t.total, N_WIN);
        for (int w = 0; w < N_WIN; w++) assert_int_equal(t.runs[w], 1);
    }
    // max_tokens: the windows that fit in the first 50 ids
    kf_calib_protocol p = kf_calib_protocol_make(CTX, BOS);
    p.max_tokens = 50;
    assert_int_equal(kf_calib_n_windows(&p, N_IDS), 3);
    trace t = {0};
    run(&p, ids, N_IDS, &t, false);
    assert_int_equal(t.done[t.n_calls - 1], 3);
    assert_int_equal(t.bad_rows, 0);
}

static void test_ranks(void **state) {
    (void)state;
    int32_t ids[N_IDS];
    make_ids(ids, N_IDS);
    int64_t runs[N_WIN] = {0}, sum = 0;
    for (int rank = 0; rank < 2; rank++) {
        kf_calib_protocol p = kf_calib_protocol_make(CTX, BOS);
        p.batch = 2, p.rank = rank, p.n_ranks = 2; // batches 0, 2 on rank 0; 1, 3 on rank 1
        trace t = {0};
        run(&p, ids, N_IDS, &t, false);
        assert_int_equal(t.bad_rows, 0);
        assert_int_equal(t.first[0], 2 * rank);
        assert_int_equal(t.first[1], 2 * rank + 4);
        assert_int_equal(t.total, kf_calib_n_rank_windows(&p, N_IDS));
        assert_int_equal(t.done[t.n_calls - 1], t.total);
        sum += t.total;
        for (int w = 0; w < N_WIN; w++) runs[w] += t.runs[w];
    }
    assert_int_equal(sum, N_WIN);
    for (int w = 0; w < N_WIN; w++) assert_int_equal(runs[w], 1);
}

static void test_stop_and_logits(void **state) {
    (void)state;
    int32_t ids[N_IDS];
    make_ids(ids, N_IDS);
    kf_calib_protocol p = kf_calib_protocol_make(CTX, BOS);
    p.batch = 2;
    trace t = {.stop_after = 1};
    run(&p, ids, N_IDS, &t, true);
    assert_int_equal(t.n_calls, 1);
    // the logits are those of the windows as run: window 1 with BOS first
    int32_t win[CTX];
    memcpy(win, ids + CTX, sizeof win);
    win[0] = BOS;
    kf_error err = {0};
    kf_ctx *c = NULL;
    float *want = malloc(sizeof(float) * CTX * g_m->n_vocab);
    assert_int_equal(kf_ctx_init(&c, g_m, CTX, 0, &err), KF_OK);
    assert_int_equal(kf_forward_prefill(c, win, 1, CTX, want, &err), KF_OK);
    const float *got = t.logits + (size_t)CTX * g_m->n_vocab;
    float worst = 0;
    for (int i = 0; i < CTX * g_m->n_vocab; i++) {
        float d = got[i] > want[i] ? got[i] - want[i] : want[i] - got[i];
        worst = d > worst ? d : worst;
    }
    assert_true(worst < 1e-4f); // the same rows in a batch of 2 and alone (sgemm blocking only)
    kf_ctx_free(c);
    free(want);
    free(t.logits);
}

static void test_checks(void **state) {
    (void)state;
    kf_error err = {0};
    kf_calib_protocol p = kf_calib_protocol_make(CTX, BOS);
    assert_int_equal(kf_calib_check(&p, g_m, N_IDS, "t", &err), KF_OK);
    assert_int_equal(kf_calib_check(&p, g_m, CTX - 1, "t", &err), KF_ERR_ARG); // not one window
    assert_string_equal(err.msg, "t: 15 tokens, fewer than one window of 16");
    p.ctx = 1;
    assert_int_equal(kf_calib_check(&p, g_m, N_IDS, "t", &err), KF_ERR_ARG);
    p = kf_calib_protocol_make(CTX, g_m->n_vocab);
    assert_int_equal(kf_calib_check(&p, g_m, N_IDS, "t", &err), KF_ERR_ARG);
    p = kf_calib_protocol_make(CTX, BOS);
    p.rank = 2, p.n_ranks = 2;
    assert_int_equal(kf_calib_check(&p, g_m, N_IDS, "t", &err), KF_ERR_ARG);
    // the same windows: batch, ranks and token counts do not matter; ctx and BOS do
    kf_calib_protocol a = kf_calib_protocol_make(128, -1), b = kf_calib_protocol_make(128, -1);
    b.batch = 7, b.n_ranks = 3, b.max_tokens = 1000;
    assert_int_equal(kf_calib_check_same(&a, &b, "s.kfs", &err), KF_OK);
    b = kf_calib_protocol_make(256, 1);
    assert_int_equal(kf_calib_check_same(&a, &b, "s.kfs", &err), KF_ERR_ARG);
    assert_string_equal(err.msg, "s.kfs was gathered with ctx 128 and no BOS; this run uses ctx 256 with BOS 1");
    b = kf_calib_protocol_make(128, 0);
    assert_int_equal(kf_calib_check_same(&a, &b, "s.kfs", &err), KF_ERR_ARG);
}

static void analyze_opts(kf_analyze_opts *o, int bos_id) {
    kf_analyze_opts_default(o);
    o->n_tokens = 32 * CTX;
    o->ctx = CTX;
    o->bos_id = bos_id;
    o->k = 4;
    o->sample_tokens = 64;
    o->context_tokens = 32 * CTX;
}

static void test_analyze_bos(void **state) {
    (void)state;
    enum { N = 32 * CTX };
    int32_t ids[N], with_bos[N];
    make_ids(ids, N);
    memcpy(with_bos, ids, sizeof ids);
    for (int w = 0; w < N / CTX; w++) with_bos[w * CTX] = BOS;
    kf_analyze_opts o;
    kf_analysis a, b;
    kf_error err = {0};
    analyze_opts(&o, BOS);
    if (kf_analyze_run(g_m, NULL, ids, N, &o, &a, &err) != KF_OK) fail_msg("%s", err.msg);
    analyze_opts(&o, -1);
    if (kf_analyze_run(g_m, NULL, with_bos, N, &o, &b, &err) != KF_OK) fail_msg("%s", err.msg);
    const kf_moments *ma = kf_statsfile_get(&a.stats, "layer.0.ffn_act");
    const kf_moments *mb = kf_statsfile_get(&b.stats, "layer.0.ffn_act");
    assert_int_equal(ma->n, N);
    assert_memory_equal(ma->sum, mb->sum, sizeof(double) * (size_t)ma->d);
    assert_int_equal(a.stats.protocol.ctx, CTX);
    assert_int_equal(a.stats.protocol.bos_id, BOS);
    assert_int_equal(a.stats.protocol.max_tokens, N);
    assert_int_equal(b.stats.protocol.bos_id, -1);
    int n_ctx = 0;
    for (int l = 0; l < a.result->n_layer; l++) {
        const kf_analysis_kmeans *km = &a.result->layers[l].activation;
        for (int c = 0; c < km->k; c++)
            for (int i = 0; i < km->clusters[c].n_contexts; i++) {
                int64_t pos = km->clusters[c].contexts[i].pos;
                if (pos % CTX == 0) fail_msg("a top context at window start %lld (BOS)", (long long)pos);
                n_ctx++;
            }
    }
    assert_true(n_ctx > 0);
    kf_analysis_free(&a);
    kf_analysis_free(&b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_windows_and_bos),
        cmocka_unit_test(test_ranks),
        cmocka_unit_test(test_stop_and_logits),
        cmocka_unit_test(test_checks),
        cmocka_unit_test(test_analyze_bos),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
