// Speed of a compressed model against its original, measured in the same
// process with the repeats interleaved (original, compressed, original, ...)
// so that both see the same machine state. Prints prefill and decode tokens/s
// (medians), the decode speedup, the weight-bytes ratio, and whether the
// acceptance bound decode speedup >= 0.8 x bytes ratio holds.
//
//   bench_compress ORIGINAL COMPRESSED [-p 512] [-n 64] [-r 5] [--no-mmap]
// --no-mmap copies both models' weights into memory first (kf_model_load_to_memory).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/load.h"
#include "eval/bench.h"
#include "model/model.h"

int main(int argc, char **argv) {
    const char *paths[2] = {NULL, NULL};
    int p = 512, n = 64, r = 5, np = 0, no_mmap = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-p") && i + 1 < argc) p = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-n") && i + 1 < argc) n = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-r") && i + 1 < argc) r = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--no-mmap")) no_mmap = 1;
        else if (argv[i][0] != '-' && np < 2) paths[np++] = argv[i];
        else {
            fprintf(stderr, "usage: bench_compress ORIGINAL COMPRESSED [-p 512] [-n 64] [-r 5] [--no-mmap]\n");
            return 2;
        }
    }
    if (np != 2 || p < 1 || n < 1 || r < 1) {
        fprintf(stderr, "usage: bench_compress ORIGINAL COMPRESSED [-p 512] [-n 64] [-r 5] [--no-mmap]\n");
        return 2;
    }
    kf_model *m[2] = {NULL, NULL};
    kf_error err = {0};
    for (int k = 0; k < 2; k++)
        if (kf_model_load(&m[k], paths[k], &err) != KF_OK ||
            (no_mmap && kf_model_load_to_memory(m[k], &err) != KF_OK)) {
            fprintf(stderr, "bench_compress: %s\n", err.msg);
            return 1;
        }
    double *pp[2], *tg[2];
    for (int k = 0; k < 2; k++) {
        pp[k] = malloc(sizeof(double) * (size_t)r);
        tg[k] = malloc(sizeof(double) * (size_t)r);
    }
    for (int i = 0; i < r; i++)
        for (int k = 0; k < 2; k++) {
            kf_bench_result b;
            if (kf_bench_run(m[k], p, n, 1, &b, &err) != KF_OK) {
                fprintf(stderr, "bench_compress: %s\n", err.msg);
                return 1;
            }
            pp[k][i] = b.pp.median;
            tg[k][i] = b.tg.median;
        }
    kf_bench_stat sp[2], st[2];
    for (int k = 0; k < 2; k++) {
        sp[k] = kf_bench_summarise(pp[k], r);
        st[k] = kf_bench_summarise(tg[k], r);
    }
    double bytes[2] = {(double)kf_model_weight_bytes(m[0]), (double)kf_model_weight_bytes(m[1])};
    double speedup = st[1].median / st[0].median, ratio = bytes[0] / bytes[1];
    printf("{\"original\": \"%s\", \"compressed\": \"%s\", \"prompt\": %d, \"gen\": %d, \"repeats\": %d,\n"
           " \"prefill_tps\": [%.1f, %.1f], \"decode_tps\": [%.2f, %.2f],\n"
           " \"weight_bytes\": [%.0f, %.0f], \"decode_speedup\": %.3f, \"bytes_ratio\": %.3f,"
           " \"bound_0.8x_met\": %s}\n",
           paths[0], paths[1], p, n, r, sp[0].median, sp[1].median, st[0].median, st[1].median, bytes[0], bytes[1],
           speedup, ratio, speedup >= 0.8 * ratio ? "true" : "false");
    for (int k = 0; k < 2; k++) {
        free(pp[k]);
        free(tg[k]);
        kf_model_free(m[k]);
    }
    return 0;
}
