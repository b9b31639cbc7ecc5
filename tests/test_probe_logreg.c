// Elastic-net logistic regression (src/probe/logreg.c) against scikit-learn:
// on fixtures made by tests/ref/probe_ref.py (saga to tol 1e-12), the
// objective at kfuse's solution is within 1e-4 relative of the objective at
// scikit-learn's, with the strong-L1 fixture's weights as sparse; and the
// smooth part's gradient matches central finite differences.
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "probe/logreg.h"
#include "test_util.h"

typedef struct {
    int N, D, K, balanced;
    double l1, l2, F_ref, acc_ref;
    int zeros_ref;
    float *X;
    int32_t *y;
} fixture;

static bool load(fixture *f, const char *name) {
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/fixtures/probe/%s", kf_test_root(), name);
    FILE *fp = fopen(path, "r");
    if (!fp) return false;
    bool ok = fscanf(fp, "%d %d %d %lf %lf %d", &f->N, &f->D, &f->K, &f->l1, &f->l2, &f->balanced) == 6;
    f->X = malloc(sizeof(float) * (size_t)f->N * (size_t)f->D);
    f->y = malloc(sizeof(int32_t) * (size_t)f->N);
    for (int i = 0; ok && i < f->N * f->D; i++) ok = fscanf(fp, "%f", &f->X[i]) == 1;
    for (int i = 0; ok && i < f->N; i++) ok = fscanf(fp, "%d", &f->y[i]) == 1;
    ok = ok && fscanf(fp, "%lf %lf %d", &f->F_ref, &f->acc_ref, &f->zeros_ref) == 3;
    fclose(fp);
    return ok;
}

static void check_fixture(const char *name, double max_zero_gap) {
    fixture f;
    assert_true(load(&f, name));
    kf_logreg_opts o = kf_logreg_defaults();
    o.l1 = f.l1, o.l2 = f.l2, o.balanced = f.balanced, o.max_iter = 2000, o.tol = 1e-10;
    kf_logreg m;
    kf_error err = {0};
    assert_int_equal(kf_logreg_train(&m, f.X, f.y, f.N, f.D, f.K, &o, &err), KF_OK);
    double F = kf_logreg_objective(&m, f.X, f.y, f.N, &o);
    double rel = fabs(F - f.F_ref) / f.F_ref;
    int zeros = 0;
    for (int j = 0; j < f.K * f.D; j++) zeros += m.w[j] == 0;
    printf("%s: F %.10g (sklearn %.10g, rel %.2e) %d iterations, %d zero weights (sklearn %d)\n", name, F, f.F_ref,
           rel, m.iters, zeros, f.zeros_ref);
    assert_true(fabs(m.objective - F) <= 1e-6 * F); // the solver's own value is the objective
    assert_true(rel < 1e-4);
    assert_true(abs(zeros - f.zeros_ref) <= max_zero_gap * f.K * f.D);
    int32_t *pred = malloc(sizeof *pred * (size_t)f.N);
    assert_int_equal(kf_logreg_predict(&m, f.X, f.N, pred, &err), KF_OK);
    int hit = 0;
    for (int i = 0; i < f.N; i++) hit += pred[i] == f.y[i];
    assert_true(fabs((double)hit / f.N - f.acc_ref) <= 0.01);
    free(pred);
    kf_logreg_free(&m);
    free(f.X);
    free(f.y);
}

// l1 = 0.02, l2 = 0.001: a third of the weights are exactly zero at the optimum.
static void test_sklearn_l1(void **state) {
    (void)state;
    check_fixture("logreg_l1.txt", 0.05);
}

// Dalvi's l1 = l2 = 1e-5 with balanced class weights.
static void test_sklearn_dalvi(void **state) {
    (void)state;
    check_fixture("logreg_dalvi.txt", 1.0);
}

static void test_gradient(void **state) {
    (void)state;
    enum { N = 50, D = 6, K = 3, P = K * D + K };
    float X[N * D], sw[N], z[N * K], wf[P];
    int32_t y[N];
    double th[P], g[P], gd[P];
    for (int i = 0; i < N * D; i++) X[i] = (float)kf_test_urand();
    for (int i = 0; i < N; i++) y[i] = i % K, sw[i] = 0.5f + (float)(i % 4) * 0.25f;
    for (int j = 0; j < P; j++) th[j] = 0.7 * kf_test_urand();
    const double l2 = 0.05;
    kf_logreg_smooth(th, X, y, sw, N, D, K, l2, z, wf, g);
    double worst = 0;
    for (int j = 0; j < P; j++) {
        const double h = 1e-3, save = th[j];
        th[j] = save + h;
        double fp = kf_logreg_smooth(th, X, y, sw, N, D, K, l2, z, wf, NULL);
        th[j] = save - h;
        double fm = kf_logreg_smooth(th, X, y, sw, N, D, K, l2, z, wf, NULL);
        th[j] = save;
        gd[j] = (fp - fm) / (2 * h);
        double e = fabs(gd[j] - g[j]);
        worst = e > worst ? e : worst;
    }
    printf("gradient vs central differences: max abs error %.2e\n", worst);
    assert_true(worst < 2e-5);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gradient),
        cmocka_unit_test(test_sklearn_l1),
        cmocka_unit_test(test_sklearn_dalvi),
    };
    return kf_test_status(cmocka_run_group_tests(tests, NULL, NULL));
}
