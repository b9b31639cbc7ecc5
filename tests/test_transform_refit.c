// Least-squares refit of w_down: streamed Gram matrices + Cholesky solve
// against the numpy reference (tests/ref/refit_ref.py, fixture
// tests/fixtures/transform/refit.txt; tolerance 1e-6 of max |W'|, the
// float32 rounding of the output), the Gram blocks gathered from kf_moments,
// exact recovery when nothing is removed, and a singular system.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "stats/moments.h"
#include "transform/refit.h"

typedef struct {
    int n, F, k, C;
    double lam;
    float *A, *Ak, *W, *Wn;
} fixture;

static float *read_floats(FILE *f, int64_t count) {
    float *x = malloc(sizeof *x * (size_t)count);
    for (int64_t i = 0; i < count; i++) {
        double v;
        if (fscanf(f, "%lf", &v) != 1) fail_msg("refit fixture: short read");
        x[i] = (float)v;
    }
    return x;
}

static fixture load_fixture(void) {
    char path[1024];
    const char *root = getenv("KF_ROOT");
    snprintf(path, sizeof path, "%s/tests/fixtures/transform/refit.txt", root ? root : ".");
    FILE *f = fopen(path, "r");
    if (!f) fail_msg("cannot open %s", path);
    fixture x;
    if (fscanf(f, "%d %d %d %d %lf", &x.n, &x.F, &x.k, &x.C, &x.lam) != 5) fail_msg("bad header in %s", path);
    x.A = read_floats(f, (int64_t)x.n * x.F);
    x.Ak = read_floats(f, (int64_t)x.n * x.k);
    x.W = read_floats(f, (int64_t)x.C * x.F);
    x.Wn = read_floats(f, (int64_t)x.C * x.k);
    fclose(f);
    return x;
}

static void free_fixture(fixture *x) {
    free(x->A);
    free(x->Ak);
    free(x->W);
    free(x->Wn);
}

static void test_refit_vs_numpy(void **state) {
    fixture x = load_fixture();
    kf_error err = {0};
    kf_refit_acc acc;
    assert_int_equal(kf_refit_acc_init(&acc, x.k, x.F, &err), KF_OK);
    // Streamed in uneven chunks (one crosses a KF_REFIT_BLOCK boundary).
    int cuts[] = {0, 100, 257, x.n};
    for (int c = 0; c < 3; c++)
        kf_refit_acc_add(&acc, x.Ak + (size_t)cuts[c] * x.k, x.A + (size_t)cuts[c] * x.F, cuts[c + 1] - cuts[c]);
    assert_int_equal(acc.n, x.n);
    float *Wn = malloc(sizeof *Wn * (size_t)x.C * x.k);
    assert_int_equal(kf_refit_solve(acc.G, acc.X, x.k, x.F, x.W, x.C, x.lam, NULL, Wn, &err), KF_OK);
    double mx = 0, diff = 0;
    for (int i = 0; i < x.C * x.k; i++) {
        mx = fmax(mx, fabs(x.Wn[i]));
        diff = fmax(diff, fabs(Wn[i] - x.Wn[i]));
    }
    printf("refit vs numpy: max |diff| %.3g, max |W'| %.3g\n", diff, mx);
    assert_true(diff <= 1e-6 * mx);
    free(Wn);
    kf_refit_acc_free(&acc);
    free_fixture(&x);
}

static void test_gather_from_moments(void **state) {
    fixture x = load_fixture();
    kf_error err = {0};
    kf_moments mo;
    assert_int_equal(kf_moments_init(&mo, x.F, 0, 0.0f, &err), KF_OK);
    assert_int_equal(kf_moments_add(&mo, x.A, x.n, &err), KF_OK);
    double *M = malloc(sizeof *M * (size_t)x.F * x.F);
    assert_int_equal(kf_refit_second_moment(&mo, M, &err), KF_OK);
    int idx[] = {3, 0, 7, 11};
    const int k = 4;
    float *Ak = malloc(sizeof *Ak * (size_t)x.n * k);
    for (int r = 0; r < x.n; r++)
        for (int j = 0; j < k; j++) Ak[(size_t)r * k + j] = x.A[(size_t)r * x.F + idx[j]];
    kf_refit_acc acc;
    assert_int_equal(kf_refit_acc_init(&acc, k, x.F, &err), KF_OK);
    kf_refit_acc_add(&acc, Ak, x.A, x.n);
    double G[16], X[4 * 12];
    assert_int_equal(x.F, 12);
    kf_refit_gather(M, x.F, idx, k, G, X);
    for (int a = 0; a < k; a++) {
        for (int b = a; b < k; b++) assert_true(fabs(G[a * k + b] - acc.G[a * k + b]) <= 1e-9 * fabs(acc.G[a * k + b]) + 1e-9);
        for (int j = 0; j < x.F; j++)
            assert_true(fabs(X[a * x.F + j] - acc.X[a * x.F + j]) <= 1e-9 * fabs(acc.X[a * x.F + j]) + 1e-9);
    }
    kf_refit_acc_free(&acc);
    kf_moments_free(&mo);
    free(Ak);
    free(M);
    free_fixture(&x);
}

static void test_identity_and_singular(void **state) {
    fixture x = load_fixture();
    kf_error err = {0};
    kf_refit_acc acc;
    // Keeping every neuron with a negligible ridge returns W itself.
    assert_int_equal(kf_refit_acc_init(&acc, x.F, x.F, &err), KF_OK);
    kf_refit_acc_add(&acc, x.A, x.A, x.n);
    float *Wn = malloc(sizeof *Wn * (size_t)x.C * x.F);
    assert_int_equal(kf_refit_solve(acc.G, acc.X, x.F, x.F, x.W, x.C, 1e-12, NULL, Wn, &err), KF_OK);
    for (int i = 0; i < x.C * x.F; i++) assert_true(fabs(Wn[i] - x.W[i]) <= 1e-5);
    // All-zero activations with no ridge: not positive definite, an error.
    memset(acc.G, 0, sizeof *acc.G * (size_t)x.F * x.F);
    assert_int_equal(kf_refit_solve(acc.G, acc.X, x.F, x.F, x.W, x.C, 0.0, NULL, Wn, &err), KF_ERR_INTERNAL);
    assert_non_null(strstr(err.msg, "not positive definite"));
    free(Wn);
    kf_refit_acc_free(&acc);
    free_fixture(&x);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refit_vs_numpy),
        cmocka_unit_test(test_gather_from_moments),
        cmocka_unit_test(test_identity_and_singular),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
