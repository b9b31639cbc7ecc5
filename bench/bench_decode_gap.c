// Where decode loses bandwidth: in one run, the same model's weights are
// streamed (a) by bare kf_matvec calls in forward order — every weight the
// decode reads, nothing else — and (b) by kf_forward_decode. Both read the
// same bytes per token; the ratio b/a is the cost of everything the forward
// pass does besides the matvecs.
//   bench_decode_gap MODEL [-n TOKENS] [-r REPEATS]
// Prints one JSON row per measurement (median/min/max of the repeats).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/load.h"
#include "core/progress.h"
#include "eval/bench.h"
#include "model/model.h"
#include "runtime/kernels.h"

static void row(const char *test, double *v, int n, double bytes) {
    kf_bench_stat s = kf_bench_summarise(v, n);
    printf("{\"test\": \"%s\", \"repeats\": %d, \"tokens_per_s_median\": %.3f, \"min\": %.3f, \"max\": %.3f, "
           "\"gbps_median\": %.2f}\n",
           test, n, s.median, s.min, s.max, s.median * bytes / 1e9);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: bench_decode_gap MODEL [-n TOKENS] [-r REPEATS]\n");
        return 2;
    }
    int n_tok = 16, repeats = 5;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "-n")) n_tok = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-r")) repeats = atoi(argv[i + 1]);
    }
    if (n_tok < 1 || repeats < 1) return 2;
    kf_error err = {0};
    kf_model *m;
    if (kf_model_load(&m, argv[1], &err) != KF_OK) {
        fprintf(stderr, "bench_decode_gap: %s\n", err.msg);
        return 1;
    }
    int max_dim = m->n_vocab;
    for (int l = 0; l < m->n_layer; l++) max_dim = m->layers[l].n_ff > max_dim ? m->layers[l].n_ff : max_dim;
    float *x = calloc((size_t)max_dim, sizeof *x), *y = calloc((size_t)max_dim, sizeof *y);
    double *v = calloc((size_t)repeats, sizeof *v), bytes = (double)kf_model_weight_bytes(m);
    if (!x || !y || !v) return 1;
    for (int i = 0; i < max_dim; i++) x[i] = 0.01f * (float)(i % 13);
    for (int r = -1; r < repeats; r++) { // r = -1: warm-up (faults the pages in)
        double t0 = kf_time_now();
        for (int t = 0; t < n_tok; t++) {
            for (int l = 0; l < m->n_layer; l++) {
                const kf_layer *L = &m->layers[l];
                const kf_tensor *ws[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_up, &L->w_gate, &L->w_down};
                for (size_t k = 0; k < sizeof ws / sizeof ws[0]; k++)
                    if (kf_tensor_present(ws[k])) kf_matvec(y, ws[k]->data, x, (int)ws[k]->ne[0], (int)ws[k]->ne[1]);
            }
            kf_matvec(y, m->lm_head.data, x, m->n_vocab, m->n_embd);
        }
        if (r >= 0) v[r] = n_tok / (kf_time_now() - t0);
    }
    row("matvecs_only", v, repeats, bytes);
    kf_bench_result b;
    if (kf_bench_run(m, 8, n_tok, repeats, &b, &err) != KF_OK) {
        fprintf(stderr, "bench_decode_gap: %s\n", err.msg);
        return 1;
    }
    printf("{\"test\": \"forward_decode\", \"repeats\": %d, \"tokens_per_s_median\": %.3f, \"min\": %.3f, "
           "\"max\": %.3f, \"gbps_median\": %.2f}\n",
           repeats, b.tg.median, b.tg.min, b.tg.max, b.tg_gbps_median);
    free(x);
    free(y);
    free(v);
    kf_model_free(m);
    return 0;
}
