// kf_analyze_run on the shipped 1.4m model with synthetic token ids:
// - the statistics file it returns saves and loads back under the model's
//   fingerprint (and is refused under another one);
// - the batch split used by MPI is exact without MPI: the statistics of
//   rank 0 and rank 1 of 2, merged, equal the single run's (counts exactly,
//   mean and covariance within 1e-9 relative);
// - bad options are refused with KF_ERR_ARG.
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "io/load.h"
#include "analyze/pipeline.h"
#include "test_util.h"

enum { N_IDS = 1024 };

static kf_model *model;
static int32_t ids[N_IDS];

static int setup(void **state) {
    (void)state;
    kf_error err = {0};
    const char *root = getenv("KF_ROOT");
    char path[1024];
    snprintf(path, sizeof path, "%s/models/llama-gutenberg-1.4m", root ? root : ".");
    if (kf_model_load(&model, path, &err) != KF_OK) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    kf_test_random_ids(ids, N_IDS, 3, model->n_vocab, 4);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    kf_model_free(model);
    return 0;
}

static void small_opts(kf_analyze_opts *o) {
    kf_analyze_opts_default(o);
    o->n_tokens = N_IDS;
    o->ctx = 128;
    o->batch = 2;
    o->k = 4;
    o->sample_tokens = 128;
    o->context_tokens = 256;
    o->f64_products = 1; // the split-merge check below is at double precision
}

static void assert_moments_close(const kf_moments *a, const kf_moments *b) {
    assert_int_equal(a->d, b->d);
    assert_int_equal(a->n, b->n);
    size_t d = (size_t)a->d;
    double *ma = malloc(d * sizeof *ma), *mb = malloc(d * sizeof *mb);
    double *ca = malloc(d * d * sizeof *ca), *cb = malloc(d * d * sizeof *cb);
    kf_error err;
    assert_int_equal(kf_moments_mean(a, ma, &err), KF_OK);
    assert_int_equal(kf_moments_mean(b, mb, &err), KF_OK);
    assert_int_equal(kf_moments_cov(a, ca, &err), KF_OK);
    assert_int_equal(kf_moments_cov(b, cb, &err), KF_OK);
    double scale = 0;
    for (size_t i = 0; i < d * d; i++) scale = fmax(scale, fabs(ca[i]));
    for (size_t i = 0; i < d; i++) {
        assert_true(fabs(ma[i] - mb[i]) <= 1e-9 * (fabs(ma[i]) + 1));
        assert_int_equal(a->n_pos[i], b->n_pos[i]);
    }
    for (size_t i = 0; i < d * d; i++) assert_true(fabs(ca[i] - cb[i]) <= 1e-9 * scale);
    if (a->topk > 0)
        for (size_t i = 0; i < d; i += 7) assert_int_equal(kf_moments_coact(a, (int)i, (int)i), kf_moments_coact(b, (int)i, (int)i));
    free(ma), free(mb), free(ca), free(cb);
}

static void test_split_merge_and_statsfile(void **state) {
    (void)state;
    kf_analyze_opts o;
    small_opts(&o);
    kf_error err = {0};
    kf_analysis full, r0, r1;
    assert_int_equal(kf_analyze_run(model, NULL, ids, N_IDS, &o, &full, &err), KF_OK);
    assert_non_null(full.result);
    o.n_ranks = 2;
    assert_int_equal(kf_analyze_run(model, NULL, ids, N_IDS, &o, &r0, &err), KF_OK);
    o.rank = 1;
    assert_int_equal(kf_analyze_run(model, NULL, ids, N_IDS, &o, &r1, &err), KF_OK);
    assert_null(r1.result); // only rank 0 analyses
    assert_int_equal(kf_statsfile_merge(&r0.stats, &r1.stats, &err), KF_OK);
    assert_int_equal(full.stats.n, r0.stats.n);
    for (int i = 0; i < full.stats.n; i++) {
        kf_moments *b = kf_statsfile_get(&r0.stats, full.stats.entries[i]->name);
        assert_non_null(b);
        assert_moments_close(&full.stats.entries[i]->m, b);
    }
    // N_IDS / 128 = 8 sequences of 128 tokens; resid.all takes every 4th token.
    assert_int_equal(kf_statsfile_get(&full.stats, "layer.0.ffn_act")->n, 1024);
    assert_int_equal(kf_statsfile_get(&full.stats, "resid.all")->n, 256);

    char path[] = "/tmp/kf_test_analyze_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    uint64_t fp = kf_model_fingerprint(model);
    assert_true(fp == full.stats.fingerprint);
    assert_int_equal(kf_statsfile_save(&full.stats, path, &err), KF_OK);
    kf_statsfile back;
    assert_int_equal(kf_statsfile_load(&back, path, fp, NULL, &err), KF_OK);
    assert_int_equal(back.n, full.stats.n);
    assert_moments_close(&back.entries[0]->m, &full.stats.entries[0]->m);
    kf_statsfile_free(&back);
    assert_int_not_equal(kf_statsfile_load(&back, path, fp ^ 1, NULL, &err), KF_OK);
    kf_statsfile_free(&back);
    unlink(path);
    kf_analysis_free(&full);
    kf_analysis_free(&r0);
    kf_analysis_free(&r1);
}

static void test_bad_options(void **state) {
    (void)state;
    kf_analyze_opts o;
    kf_analysis a;
    kf_error err = {0};
    small_opts(&o);
    o.ctx = 2;
    assert_int_equal(kf_analyze_run(model, NULL, ids, N_IDS, &o, &a, &err), KF_ERR_ARG);
    kf_analysis_free(&a);
    small_opts(&o);
    assert_int_equal(kf_analyze_run(model, NULL, ids, 100, &o, &a, &err), KF_ERR_ARG); // not one sequence
    kf_analysis_free(&a);
    small_opts(&o);
    o.epsilon = 0;
    assert_int_equal(kf_analyze_run(model, NULL, ids, N_IDS, &o, &a, &err), KF_ERR_ARG);
    kf_analysis_free(&a);
    int32_t bad[N_IDS];
    memcpy(bad, ids, sizeof bad);
    bad[700] = model->n_vocab; // out of the vocabulary
    small_opts(&o);
    assert_int_equal(kf_analyze_run(model, NULL, bad, N_IDS, &o, &a, &err), KF_ERR_ARG);
    assert_non_null(strstr(err.msg, "token 700"));
    kf_analysis_free(&a);
    small_opts(&o); // sharding layers across ranks needs MPI running (the ranks gather rows to the owners)
    o.shard_layers = 1;
    o.n_ranks = 2;
    assert_int_equal(kf_analyze_run(model, NULL, ids, N_IDS, &o, &a, &err), KF_ERR_ARG);
    assert_non_null(strstr(err.msg, "needs MPI running"));
    kf_analysis_free(&a);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_merge_and_statsfile),
        cmocka_unit_test(test_bad_options),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
