// The recovery loop and its parts (src/train/adamw.c, overlap.c, recover.c):
// - AdamW against torch.optim.AdamW (tests/ref/adamw_ref.py, float64) over
//   ten steps of a warm-up + cosine schedule with weight decay;
// - the schedule's end points and gradient clipping to the given norm;
// - the window-hash overlap check finds one copied window and no chance ones;
// - distillation recovers a damaged model (every w_down halved) towards its
//   original: held-out KL falls below half of where it started for FFN and
//   all-weights training, below three quarters for LoRA of rank 4; the same seed at one thread gives the same
//   weights bit for bit;
// - a run resumed from its checkpoint (src/train/checkpoint.c) ends with the
//   weights, curves and evaluations of the uninterrupted run, bit for bit; a
//   checkpoint of other options is refused, naming the option.
#include <math.h>
#include <omp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "io/load.h"
#include "test_hf_util.h"
#include "train/adamw.h"
#include "train/checkpoint.h"
#include "train/overlap.h"
#include "train/recover.h"

static void test_adamw_vs_torch(void **state) {
    (void)state;
    enum { n = 257, steps = 10 };
    float *w = malloc(sizeof(float) * n), *w0 = malloc(sizeof(float) * n), *g = malloc(sizeof(float) * n * steps),
          *ref = malloc(sizeof(float) * n);
    for (int i = 0; i < n; i++) w0[i] = w[i] = (float)kf_test_urand();
    for (int i = 0; i < n * steps; i++) g[i] = (float)(kf_test_urand() * (i % 7 + 1) * 0.1);
    kf_param p = {.w = w, .g = malloc(sizeof(float) * n), .n = n, .decay = true};
    kf_adamw_opts o = kf_adamw_defaults();
    o.weight_decay = 0.1f;
    kf_adamw *opt;
    kf_error err;
    assert_int_equal(kf_adamw_init(&opt, &p, 1, &o, &err), KF_OK);
    char work[64], json[2048], path[1200];
    tmp_dir(work);
    int len = snprintf(json, sizeof json, "{\"n\": %d, \"steps\": %d, \"beta1\": %.9g, \"beta2\": %.9g, \"eps\": %.9g, "
                                          "\"weight_decay\": %.9g, \"lr\": [", n, steps, o.beta1, o.beta2, o.eps, o.weight_decay);
    for (int s = 0; s < steps; s++) {
        const float lr = kf_lr_schedule(s, steps, 3, 0.01f, 0.1f);
        len += snprintf(json + len, sizeof json - len, "%s%.9g", s ? ", " : "", lr);
        memcpy(p.g, g + s * n, sizeof(float) * n);
        kf_adamw_step(opt, &p, 1, lr);
    }
    snprintf(json + len, sizeof json - len, "]}\n");
    write_text_file(work, "adamw.json", json);
    snprintf(path, sizeof path, "%s/w0.bin", work);
    write_bytes(path, w0, sizeof(float) * n);
    snprintf(path, sizeof path, "%s/grads.bin", work);
    write_bytes(path, g, sizeof(float) * n * steps);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 '%s/tests/ref/adamw_ref.py' '%s'", kf_test_root(), work);
    assert_int_equal(system(cmd), 0);
    int64_t nr;
    snprintf(path, sizeof path, "%s/w_ref.bin", work);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    nr = (int64_t)fread(ref, sizeof(float), n, f);
    fclose(f);
    assert_int_equal(nr, n);
    // compare the updates w - w0
    double d = 0, s = 0;
    for (int i = 0; i < n; i++) {
        d = fmax(d, fabs((double)w[i] - ref[i]));
        s = fmax(s, fabs((double)ref[i] - w0[i]));
    }
    printf("adamw: max |w - w_torch| %.3g of a largest update %.3g\n", d, s);
    assert_true(d <= 1e-5 * s);
    kf_adamw_free(opt);
    rm_tree(work);
    free(w), free(w0), free(g), free(ref), free(p.g);
}

static void test_schedule_and_clip(void **state) {
    (void)state;
    const float lr = 1e-3f;
    assert_float_equal(kf_lr_schedule(0, 100, 10, lr, 0.1f), lr / 10, 1e-12);
    assert_float_equal(kf_lr_schedule(9, 100, 10, lr, 0.1f), lr, 1e-12);
    assert_float_equal(kf_lr_schedule(10, 100, 10, lr, 0.1f), lr, 1e-12);
    assert_float_equal(kf_lr_schedule(55, 100, 10, lr, 0.1f), 0.55f * lr, 1e-9); // half way: the mean of lr and min
    assert_float_equal(kf_lr_schedule(100, 100, 10, lr, 0.1f), 0.1f * lr, 1e-12);
    for (int s = 11; s < 100; s++) assert_true(kf_lr_schedule(s, 100, 10, lr, 0.1f) <= kf_lr_schedule(s - 1, 100, 10, lr, 0.1f));
    float g1[3] = {3, 0, 4}, g2[2] = {0, 0}, w[3];
    kf_param ps[2] = {{.w = w, .g = g1, .n = 3}, {.w = w, .g = g2, .n = 2}};
    assert_float_equal(kf_grad_clip(ps, 2, 1.0), 5.0, 1e-12);
    assert_float_equal(kf_grad_norm(ps, 2), 1.0, 1e-6);
    assert_float_equal(kf_grad_clip(ps, 2, 10.0), 1.0, 1e-6); // below the bound: unchanged
    assert_float_equal(g1[2], 0.8f, 1e-6);
}

static void test_overlap(void **state) {
    (void)state;
    enum { n_train = 20000, n_eval = 64 * 12 };
    int32_t *train = malloc(sizeof(int32_t) * n_train), *eval = malloc(sizeof(int32_t) * n_eval);
    kf_test_random_ids(train, n_train, 0, 500, 1);
    kf_test_random_ids(eval, n_eval, 0, 500, 2);
    int64_t shared, windows;
    kf_error err;
    assert_int_equal(kf_train_overlap(train, n_train, eval, n_eval, 64, &shared, &windows, &err), KF_OK);
    assert_int_equal(windows, 12);
    assert_int_equal(shared, 0);
    memcpy(eval + 5 * 64, train + 12345, sizeof(int32_t) * 64); // window 5 copied from an odd offset
    assert_int_equal(kf_train_overlap(train, n_train, eval, n_eval, 64, &shared, &windows, &err), KF_OK);
    assert_int_equal(shared, 1);
    memcpy(eval, train + n_train - 64, sizeof(int32_t) * 64); // the training text's last window
    assert_int_equal(kf_train_overlap(train, n_train, eval, n_eval, 64, &shared, &windows, &err), KF_OK);
    assert_int_equal(shared, 2);
    free(train), free(eval);
}

// ---- recovery of a damaged model ------------------------------------------------------

static kf_model *load_gqa(void) {
    char path[1200];
    snprintf(path, sizeof path, "%s/tests/fixtures/models/llama-gqa-bf16", kf_test_root());
    kf_model *m;
    kf_error err;
    if (kf_model_load(&m, path, &err) != KF_OK) fail_msg("%s", err.msg);
    return m;
}

static kf_model *damaged(void) {
    kf_model *m = load_gqa();
    kf_error err;
    assert_int_equal(kf_model_load_to_memory(m, &err), KF_OK);
    for (int l = 0; l < m->n_layer; l++) {
        kf_tensor *w = &m->layers[l].w_down;
        for (int64_t i = 0; i < kf_tensor_nelem(w); i++) w->data[i] *= 0.5f;
    }
    return m;
}

typedef struct {
    double kl_before, kl_after;
    float *w_down; // layer 0's, copied
    double *loss;
    int64_t steps;
} run_out;

static run_out run_recover(kf_train_mode mode, const kf_model *teacher, const int32_t *ids, int64_t n,
                           const int32_t *eval, int64_t n_eval) {
    kf_model *s = damaged();
    kf_train *t;
    kf_error err;
    kf_train_opts to = {.mode = mode, .lora_rank = 4, .seed = 3};
    if (kf_train_init(&t, s, 4, 16, &to, &err) != KF_OK) fail_msg("%s", err.msg);
    kf_recover_opts o = kf_recover_defaults();
    o.steps = 60;
    o.lr = mode == KF_TRAIN_LORA ? 1e-2f : mode == KF_TRAIN_ALL ? 1e-3f : 3e-3f;
    o.bos_id = 1;
    o.eval_ids = eval;
    o.n_eval_ids = n_eval;
    kf_recover_result r;
    if (kf_recover_run(t, s, teacher, ids, n, &o, NULL, NULL, &r, &err) != KF_OK) fail_msg("%s", err.msg);
    if (mode == KF_TRAIN_LORA && kf_train_lora_merge(t, &err) != KF_OK) fail_msg("%s", err.msg);
    run_out out = {r.evals[0].kl_mean, r.evals[r.n_evals - 1].kl_mean, NULL, malloc(sizeof(double) * r.steps), r.steps};
    memcpy(out.loss, r.loss, sizeof(double) * r.steps);
    const kf_tensor *w = &s->layers[0].w_down;
    out.w_down = malloc(sizeof(float) * kf_tensor_nelem(w));
    memcpy(out.w_down, w->data, sizeof(float) * kf_tensor_nelem(w));
    kf_recover_result_free(&r);
    kf_train_free(t);
    kf_model_free(s);
    return out;
}

static void test_recovery(void **state) {
    (void)state;
    enum { n_train = 30000, n_eval = 16 * 16 };
    int32_t *ids = malloc(sizeof(int32_t) * n_train), *eval = malloc(sizeof(int32_t) * n_eval);
    kf_test_random_ids(ids, n_train, 0, 256, 21);
    kf_test_random_ids(eval, n_eval, 0, 256, 22);
    kf_model *teacher = load_gqa();
    const int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    static const kf_train_mode modes[] = {KF_TRAIN_FFN, KF_TRAIN_ALL, KF_TRAIN_LORA};
    static const char *names[] = {"ffn", "all", "lora"};
    static const double bound[] = {0.5, 0.5, 0.75}; // observed 0.35, 0.40, 0.64 (rank 4 cannot undo a full-rank change)
    for (int k = 0; k < 3; k++) {
        run_out a = run_recover(modes[k], teacher, ids, n_train, eval, n_eval);
        printf("%s: held-out KL %.4f -> %.4f; loss %.4f -> %.4f\n", names[k], a.kl_before, a.kl_after, a.loss[0],
               a.loss[a.steps - 1]);
        assert_true(a.kl_after < bound[k] * a.kl_before);
        if (k == 0) { // determinism at one thread
            run_out b = run_recover(modes[k], teacher, ids, n_train, eval, n_eval);
            assert_memory_equal(a.loss, b.loss, sizeof(double) * a.steps);
            assert_memory_equal(a.w_down, b.w_down, sizeof(float) * teacher->layers[0].w_down.ne[0] *
                                                        teacher->layers[0].w_down.ne[1]);
            free(b.w_down), free(b.loss);
        }
        free(a.w_down), free(a.loss);
    }
    omp_set_num_threads(threads);
    kf_model_free(teacher);
    free(ids), free(eval);
}

// Recovers a damaged model for 20 steps (FFN), checkpointing into dir every 6
// steps, or resuming from it; returns layer 0's w_down and the result.
static float *run_ckpt(const kf_model *teacher, const int32_t *ids, int64_t n, const int32_t *eval, int64_t n_eval,
                       const char *dir, bool resume, float lr, kf_recover_result *r, kf_status *st, kf_error *err) {
    kf_model *s = damaged();
    kf_train *t;
    kf_train_opts to = {.mode = KF_TRAIN_FFN, .seed = 3};
    if (kf_train_init(&t, s, 4, 16, &to, err) != KF_OK) fail_msg("%s", err->msg);
    kf_recover_opts o = kf_recover_defaults();
    o.steps = 20;
    o.lr = lr;
    o.bos_id = 1;
    o.eval_ids = eval;
    o.n_eval_ids = n_eval;
    o.eval_every = 5;
    o.checkpoint_dir = dir;
    o.checkpoint_every = 6;
    o.resume = resume;
    *st = kf_recover_run(t, s, teacher, ids, n, &o, NULL, NULL, r, err);
    const kf_tensor *w = &s->layers[0].w_down;
    float *out = malloc(sizeof(float) * kf_tensor_nelem(w));
    memcpy(out, w->data, sizeof(float) * kf_tensor_nelem(w));
    kf_train_free(t);
    kf_model_free(s);
    return out;
}

static void test_resume(void **state) {
    (void)state;
    enum { n_train = 8000, n_eval = 8 * 16 };
    int32_t *ids = malloc(sizeof(int32_t) * n_train), *eval = malloc(sizeof(int32_t) * n_eval);
    kf_test_random_ids(ids, n_train, 0, 256, 31);
    kf_test_random_ids(eval, n_eval, 0, 256, 32);
    kf_model *teacher = load_gqa();
    const int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    char dir[64], ckpt[128];
    tmp_dir(dir);
    snprintf(ckpt, sizeof ckpt, "%s/ckpt", dir);
    kf_error err;
    kf_status st;
    kf_recover_result a, b;
    float *wa = run_ckpt(teacher, ids, n_train, eval, n_eval, ckpt, false, 3e-3f, &a, &st, &err);
    assert_int_equal(st, KF_OK);
    int64_t at;
    assert_int_equal(kf_ckpt_latest(ckpt, &at, &err), KF_OK);
    assert_int_equal(at, 18);
    float *wb = run_ckpt(teacher, ids, n_train, eval, n_eval, ckpt, true, 3e-3f, &b, &st, &err);
    if (st != KF_OK) fail_msg("%s", err.msg);
    const int64_t nw = kf_tensor_nelem(&teacher->layers[0].w_down);
    assert_memory_equal(wa, wb, sizeof(float) * nw);
    assert_int_equal(a.steps, b.steps);
    assert_int_equal(a.tokens, b.tokens);
    assert_memory_equal(a.loss, b.loss, sizeof(double) * a.steps);
    assert_memory_equal(a.lr, b.lr, sizeof(double) * a.steps);
    assert_int_equal(a.n_evals, b.n_evals);
    for (int i = 0; i < a.n_evals; i++) {
        assert_int_equal(a.evals[i].step, b.evals[i].step);
        assert_true(a.evals[i].kl_mean == b.evals[i].kl_mean);
    }
    kf_recover_result_free(&a);
    kf_recover_result_free(&b);
    free(wb);
    // another learning rate is another run
    wb = run_ckpt(teacher, ids, n_train, eval, n_eval, ckpt, true, 1e-3f, &b, &st, &err);
    assert_int_equal(st, KF_ERR_ARG);
    assert_non_null(strstr(err.msg, "lr differs"));
    free(wb);
    free(wa);
    omp_set_num_threads(threads);
    kf_model_free(teacher);
    free(ids), free(eval);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_adamw_vs_torch),
        cmocka_unit_test(test_schedule_and_clip),
        cmocka_unit_test(test_overlap),
        cmocka_unit_test(test_recovery),
        cmocka_unit_test(test_resume),
    };
    return kf_test_status(cmocka_run_group_tests(tests, NULL, NULL));
}
