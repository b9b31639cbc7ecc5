// Greedy least-squares neuron selection (kf_ffn_select_ls, fold --group ls)
// on synthetic activations with known structure:
// - the refitted columns it maintains by rank-b updates equal a direct
//   Cholesky refit of the kept set (kf_refit_solve), to 1e-6 of their scale;
// - removing one neuron removes the one a brute-force search over all
//   single removals finds cheapest (the OBS cost is the true cost), and the
//   threshold it reports is that cost over the layer's output energy;
// - of a neuron present twice it keeps one copy (a batch never takes both
//   copies), and removing one copy alone reproduces the output;
// - the removal order of a run to a small width passes through the kept set
//   of a run to a larger one (what the width allocation relies on);
// - its refitted error is no larger than that of Wanda's choice or of any of
//   20 random subsets, each refitted the same way.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "transform/ffn.h"
#include "test_util.h"
#include "transform/refit.h"

// Activations A (n,F): F neurons mixing r latent factors, each scaled by its
// own magnitude (spread over two decades) plus a little noise, and a random
// w_down (C,F).
static double *make_acts(int n, int F, int r, int C, float *W) {
    double *Z = malloc(sizeof *Z * (size_t)n * r), *P = malloc(sizeof *P * (size_t)r * F);
    double *A = malloc(sizeof *A * (size_t)n * F);
    for (int i = 0; i < n * r; i++) Z[i] = kf_test_urand();
    for (int i = 0; i < r * F; i++) P[i] = kf_test_urand();
    for (int t = 0; t < n; t++)
        for (int j = 0; j < F; j++) {
            double v = 0.05 * kf_test_urand();
            for (int q = 0; q < r; q++) v += Z[(size_t)t * r + q] * P[(size_t)q * F + j];
            A[(size_t)t * F + j] = v * pow(10.0, 2.0 * j / F - 1.0);
        }
    for (int i = 0; i < C * F; i++) W[i] = (float)kf_test_urand();
    free(Z);
    free(P);
    return A;
}

// Neuron dst becomes 2 x neuron src plus noise of relative size eps.
static void copy_neuron(double *A, int n, int F, int src, int dst, double eps) {
    for (int t = 0; t < n; t++) A[(size_t)t * F + dst] = 2 * A[(size_t)t * F + src] * (1 + eps * kf_test_urand());
}

// M (F,F) = A^T A.
static void second_moment(const double *A, int n, int F, double *M) {
    for (int i = 0; i < F; i++)
        for (int j = 0; j < F; j++) {
            double s = 0;
            for (int t = 0; t < n; t++) s += A[(size_t)t * F + i] * A[(size_t)t * F + j];
            M[(size_t)i * F + j] = s;
        }
}

static void make_data(int n, int F, int r, int C, double *M, float *W) {
    double *A = make_acts(n, F, r, C, W);
    second_moment(A, n, F, M);
    free(A);
}

// Ridge objective of keeping idx (k) refitted, and the refitted columns;
// lambda_abs is the ridge as kf_ffn_select_ls sets it.
static double refit_objective(const double *M, int64_t n, const float *W, int C, int F, const int *idx, int k,
                              double lambda_abs, float *Wn) {
    kf_error err = {0};
    double *G = malloc(sizeof *G * (size_t)k * k), *X = malloc(sizeof *X * (size_t)k * F);
    kf_refit_gather(M, F, idx, k, G, X);
    double tr = 0;
    for (int i = 0; i < k; i++) tr += G[(size_t)i * k + i];
    assert_int_equal(kf_refit_solve(G, X, k, F, W, C, lambda_abs / (tr / k), NULL, Wn, &err), KF_OK);
    double e, ref, w2 = 0;
    assert_int_equal(kf_ffn_error(M, n, W, C, F, idx, k, Wn, &e, &ref, &err), KF_OK);
    for (int i = 0; i < C * k; i++) w2 += (double)Wn[i] * Wn[i];
    free(G);
    free(X);
    return e * (double)n + lambda_abs * w2;
}

static double mean_diag(const double *M, int F) {
    double tr = 0;
    for (int j = 0; j < F; j++) tr += M[(size_t)j * F + j];
    return tr / F;
}

static void test_updates_equal_direct_refit(void **state) {
    const int n = 3000, F = 300, r = 40, C = 16, k = 100; // F/128 = 2: batches of 2 early on
    const double lam = 1e-3;
    double *M = malloc(sizeof *M * (size_t)F * F);
    float *W = malloc(sizeof *W * (size_t)C * F), *Wn = malloc(sizeof *Wn * (size_t)C * k);
    float *Wr = malloc(sizeof *Wr * (size_t)C * k);
    int idx[300];
    kf_error err = {0};
    make_data(n, F, r, C, M, W);
    assert_int_equal(kf_ffn_select_ls(M, W, C, F, k, lam, idx, Wn, NULL, NULL, &err), KF_OK);
    for (int i = 1; i < k; i++) assert_true(idx[i] > idx[i - 1]);
    refit_objective(M, n, W, C, F, idx, k, lam * mean_diag(M, F), Wr);
    double mx = 0, diff = 0;
    for (int i = 0; i < C * k; i++) {
        assert_true(isfinite(Wn[i]));
        mx = fmax(mx, fabs(Wr[i])), diff = fmax(diff, fabs(Wn[i] - Wr[i]));
    }
    printf("select_ls columns vs direct refit: max |diff| %.3g of max %.3g\n", diff, mx);
    assert_true(diff <= 1e-6 * mx);
    free(M);
    free(W);
    free(Wn);
    free(Wr);
}

static void test_single_removal_is_cheapest(void **state) {
    // 39 nearly independent neurons and a large near-copy of neuron 30: the
    // cheapest removal is one of the copies, not the smallest neuron.
    const int n = 800, F = 40, r = 60, C = 8;
    const double lam = 1e-4;
    double *M = malloc(sizeof *M * (size_t)F * F);
    float *W = malloc(sizeof *W * (size_t)C * F), *Wn = malloc(sizeof *Wn * (size_t)C * F);
    int idx[40], sub[40];
    kf_error err = {0};
    double *A = make_acts(n, F, r, C, W);
    copy_neuron(A, n, F, 30, 39, 0.02);
    second_moment(A, n, F, M);
    free(A);
    double t_cut;
    assert_int_equal(kf_ffn_select_ls(M, W, C, F, F - 1, lam, idx, NULL, &t_cut, NULL, &err), KF_OK);
    int removed = -1;
    for (int j = 0, i = 0; j < F; j++)
        if (i < F - 1 && idx[i] == j) i++;
        else removed = j;
    const double la = lam * mean_diag(M, F);
    for (int i = 0; i < F; i++) sub[i] = i;
    const double J0 = refit_objective(M, n, W, C, F, sub, F, la, Wn);
    double best = INFINITY, second = INFINITY;
    int arg = -1;
    for (int j = 0; j < F; j++) { // cost of removing j = objective increase, refitted
        for (int i = 0, q = 0; i < F; i++)
            if (i != j) sub[q++] = i;
        double d = refit_objective(M, n, W, C, F, sub, F - 1, la, Wn) - J0;
        if (d < best) second = best, best = d, arg = j;
        else if (d < second) second = d;
    }
    printf("single removal: select_ls %d, brute force %d (cost %.4g, next %.4g)\n", removed, arg, best, second);
    assert_true(second > best * 1.05); // the answer is not a near tie
    assert_int_equal(removed, arg);
    // the reported threshold is that cost as a share of the output energy
    double e, ref;
    for (int i = 0; i < F; i++) sub[i] = i;
    assert_int_equal(kf_ffn_error(M, n, W, C, F, sub, F, W, &e, &ref, &err), KF_OK);
    printf("threshold %.6g, brute-force cost / energy %.6g\n", t_cut, best / (ref * n));
    assert_true(fabs(t_cut - best / (ref * n)) <= 1e-6 * t_cut);
    free(M);
    free(W);
    free(Wn);
}

static void test_duplicate_pair(void **state) {
    // 511 nearly independent neurons and an exact copy of one: the copies are
    // the two cheapest removals, and the first batch (512 / 128 = 4, capped
    // at the 2 to remove) must not take both.
    const int n = 1500, F = 512, r = 700, C = 8, k = F - 2;
    double *M = malloc(sizeof *M * (size_t)F * F);
    float *W = malloc(sizeof *W * (size_t)C * F), *Wn = malloc(sizeof *Wn * (size_t)C * k);
    int idx[512], keep_all[512];
    kf_error err = {0};
    double *A = make_acts(n, F, r, C, W);
    copy_neuron(A, n, F, 400, 511, 0.0);
    second_moment(A, n, F, M);
    free(A);
    assert_int_equal(kf_ffn_select_ls(M, W, C, F, k, 1e-6, idx, Wn, NULL, NULL, &err), KF_OK);
    int kept = 0;
    for (int i = 0; i < k; i++) kept += idx[i] == 400 || idx[i] == 511;
    double e, ref, e1, ref1;
    assert_int_equal(kf_ffn_error(M, n, W, C, F, idx, k, Wn, &e, &ref, &err), KF_OK);
    // the one other neuron removed costs about what removing it alone costs
    for (int i = 0; i < 511; i++) keep_all[i] = i;
    float *W1 = malloc(sizeof *W1 * (size_t)C * 511);
    assert_int_equal(kf_ffn_select_ls(M, W, C, F, 511, 1e-6, keep_all, W1, NULL, NULL, &err), KF_OK);
    assert_int_equal(kf_ffn_error(M, n, W, C, F, keep_all, 511, W1, &e1, &ref1, &err), KF_OK);
    printf("duplicate pair: %d copies kept, relative error %.3g (one copy removed alone: %.3g)\n", kept, e / ref, e1 / ref1);
    assert_int_equal(kept, 1);
    assert_true(e1 <= 1e-6 * ref1);
    free(M);
    free(W);
    free(W1);
    free(Wn);
}

static void test_not_worse_than_other_choices(void **state) {
    const int n = 2000, F = 200, r = 30, C = 16, k = 60;
    const double lam = 1e-3;
    double *M = malloc(sizeof *M * (size_t)F * F), score[200];
    float *W = malloc(sizeof *W * (size_t)C * F), *Wn = malloc(sizeof *Wn * (size_t)C * k);
    int idx[200], other[200];
    kf_error err = {0};
    make_data(n, F, r, C, M, W);
    const double la = lam * mean_diag(M, F);
    assert_int_equal(kf_ffn_select_ls(M, W, C, F, k, lam, idx, NULL, NULL, NULL, &err), KF_OK);
    double mine = refit_objective(M, n, W, C, F, idx, k, la, Wn);
    for (int j = 0; j < F; j++) { // structured Wanda: sqrt(E a^2) * sum |w_down[:, j]|
        double c1 = 0;
        for (int c = 0; c < C; c++) c1 += fabs(W[(size_t)c * F + j]);
        score[j] = sqrt(M[(size_t)j * F + j] / n) * c1;
    }
    assert_int_equal(kf_ffn_top_k(score, F, k, other, &err), KF_OK);
    double wanda = refit_objective(M, n, W, C, F, other, k, la, Wn), best_rand = INFINITY;
    for (int t = 0; t < 20; t++) {
        for (int j = 0; j < F; j++) score[j] = kf_test_urand();
        assert_int_equal(kf_ffn_top_k(score, F, k, other, &err), KF_OK);
        best_rand = fmin(best_rand, refit_objective(M, n, W, C, F, other, k, la, Wn));
    }
    printf("refitted objective: select_ls %.4g, wanda %.4g, best of 20 random %.4g\n", mine, wanda, best_rand);
    assert_true(mine <= wanda);
    assert_true(mine <= best_rand);
    free(M);
    free(W);
    free(Wn);
}

static void test_removal_order_nests(void **state) {
    // F < 256: one neuron per batch, so a run to width 50 passes through the
    // set a run to width 120 ends with
    const int n = 1500, F = 200, r = 40, C = 8;
    double *M = malloc(sizeof *M * (size_t)F * F);
    float *W = malloc(sizeof *W * (size_t)C * F);
    int idx50[200], idx120[200], removed[200];
    kf_error err = {0};
    make_data(n, F, r, C, M, W);
    assert_int_equal(kf_ffn_select_ls(M, W, C, F, 50, 1e-3, idx50, NULL, NULL, removed, &err), KF_OK);
    assert_int_equal(kf_ffn_select_ls(M, W, C, F, 120, 1e-3, idx120, NULL, NULL, NULL, &err), KF_OK);
    unsigned char gone[200] = {0};
    for (int i = 0; i < F - 50; i++) {
        assert_true(removed[i] >= 0 && removed[i] < F && !gone[removed[i]]);
        gone[removed[i]] = 1;
    }
    for (int i = 0; i < 50; i++) assert_false(gone[idx50[i]]);
    memset(gone, 0, sizeof gone);
    for (int i = 0; i < F - 120; i++) gone[removed[i]] = 1;
    for (int i = 0, q = 0; i < F; i++)
        if (!gone[i]) assert_int_equal(idx120[q++], i);
    free(M);
    free(W);
}

static void test_bad_arguments(void **state) {
    double M[4] = {1, 0, 0, 1};
    float W[2] = {1, 1};
    int idx[2];
    kf_error err = {0};
    assert_int_equal(kf_ffn_select_ls(M, W, 1, 2, 3, 1e-3, idx, NULL, NULL, NULL, &err), KF_ERR_ARG);
    assert_int_equal(kf_ffn_select_ls(M, W, 1, 2, 0, 1e-3, idx, NULL, NULL, NULL, &err), KF_ERR_ARG);
    double I2[4] = {1, 2, 2, 1}; // indefinite: no second moment of real activations
    assert_int_equal(kf_ffn_select_ls(I2, W, 1, 2, 1, 0.0, idx, NULL, NULL, NULL, &err), KF_ERR_INTERNAL);
    assert_non_null(strstr(err.msg, "lambda"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_updates_equal_direct_refit),
        cmocka_unit_test(test_single_removal_is_cheapest),
        cmocka_unit_test(test_duplicate_pair),
        cmocka_unit_test(test_not_worse_than_other_choices),
        cmocka_unit_test(test_removal_order_nests),
        cmocka_unit_test(test_bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
