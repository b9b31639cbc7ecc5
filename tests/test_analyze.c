// Analysis numerics (src/analyze) against numpy/scipy references from
// tests/ref/analyze_ref.py: linear CKA (exact, streamed, minibatch), block
// influence, average-linkage correlation clustering, k-means and silhouette.
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>

#include <cmocka.h>

#include "analyze/cka.h"
#include "analyze/corrclust.h"
#include "analyze/kmeans.h"
#include "test_analyze_fixture.h"

// ---------------------------------------------------------------- CKA, BI

static void test_cka_linear_vs_numpy(void **state) {
    char *t = fx_text("cka.txt");
    int n, dx, dy, n2, dx2, dy2;
    float *X1 = fx_get_f32(t, "X1", &n, &dx), *Y1 = fx_get_f32(t, "Y1", NULL, &dy);
    float *X2 = fx_get_f32(t, "X2", &n2, &dx2), *Y2 = fx_get_f32(t, "Y2", NULL, &dy2);
    double *r1 = fx_get(t, "cka1", NULL, NULL), *r2 = fx_get(t, "cka2", NULL, NULL);
    double v, w;
    kf_error err;
    assert_int_equal(kf_cka_linear(X1, Y1, n, dx, dy, &v, &err), KF_OK); // feature-space path
    assert_true(fabs(v - r1[0]) <= 1e-6);
    assert_int_equal(kf_cka_linear(Y1, X1, n, dy, dx, &w, &err), KF_OK);
    assert_true(fabs(v - w) <= 1e-12);
    assert_int_equal(kf_cka_linear(X2, Y2, n2, dx2, dy2, &v, &err), KF_OK); // Gram-space path
    assert_true(fabs(v - r2[0]) <= 1e-6);
    assert_int_equal(kf_cka_linear(X2, X2, n2, dx2, dx2, &v, &err), KF_OK);
    assert_true(fabs(v - 1) <= 1e-12);
    // a constant representation has no CKA
    float c[8] = {1, 2, 1, 2, 1, 2, 1, 2};
    assert_int_equal(kf_cka_linear(c, X1, 4, 2, dx, &v, &err), KF_ERR_ARG);
    free(X1); free(Y1); free(X2); free(Y2); free(r1); free(r2); free(t);
}

static void test_cka_acc_stream_merge(void **state) {
    char *t = fx_text("cka.txt");
    int n, dx, dy;
    float *X = fx_get_f32(t, "X1", &n, &dx), *Y = fx_get_f32(t, "Y1", NULL, &dy);
    double *ref = fx_get(t, "cka1", NULL, NULL);
    kf_cka_acc u, a, b;
    kf_error err;
    double vu, vm;
    assert_int_equal(kf_cka_acc_init(&u, dx, dy, &err), KF_OK);
    assert_int_equal(kf_cka_acc_init(&a, dx, dy, &err), KF_OK);
    assert_int_equal(kf_cka_acc_init(&b, dx, dy, &err), KF_OK);
    for (int r = 0; r < n; r += 30) kf_cka_acc_add(&u, X + (size_t)r * dx, Y + (size_t)r * dy, n - r < 30 ? n - r : 30);
    kf_cka_acc_add(&a, X, Y, 37);
    kf_cka_acc_add(&b, X + 37 * dx, Y + 37 * dy, n - 37);
    assert_int_equal(kf_cka_acc_value(&u, &vu, &err), KF_OK);
    assert_true(fabs(vu - ref[0]) <= 1e-9);
    assert_int_equal(kf_cka_acc_merge(&a, &b, &err), KF_OK); // different shifts
    assert_int_equal(kf_cka_acc_value(&a, &vm, &err), KF_OK);
    assert_true(fabs(vm - vu) <= 1e-12);
    kf_cka_acc_free(&b);
    assert_int_equal(kf_cka_acc_init(&b, dx, dx, &err), KF_OK);
    assert_int_equal(kf_cka_acc_merge(&a, &b, &err), KF_ERR_ARG);
    kf_cka_acc_free(&u); kf_cka_acc_free(&a); kf_cka_acc_free(&b);
    free(X); free(Y); free(ref); free(t);
}

static void mb_add_batches(kf_cka_mb *a, float *const Z[3], const int d[3], int b0, int b1) {
    kf_error err;
    for (int b = b0; b < b1; b++) {
        for (int l = 0; l < 3; l++)
            assert_int_equal(kf_cka_mb_layer(a, l, Z[l] + (size_t)b * 16 * d[l], 16, d[l], &err), KF_OK);
        assert_int_equal(kf_cka_mb_commit(a, &err), KF_OK);
    }
}

static void test_cka_minibatch(void **state) {
    char *t = fx_text("cka.txt");
    float *Z[3];
    int d[3];
    Z[0] = fx_get_f32(t, "Z0", NULL, &d[0]);
    Z[1] = fx_get_f32(t, "Z1", NULL, &d[1]);
    Z[2] = fx_get_f32(t, "Z2", NULL, &d[2]);
    double *ref = fx_get(t, "cka_mb", NULL, NULL);
    kf_cka_mb a, b;
    kf_error err;
    double v[9], w[9];
    assert_int_equal(kf_cka_mb_init(&a, 3, 32, &err), KF_OK);
    assert_int_equal(kf_cka_mb_init(&b, 3, 16, &err), KF_OK);
    assert_int_equal(kf_cka_mb_value(&a, v, &err), KF_ERR_ARG); // nothing committed
    mb_add_batches(&a, Z, d, 0, 4);
    assert_int_equal(kf_cka_mb_value(&a, v, &err), KF_OK);
    for (int i = 0; i < 9; i++) assert_true(fabs(v[i] - ref[i]) <= 1e-9);
    kf_cka_mb_free(&a);
    assert_int_equal(kf_cka_mb_init(&a, 3, 16, &err), KF_OK);
    mb_add_batches(&a, Z, d, 0, 1);
    mb_add_batches(&b, Z, d, 1, 4);
    assert_int_equal(kf_cka_mb_merge(&a, &b, &err), KF_OK);
    assert_int_equal(kf_cka_mb_value(&a, w, &err), KF_OK);
    for (int i = 0; i < 9; i++) assert_true(fabs(w[i] - v[i]) <= 1e-12);
    // batch bookkeeping errors
    assert_int_equal(kf_cka_mb_layer(&a, 0, Z[0], 16, d[0], &err), KF_OK);
    assert_int_equal(kf_cka_mb_layer(&a, 0, Z[0], 16, d[0], &err), KF_ERR_ARG); // twice
    assert_int_equal(kf_cka_mb_layer(&a, 1, Z[1], 15, d[1], &err), KF_ERR_ARG); // other n
    assert_int_equal(kf_cka_mb_layer(&a, 3, Z[1], 16, d[1], &err), KF_ERR_ARG); // no layer 3
    assert_int_equal(kf_cka_mb_layer(&a, 1, Z[1], 17, d[1], &err), KF_ERR_ARG); // > B
    assert_int_equal(kf_cka_mb_commit(&a, &err), KF_ERR_ARG);                  // layers missing
    kf_cka_mb_free(&a);
    kf_cka_mb_free(&b);
    for (int l = 0; l < 3; l++) free(Z[l]);
    free(ref);
    free(t);
}

static void test_block_influence(void **state) {
    char *t = fx_text("cka.txt");
    int n, c;
    float *in = fx_get_f32(t, "bi_in", &n, &c), *out = fx_get_f32(t, "bi_out", NULL, NULL);
    double *ref = fx_get(t, "bi", NULL, NULL), v;
    kf_bi_acc a = {0}, b = {0};
    kf_error err;
    assert_int_equal(kf_bi_value(&a, &v, &err), KF_ERR_ARG);
    kf_bi_add(&a, in, out, 20, c);
    kf_bi_add(&b, in + 20 * c, out + 20 * c, n - 20, c);
    kf_bi_merge(&a, &b);
    assert_int_equal(kf_bi_value(&a, &v, &err), KF_OK);
    assert_true(fabs(v - ref[0]) <= 1e-12);
    kf_bi_acc s = {0};
    kf_bi_add(&s, in, in, n, c); // identical in/out: BI = 1/n (the zero row counts 0)
    assert_int_equal(kf_bi_value(&s, &v, &err), KF_OK);
    assert_true(fabs(v - 1.0 / n) <= 1e-12);
    free(in); free(out); free(ref); free(t);
}

// ---------------------------------------------------------------- clustering

// True when labels a and b (n) describe the same partition.
static int same_partition(const int32_t *a, const int32_t *b, int n) {
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++)
            if ((a[i] == a[j]) != (b[i] == b[j])) return 0;
    return 1;
}

static void check_case(const char *t, const char *tag) {
    char name[64];
    int n, nz, nt;
    snprintf(name, sizeof name, "%s_corr", tag);
    double *corr = fx_get(t, name, &n, NULL);
    snprintf(name, sizeof name, "%s_Z", tag);
    double *Z = fx_get(t, name, &nz, NULL);
    snprintf(name, sizeof name, "%s_labels", tag);
    double *lab = fx_get(t, name, &nt, NULL);
    double *thr = fx_get(t, "thresholds", NULL, NULL);
    assert_int_equal(nz, n - 1);
    kf_linkage z;
    kf_error err;
    assert_int_equal(kf_corrclust_run(corr, n, &z, &err), KF_OK);
    for (int k = 0; k < n - 1; k++) { // the same tree as scipy
        assert_int_equal(z.a[k], (int32_t)Z[k * 4 + 0]);
        assert_int_equal(z.b[k], (int32_t)Z[k * 4 + 1]);
        assert_true(fabs(z.dist[k] - Z[k * 4 + 2]) <= 1e-5);
        assert_int_equal(z.size[k], (int32_t)Z[k * 4 + 3]);
    }
    int32_t *mine = malloc(n * sizeof *mine), *ref = malloc(n * sizeof *ref);
    for (int s = 0; s < nt; s++) {
        int k, kref = 0;
        assert_int_equal(kf_linkage_cut(&z, thr[s], mine, &k, &err), KF_OK);
        for (int i = 0; i < n; i++) {
            ref[i] = (int32_t)lab[(size_t)s * n + i];
            if (ref[i] > kref) kref = ref[i];
        }
        assert_int_equal(k, kref);
        assert_true(same_partition(mine, ref, n));
        assert_true(fabs(kf_linkage_redundancy(&z, thr[s]) - (double)(n - kref) / n) <= 1e-15);
    }
    kf_linkage_free(&z);
    free(mine); free(ref); free(corr); free(Z); free(lab); free(thr);
}

static void test_corrclust_vs_scipy(void **state) {
    char *t = fx_text("corrclust.txt");
    check_case(t, "A");
    check_case(t, "B");
    free(t);
}

static void test_linkage_by_hand(void **state) {
    // pairs {0,1} at 0.1 and {2,3} at 0.2; cross distances 0.5 0.6 0.7 0.8:
    // the last merge is their average 0.65
    float d[6] = {0.1f, 0.5f, 0.6f, 0.7f, 0.8f, 0.2f}; // (0,1) (0,2) (0,3) (1,2) (1,3) (2,3)
    kf_linkage z;
    kf_error err;
    assert_int_equal(kf_linkage_average(d, 4, &z, &err), KF_OK);
    assert_true(z.a[0] == 0 && z.b[0] == 1 && fabsf(z.dist[0] - 0.1f) < 1e-7f);
    assert_true(z.a[1] == 2 && z.b[1] == 3 && fabsf(z.dist[1] - 0.2f) < 1e-7f);
    assert_true(z.a[2] == 4 && z.b[2] == 5 && fabsf(z.dist[2] - 0.65f) < 1e-6f && z.size[2] == 4);
    int32_t lab[4];
    int k;
    assert_int_equal(kf_linkage_cut(&z, 0.15, lab, &k, &err), KF_OK);
    assert_int_equal(k, 3);
    assert_true(lab[0] == 0 && lab[1] == 0 && lab[2] == 1 && lab[3] == 2);
    assert_true(kf_linkage_redundancy(&z, 0.3) == 0.5);
    kf_linkage_free(&z);
    assert_int_equal(kf_linkage_average(d, 1, &z, &err), KF_ERR_ARG);
}

// ---------------------------------------------------------------- k-means

static void test_kmeans_lloyd_vs_numpy(void **state) {
    char *t = fx_text("kmeans.txt");
    int n, d, k;
    float *X = fx_get_f32(t, "X", &n, &d), *init = fx_get_f32(t, "init", &k, NULL);
    double *r = fx_get(t, "lloyd", NULL, NULL), *rl = fx_get(t, "lloyd_labels", NULL, NULL);
    double *r1 = fx_get(t, "lloyd1", NULL, NULL), *rl1 = fx_get(t, "lloyd1_labels", NULL, NULL);
    float *C = malloc((size_t)k * d * sizeof *C);
    int32_t *lab = malloc(n * sizeof *lab);
    double obj;
    int it;
    kf_error err;
    memcpy(C, init, (size_t)k * d * sizeof *C);
    assert_int_equal(kf_kmeans_lloyd(X, n, d, k, C, lab, 100, 0, &obj, &it, &err), KF_OK);
    assert_true(fabs(obj - r[0]) <= 1e-6 * r[0]);
    assert_int_equal(it, (int)r[1]);
    for (int i = 0; i < n; i++) assert_int_equal(lab[i], (int32_t)rl[i]);
    memcpy(C, init, (size_t)k * d * sizeof *C); // one update, then the final assignment
    assert_int_equal(kf_kmeans_lloyd(X, n, d, k, C, lab, 1, 0, &obj, &it, &err), KF_OK);
    assert_true(fabs(obj - r1[0]) <= 1e-6 * r1[0]);
    assert_int_equal(it, 1);
    for (int i = 0; i < n; i++) assert_int_equal(lab[i], (int32_t)rl1[i]);
    free(X); free(init); free(r); free(rl); free(r1); free(rl1); free(C); free(lab); free(t);
}

static void test_kmeans_empty_cluster(void **state) {
    // 6 points on a line, one centre far away: it gets no point at first and
    // must take the point farthest from its centre.
    const float X[6] = {0, 1, 2, 10, 11, 12};
    float C[3] = {1, 11, 1000};
    int32_t lab[6];
    double obj;
    kf_error err;
    assert_int_equal(kf_kmeans_lloyd(X, 6, 1, 3, C, lab, 50, 0, &obj, NULL, &err), KF_OK);
    int cnt[3] = {0, 0, 0};
    for (int i = 0; i < 6; i++) cnt[lab[i]]++;
    assert_true(cnt[0] > 0 && cnt[1] > 0 && cnt[2] > 0);
    assert_true(C[2] < 20);
    assert_true(obj <= 2.5 + 1e-9); // best 3-split of the line: {0,1,2} {10,11} {12} or mirror = 2.5
    assert_int_equal(kf_kmeans_lloyd(X, 6, 1, 7, C, lab, 50, 0, &obj, NULL, &err), KF_ERR_ARG); // k > n
}

static void test_kmeans_fit_and_balanced(void **state) {
    char *t = fx_text("kmeans.txt");
    int n, d;
    float *X = fx_get_f32(t, "X", &n, &d);
    double *truth = fx_get(t, "truth", NULL, NULL), *r = fx_get(t, "lloyd", NULL, NULL);
    const int k = 4;
    int32_t *lab = malloc(n * sizeof *lab), *tl = malloc(n * sizeof *tl);
    float C[4 * 6];
    double obj, obj2;
    kf_error err;
    for (int i = 0; i < n; i++) tl[i] = (int32_t)truth[i];
    kf_kmeans_opts o = {.max_iter = 100, .n_init = 4, .seed = 7, .balanced = 0};
    assert_int_equal(kf_kmeans_fit(X, n, d, k, &o, C, lab, &obj, &err), KF_OK);
    assert_true(same_partition(lab, tl, n));
    assert_true(fabs(obj - r[0]) <= 1e-6 * r[0]);
    assert_int_equal(kf_kmeans_fit(X, n, d, k, &o, C, lab, &obj2, &err), KF_OK);
    assert_true(obj2 == obj); // seeded: reproducible
    o.balanced = 1;
    assert_int_equal(kf_kmeans_fit(X, n, d, k, &o, C, lab, &obj, &err), KF_OK);
    assert_true(same_partition(lab, tl, n)); // equal-size blobs: balanced finds them too
    // uneven sizes: n = 10, k = 4 -> two clusters of 3, two of 2
    const float Y[10] = {0, 0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f, 5, 5.1f, 9};
    float CY[4];
    int32_t ly[10];
    o.n_init = 2;
    assert_int_equal(kf_kmeans_fit(Y, 10, 1, 4, &o, CY, ly, &obj, &err), KF_OK);
    int cnt[4] = {0, 0, 0, 0}, n3 = 0, n2 = 0;
    for (int i = 0; i < 10; i++) cnt[ly[i]]++;
    for (int j = 0; j < 4; j++) {
        n3 += cnt[j] == 3;
        n2 += cnt[j] == 2;
    }
    assert_true(n3 == 2 && n2 == 2);
    free(X); free(truth); free(r); free(lab); free(tl); free(t);
}

static void test_silhouette_vs_numpy(void **state) {
    char *t = fx_text("kmeans.txt");
    int n, d;
    float *X = fx_get_f32(t, "X", &n, &d);
    double *truth = fx_get(t, "truth", NULL, NULL), *rv = fx_get(t, "sil_values", NULL, NULL);
    double *rv5 = fx_get(t, "sil5_values", NULL, NULL);
    int32_t *lab = malloc(n * sizeof *lab);
    double *v = malloc(n * sizeof *v), s, mean = 0;
    kf_error err;
    for (int i = 0; i < n; i++) lab[i] = (int32_t)truth[i];
    assert_int_equal(kf_silhouette(X, n, d, lab, 4, 0, 1, &s, v, &err), KF_OK);
    for (int i = 0; i < n; i++) {
        assert_true(fabs(v[i] - rv[i]) <= 1e-9);
        mean += rv[i];
    }
    assert_true(fabs(s - mean / n) <= 1e-9);
    // sampled: exactly `sample` points scored, each with its exact value
    assert_int_equal(kf_silhouette(X, n, d, lab, 4, 100, 3, &s, v, &err), KF_OK);
    int m = 0;
    mean = 0;
    for (int i = 0; i < n; i++)
        if (!isnan(v[i])) {
            assert_true(fabs(v[i] - rv[i]) <= 1e-9);
            mean += v[i];
            m++;
        }
    assert_int_equal(m, 100);
    assert_true(fabs(s - mean / m) <= 1e-12);
    // a singleton cluster scores 0
    lab[0] = 4;
    assert_int_equal(kf_silhouette(X, n, d, lab, 5, 0, 1, &s, v, &err), KF_OK);
    assert_true(v[0] == 0);
    for (int i = 0; i < n; i++) assert_true(fabs(v[i] - rv5[i]) <= 1e-9);
    for (int i = 0; i < n; i++) lab[i] = 1;
    assert_int_equal(kf_silhouette(X, n, d, lab, 4, 0, 1, &s, v, &err), KF_ERR_ARG); // one cluster
    lab[3] = 9;
    assert_int_equal(kf_silhouette(X, n, d, lab, 4, 0, 1, &s, v, &err), KF_ERR_ARG); // label out of range
    free(X); free(truth); free(rv); free(rv5); free(lab); free(v); free(t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cka_linear_vs_numpy),   cmocka_unit_test(test_cka_acc_stream_merge),
        cmocka_unit_test(test_cka_minibatch),         cmocka_unit_test(test_block_influence),
        cmocka_unit_test(test_corrclust_vs_scipy),    cmocka_unit_test(test_linkage_by_hand),
        cmocka_unit_test(test_kmeans_lloyd_vs_numpy), cmocka_unit_test(test_kmeans_empty_cluster),
        cmocka_unit_test(test_kmeans_fit_and_balanced), cmocka_unit_test(test_silhouette_vs_numpy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
