// Times average-linkage correlation clustering (kf_linkage_average) on
// synthetic correlation-like distances for the neuron counts of small and
// large FFN layers.
//   bench_corrclust [n ...]      (default: 2048 11008)
// Data: each neuron i gets a unit vector u_i in R^32 made of 1-3 of 12 latent
// factors plus noise; distance 1 - |u_i . u_j| (the correlation of such
// variables). Prints the time to build the distances, to link, and to cut the
// tree at t = 0.1 .. 0.9 with the redundancy share at each. The linkage is
// single-threaded: its CPU time is the figure to compare on a shared machine.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "analyze/corrclust.h"
#include "core/progress.h"
#include "core/rng.h"

#define R 32
#define N_FACTORS 12

static kf_rng g_rng;

static int bench(int n) {
    float *u = malloc((size_t)n * R * sizeof *u), F[N_FACTORS][R];
    float *dist = malloc((size_t)n * (n - 1) / 2 * sizeof *dist);
    int32_t *labels = malloc((size_t)n * sizeof *labels);
    if (!u || !dist || !labels) {
        fprintf(stderr, "out of memory for n = %d\n", n);
        return 1;
    }
    for (int f = 0; f < N_FACTORS; f++)
        for (int j = 0; j < R; j++) F[f][j] = (float)kf_rng_normal(&g_rng);
    for (int i = 0; i < n; i++) {
        float *x = u + (size_t)i * R;
        double noise = 0.3 + 2 * kf_rng_uniform(&g_rng), s = 0;
        for (int j = 0; j < R; j++) x[j] = (float)(noise * kf_rng_normal(&g_rng));
        int nf = 1 + (int)(3 * kf_rng_uniform(&g_rng));
        for (int f = 0; f < nf; f++) {
            int which = (int)(N_FACTORS * kf_rng_uniform(&g_rng));
            for (int j = 0; j < R; j++) x[j] += F[which][j];
        }
        for (int j = 0; j < R; j++) s += (double)x[j] * x[j];
        for (int j = 0; j < R; j++) x[j] = (float)(x[j] / sqrt(s));
    }
    double t0 = kf_time_now();
    size_t p = 0;
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++) {
            const float *a = u + (size_t)i * R, *b = u + (size_t)j * R;
            float dot = 0;
            for (int k = 0; k < R; k++) dot += a[k] * b[k];
            dist[p++] = 1.0f - fabsf(dot);
        }
    double t1 = kf_time_now();
    clock_t c1 = clock();
    kf_linkage z;
    kf_error err;
    if (kf_linkage_average(dist, n, &z, &err) != KF_OK) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    double t2 = kf_time_now(), cpu = (double)(clock() - c1) / CLOCKS_PER_SEC;
    printf("n=%d  condensed %.0f MB  distances %.2f s  linkage %.2f s wall, %.2f s cpu", n, (double)p * 4 / 1e6,
           t1 - t0, t2 - t1, cpu);
    double tc = 0;
    printf("\n  t:          ");
    for (int s = 1; s <= 9; s++) printf(" %5.1f", s / 10.0);
    printf("\n  clusters:   ");
    for (int s = 1; s <= 9; s++) {
        int k;
        double a = kf_time_now();
        kf_linkage_cut(&z, s / 10.0, labels, &k, &err);
        tc += kf_time_now() - a;
        printf(" %5d", k);
    }
    printf("\n  redundancy: ");
    for (int s = 1; s <= 9; s++) printf(" %5.3f", kf_linkage_redundancy(&z, s / 10.0));
    printf("\n  9 cuts %.4f s\n", tc);
    kf_linkage_free(&z);
    free(u);
    free(dist);
    free(labels);
    return 0;
}

int main(int argc, char **argv) {
    kf_rng_seed(&g_rng, 1);
    int rc = 0;
    if (argc < 2) {
        rc |= bench(2048);
        rc |= bench(11008);
    }
    for (int a = 1; a < argc; a++) {
        int n = atoi(argv[a]);
        if (n < 2 || n > 65536) {
            fprintf(stderr, "n must be in [2, 65536]: %s\n", argv[a]);
            return 2;
        }
        rc |= bench(n);
    }
    return rc;
}
