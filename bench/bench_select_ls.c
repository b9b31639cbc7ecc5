// Times the greedy least-squares neuron selection of `kfuse compress --method
// fold` (kf_ffn_select_ls, the default grouping) against the plain refit of
// a kept set (kf_refit_solve), for the FFN widths of small and large models,
// keeping half of the neurons.
//   bench_select_ls [F:C ...]      (default: 768:288 2048:768 5632:2048 11008:4096)
// Data: activations of F neurons mixing F/4 latent factors plus noise,
// n = 2F rows, M = A^T A; w_down random. One warm-up, then 3 repeats; prints
// one row per size with the median and the range. BLAS threads follow
// OMP_NUM_THREADS.
#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/progress.h"
#include "core/rng.h"
#include "transform/ffn.h"
#include "transform/refit.h"

#define REPEATS 3

static kf_rng g_rng;
static double urand(void) { return 2 * kf_rng_uniform(&g_rng) - 1; } // [-1, 1)

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int bench(int F, int C) {
    const int n = 2 * F, r = F / 4, k = F / 2;
    double *Z = malloc(sizeof *Z * (size_t)n * r), *P = malloc(sizeof *P * (size_t)r * F);
    double *A = malloc(sizeof *A * (size_t)n * F), *M = malloc(sizeof *M * (size_t)F * F);
    double *G = malloc(sizeof *G * (size_t)k * k), *X = malloc(sizeof *X * (size_t)k * F);
    float *W = malloc(sizeof *W * (size_t)C * F), *Wn = malloc(sizeof *Wn * (size_t)C * k);
    int *idx = malloc(sizeof *idx * (size_t)F);
    if (!Z || !P || !A || !M || !G || !X || !W || !Wn || !idx) {
        fprintf(stderr, "bench_select_ls: out of memory for F=%d\n", F);
        return 1;
    }
    for (size_t i = 0; i < (size_t)n * r; i++) Z[i] = urand();
    for (size_t i = 0; i < (size_t)r * F; i++) P[i] = urand();
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, F, r, 1.0, Z, r, P, F, 0.0, A, F);
    for (size_t i = 0; i < (size_t)n * F; i++) A[i] += 0.05 * urand();
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, F, n, 1.0, A, F, 0.0, M, F);
    for (int i = 0; i < F; i++)
        for (int j = 0; j < i; j++) M[(size_t)i * F + j] = M[(size_t)j * F + i];
    for (size_t i = 0; i < (size_t)C * F; i++) W[i] = (float)urand();
    kf_error err = {0};
    double t_sel[REPEATS], t_fit[REPEATS];
    for (int rep = -1; rep < REPEATS; rep++) { // rep -1: warm-up
        double t0 = kf_time_now();
        if (kf_ffn_select_ls(M, W, C, F, k, 1e-3, idx, NULL, NULL, NULL, &err) != KF_OK) {
            fprintf(stderr, "bench_select_ls: %s\n", err.msg);
            return 1;
        }
        double t1 = kf_time_now();
        kf_refit_gather(M, F, idx, k, G, X);
        if (kf_refit_solve(G, X, k, F, W, C, 1e-3, NULL, Wn, &err) != KF_OK) {
            fprintf(stderr, "bench_select_ls: %s\n", err.msg);
            return 1;
        }
        double t2 = kf_time_now();
        if (rep >= 0) t_sel[rep] = t1 - t0, t_fit[rep] = t2 - t1;
    }
    qsort(t_sel, REPEATS, sizeof *t_sel, cmp_double);
    qsort(t_fit, REPEATS, sizeof *t_fit, cmp_double);
    printf("select_ls F=%d C=%d k=%d select_s=%.3f [%.3f, %.3f] refit_s=%.3f [%.3f, %.3f]\n", F, C, k,
           t_sel[REPEATS / 2], t_sel[0], t_sel[REPEATS - 1], t_fit[REPEATS / 2], t_fit[0], t_fit[REPEATS - 1]);
    fflush(stdout);
    free(Z), free(P), free(A), free(M), free(G), free(X), free(W), free(Wn), free(idx);
    return 0;
}

int main(int argc, char **argv) {
    kf_rng_seed(&g_rng, 1);
    const char *def[] = {"768:288", "2048:768", "5632:2048", "11008:4096"};
    int n = argc > 1 ? argc - 1 : 4;
    for (int i = 0; i < n; i++) {
        const char *s = argc > 1 ? argv[i + 1] : def[i];
        int F, C;
        if (sscanf(s, "%d:%d", &F, &C) != 2 || F < 4 || C < 1) {
            fprintf(stderr, "bench_select_ls: '%s' is not F:C\n", s);
            return 2;
        }
        if (bench(F, C) != 0) return 1;
    }
    return 0;
}
