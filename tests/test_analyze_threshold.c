// Dynamic-threshold error (src/analyze/threshold.c) against a direct
// computation on explicit samples: for a partition, the representative's
// least-squares prediction of the other members, the FFN output error
// sum ||W_down (a - â)||^2 / sum ||W_down a||^2 over the rows, both with the
// population covariance; an exactly linear pair merges with zero error.
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "analyze/threshold.h"
#include "test_util.h"

enum { N = 4000, F = 5, C = 3 };

// a (N,F): a1 = 2 a0 + 1 exactly, a3 = a2 + noise, a4 independent, with means.
static void make_data(double *a, float *w) {
    for (int r = 0; r < N; r++) {
        double *x = a + (size_t)r * F;
        x[0] = kf_test_urand() + 0.5;
        x[1] = 2 * x[0] + 1;
        x[2] = kf_test_urand() - 0.3;
        x[3] = x[2] + 0.3 * kf_test_urand();
        x[4] = 0.7 * kf_test_urand() + 2;
    }
    for (int i = 0; i < C * F; i++) w[i] = (float)kf_test_urand();
}

static void moments(const double *a, double *mean, double *cov) {
    memset(mean, 0, F * sizeof *mean);
    memset(cov, 0, F * F * sizeof *cov);
    for (int r = 0; r < N; r++)
        for (int j = 0; j < F; j++) mean[j] += a[(size_t)r * F + j] / N;
    for (int r = 0; r < N; r++)
        for (int i = 0; i < F; i++)
            for (int j = 0; j < F; j++)
                cov[i * F + j] += (a[(size_t)r * F + i] - mean[i]) * (a[(size_t)r * F + j] - mean[j]) / N;
}

// Direct error of predicting each non-representative j from rep[j].
static double direct_error(const double *a, const float *w, const double *mean, const double *cov, const int *rep) {
    double num = 0, den = 0;
    for (int r = 0; r < N; r++) {
        const double *x = a + (size_t)r * F;
        double e[F];
        for (int j = 0; j < F; j++) {
            int q = rep[j];
            double beta = q == j ? 1 : cov[j * F + q] / cov[q * F + q];
            e[j] = x[j] - (beta * (x[q] - mean[q]) + mean[j]);
        }
        for (int c = 0; c < C; c++) {
            double ye = 0, ya = 0;
            for (int j = 0; j < F; j++) {
                ye += w[c * F + j] * e[j];
                ya += w[c * F + j] * x[j];
            }
            num += ye * ye;
            den += ya * ya;
        }
    }
    return num / den;
}

static void test_threshold_error(void **state) {
    (void)state;
    double *a = malloc((size_t)N * F * sizeof *a), mean[F], cov[F * F];
    float w[C * F];
    make_data(a, w);
    moments(a, mean, cov);
    kf_thresh_layer t;
    kf_error err = {0};
    double *cov_owned = malloc(sizeof cov);
    memcpy(cov_owned, cov, sizeof cov);
    assert_int_equal(kf_thresh_init(&t, w, C, F, cov_owned, mean, &err), KF_OK);

    // {0,1} merged: exact linear relation, zero error.
    int32_t lab1[F] = {0, 0, 1, 2, 3};
    double e;
    int reps[F];
    assert_int_equal(kf_thresh_error(&t, lab1, 4, &e, reps, &err), KF_OK);
    assert_true(e < 1e-12);

    // {2,3} merged and {0,1,4} merged: compare with the direct computation.
    int32_t lab2[F] = {0, 0, 1, 1, 0};
    assert_int_equal(kf_thresh_error(&t, lab2, 2, &e, reps, &err), KF_OK);
    int rep[F];
    for (int j = 0; j < F; j++) rep[j] = reps[lab2[j]];
    double ref = direct_error(a, w, mean, cov, rep);
    assert_true(ref > 1e-4); // a real loss, not a trivial zero
    print_message("error %.12g, direct %.12g\n", e, ref);
    assert_true(fabs(e - ref) <= 1e-6 * ref); // G = W^T W is formed in float
    // A pair's representative is its lower index (exact tie).
    assert_int_equal(reps[1], 2);

    // All singletons: nothing merged.
    int32_t lab3[F] = {0, 1, 2, 3, 4};
    assert_int_equal(kf_thresh_error(&t, lab3, 5, &e, NULL, &err), KF_OK);
    assert_true(e < 1e-12);

    // Bad labels are refused.
    int32_t bad[F] = {0, 1, 2, 3, 9};
    assert_int_equal(kf_thresh_error(&t, bad, 5, &e, NULL, &err), KF_ERR_ARG);
    kf_thresh_free(&t);
    free(a);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_threshold_error)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
