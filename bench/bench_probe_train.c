// Times one probe of `kfuse probe` on every column of a feature file: the
// oracle probe (Dalvi et al.: all neurons of all blocks), standardised as
// src/probe/dalvi.c does, trained by kf_logreg_train with kfuse probe's
// defaults (l1 = l2 = 1e-5, max_iter 500, tol 1e-7) unless overridden.
//   bench_probe_train DIR [--max-iter N] [--l1 X] [--l2 X] [--repeats R]
// DIR is a `kfuse probe -o DIR` folder: DIR/features/train.npy and
// train_labels.npy. Prints one JSON row per repeat (seconds, iterations,
// seconds per iteration, converged, objective, training accuracy) and a
// summary row (median, min, max). Threads follow OMP_NUM_THREADS.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/progress.h"
#include "probe/dalvi.h"
#include "probe/features.h"
#include "probe/logreg.h"

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// The (n) '<i4' vector of a .npy v1.0 file, or NULL.
static int32_t *read_labels(const char *path, int64_t n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    unsigned char h[10];
    int32_t *y = malloc((size_t)n * sizeof *y);
    bool ok = y && fread(h, 1, 10, f) == 10 && !memcmp(h, "\x93NUMPY\x01\x00", 8);
    ok = ok && fseek(f, 10 + (h[8] | h[9] << 8), SEEK_SET) == 0 && fread(y, sizeof *y, (size_t)n, f) == (size_t)n;
    fclose(f);
    if (!ok) free(y);
    return ok ? y : NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: bench_probe_train DIR [--max-iter N] [--l1 X] [--l2 X] [--repeats R]\n");
        return 2;
    }
    kf_logreg_opts o = kf_logreg_defaults();
    int repeats = 1;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--max-iter")) o.max_iter = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--l1")) o.l1 = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--l2")) o.l2 = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--repeats")) repeats = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "bench_probe_train: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (repeats < 1 || repeats > 64) repeats = 1;
    char path[2048];
    kf_error err = {0};
    kf_features fx;
    snprintf(path, sizeof path, "%s/features/train.npy", argv[1]);
    if (kf_features_open(&fx, path, &err) != KF_OK) {
        fprintf(stderr, "bench_probe_train: %s\n", err.msg);
        return 1;
    }
    const int64_t N = fx.n_rows;
    const int D = (int)fx.n_cols;
    snprintf(path, sizeof path, "%s/features/train_labels.npy", argv[1]);
    int32_t *y = read_labels(path, N);
    double *mean = malloc((size_t)D * sizeof *mean), *inv = malloc((size_t)D * sizeof *inv);
    int64_t *cols = malloc((size_t)D * sizeof *cols);
    float *X = malloc((size_t)N * (size_t)D * sizeof *X);
    int32_t *pred = malloc((size_t)N * sizeof *pred);
    if (!y || !mean || !inv || !cols || !X || !pred) {
        fprintf(stderr, "bench_probe_train: cannot read %s or out of memory for %lld x %d\n", path, (long long)N, D);
        return 1;
    }
    int K = 0;
    for (int64_t i = 0; i < N; i++) K = y[i] + 1 > K ? y[i] + 1 : K;
    const double t_prep = kf_time_now();
    if (kf_probe_col_stats(&fx, mean, inv, &err) != KF_OK) {
        fprintf(stderr, "bench_probe_train: %s\n", err.msg);
        return 1;
    }
    for (int j = 0; j < D; j++) cols[j] = j;
    kf_features_gather(&fx, cols, D, X);
    for (int64_t i = 0; i < N; i++)
        for (int j = 0; j < D; j++) X[i * D + j] = (float)((X[i * D + j] - mean[j]) * inv[j]);
    const double prep_s = kf_time_now() - t_prep;
    double *sec = malloc((size_t)repeats * sizeof *sec);
    for (int r = 0; r < repeats; r++) {
        kf_logreg m;
        const double t0 = kf_time_now();
        if (kf_logreg_train(&m, X, y, N, D, K, &o, &err) != KF_OK) {
            fprintf(stderr, "bench_probe_train: %s\n", err.msg);
            return 1;
        }
        sec[r] = kf_time_now() - t0;
        if (kf_logreg_predict(&m, X, N, pred, &err) != KF_OK) {
            fprintf(stderr, "bench_probe_train: %s\n", err.msg);
            return 1;
        }
        int64_t hit = 0;
        for (int64_t i = 0; i < N; i++) hit += pred[i] == y[i];
        printf("{\"bench\": \"probe_train\", \"rows\": %lld, \"features\": %d, \"classes\": %d, \"l1\": %g, \"l2\": %g, "
               "\"max_iter\": %d, \"repeat\": %d, \"seconds\": %.2f, \"iterations\": %d, \"seconds_per_iteration\": %.4f, "
               "\"converged\": %s, \"objective\": %.8f, \"train_accuracy\": %.4f, \"standardise_seconds\": %.2f}\n",
               (long long)N, D, K, o.l1, o.l2, o.max_iter, r + 1, sec[r], m.iters, m.iters ? sec[r] / m.iters : 0.0,
               m.converged ? "true" : "false", m.objective, (double)hit / (double)N, prep_s);
        fflush(stdout);
        kf_logreg_free(&m);
    }
    qsort(sec, (size_t)repeats, sizeof *sec, cmp_double);
    printf("{\"bench\": \"probe_train_summary\", \"repeats\": %d, \"median_seconds\": %.2f, \"min\": %.2f, \"max\": %.2f}\n",
           repeats, sec[repeats / 2], sec[0], sec[repeats - 1]);
    free(sec), free(y), free(mean), free(inv), free(cols), free(X), free(pred);
    kf_features_close(&fx);
    return 0;
}
