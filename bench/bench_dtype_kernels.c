// Decode and prefill kernels for weights kept as F16/BF16/Q8_0
// (runtime/matvec_dtype.h), on one FFN matrix of Llama-2-7B's shape.
//
//   bench_dtype_kernels [-oc OC] [-c C] [-n N] [-r REPEATS] [-tile FLOATS]
//   (default 11008 x 4096, N 256, 5 repeats, prefill tiles of 2^20 floats)
//
// matvec rows: y = W x through every variant this CPU runs, per dtype, and
// the fp32 kf_matvec, as weight bytes per second (W far exceeds the caches,
// so this is the bandwidth each variant reaches). prefill rows: Y (N, OC) =
// X (N, C) W^T by fp32 tiles + cblas_sgemm (kf_matmul_dt_tiles), by
// oneDNN's BF16 matmul where kf_matmul_dt takes it (BF16 with oneDNN), and
// fp32 sgemm on fp32 W, as GFLOP/s. (cblas_sbgemm, a BF16 GEMM, is declared in
// Debian's OpenBLAS 0.3.21 header but not exported by its library, built
// without BUILD_BFLOAT16, so it cannot be measured here.) One warm-up, then
// REPEATS timed runs; one JSON row per measurement (median/min/max).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/progress.h"
#include "eval/bench.h"
#include "runtime/kernels.h"
#include "runtime/matvec_dtype.h"

static void emit(const char *kind, const char *dtype, const char *variant, const double *v, int n, const char *unit) {
    kf_bench_stat s = kf_bench_summarise((double *)v, n);
    printf("{\"test\": \"%s\", \"dtype\": \"%s\", \"variant\": \"%s\", \"repeats\": %d, \"%s_median\": %.2f, "
           "\"min\": %.2f, \"max\": %.2f}\n",
           kind, dtype, variant, n, unit, s.median, s.min, s.max);
    fflush(stdout);
}

int main(int argc, char **argv) {
    int OC = 11008, C = 4096, N = 256, repeats = 5;
    int64_t tile_floats = 1 << 20;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "-oc")) OC = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-c")) C = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-n")) N = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-r")) repeats = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-tile")) tile_floats = atoll(argv[i + 1]);
        else {
            fprintf(stderr, "usage: bench_dtype_kernels [-oc OC] [-c C] [-n N] [-r REPEATS] [-tile FLOATS]\n");
            return 2;
        }
    }
    if (tile_floats < C || OC < 1 || C < 32 || C % 32 || N < 1 || repeats < 1) return 2;
    const int64_t n = (int64_t)OC * C;
    float *w = malloc(sizeof(float) * (size_t)n), *x = malloc(sizeof(float) * (size_t)C * N);
    float *y = malloc(sizeof(float) * (size_t)OC * N), *tile = malloc(sizeof(float) * (size_t)tile_floats);
    void *q = malloc(kf_dtype_size(KF_DTYPE_F32, n)), *xs = malloc(kf_matvec_dt_scratch(C));
    double *v = malloc(sizeof(double) * (size_t)repeats);
    if (!w || !x || !y || !tile || !q || !xs || !v) return 1;
    for (int64_t i = 0; i < n; i++) w[i] = 0.02f * (float)((i * 7919) % 2001 - 1000) / 1000.0f;
    for (int64_t i = 0; i < (int64_t)C * N; i++) x[i] = (float)((i * 31) % 200 - 100) / 100.0f;

    for (int r = -1; r < repeats; r++) { // fp32 for scale
        double t0 = kf_time_now();
        kf_matvec(y, w, x, OC, C);
        if (r >= 0) v[r] = (double)n * 4 / (kf_time_now() - t0) / 1e9;
    }
    emit("matvec", "F32", "kf_matvec", v, repeats, "gbps");

    const kf_dtype dts[] = {KF_DTYPE_BF16, KF_DTYPE_F16, KF_DTYPE_Q8_0};
    for (int k = 0; k < 3; k++) {
        const kf_dtype d = dts[k];
        kf_f32_to_dtype(d, w, q, n);
        const double bytes = (double)kf_dtype_size(d, n);
        for (int var = 0; var < KF_MV_COUNT; var++) {
            if (!kf_mv_variant_ok((kf_mv_variant)var, d)) continue;
            for (int r = -1; r < repeats; r++) {
                double t0 = kf_time_now();
                kf_matvec_dt_variant((kf_mv_variant)var, y, d, q, x, OC, C, xs);
                if (r >= 0) v[r] = bytes / (kf_time_now() - t0) / 1e9;
            }
            emit("matvec", kf_dtype_name(d), kf_mv_variant_name((kf_mv_variant)var), v, repeats, "gbps");
        }
        const double flops = 2.0 * N * (double)n;
        const int tr = kf_matmul_dt_tile_rows(C, tile_floats);
        for (int r = -1; r < repeats; r++) {
            double t0 = kf_time_now();
            kf_matmul_dt_tiles(y, x, d, q, N, C, OC, tile, tr);
            if (r >= 0) v[r] = flops / (kf_time_now() - t0) / 1e9;
        }
        emit("prefill", kf_dtype_name(d), "f32_tiles_sgemm", v, repeats, "gflops");
        if (strcmp(kf_matmul_dt_path(d), "f32_tiles")) { // kf_matmul_dt's own path where it differs
            for (int r = -1; r < repeats; r++) {
                double t0 = kf_time_now();
                kf_matmul_dt(y, x, d, q, N, C, OC, tile, tr);
                if (r >= 0) v[r] = flops / (kf_time_now() - t0) / 1e9;
            }
            emit("prefill", kf_dtype_name(d), kf_matmul_dt_path(d), v, repeats, "gflops");
        }
    }
    for (int r = -1; r < repeats; r++) {
        double t0 = kf_time_now();
        kf_matmul(y, x, w, N, C, OC);
        if (r >= 0) v[r] = 2.0 * N * (double)n / (kf_time_now() - t0) / 1e9;
    }
    emit("prefill", "F32", "sgemm", v, repeats, "gflops");
    free(w), free(x), free(y), free(tile), free(q), free(xs), free(v);
    return 0;
}
