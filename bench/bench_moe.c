// Decode speed of a MoEfied model against the dense one, in the same run.
//   bench_moe MODEL [E=16] [K=4] [N=32]
// MODEL is typically the bandwidth-bound bench model of bench/make_bench_model
// (hidden 2048, 16 layers, FFN 5632, random Llama). Every layer is turned,
// in memory, into E experts of consecutive neurons with a similarity router
// (router quality does not change the cost) and top-K selection, so K/E of
// the FFN neurons are computed per token. Prints decode tokens/s of both, the
// FFN share of decode time (timed between the FFN_IN and FFN_OUT hooks), and
// the router's own time per token (kf_moe_router_scores + selection).
#include <stdio.h>
#include <stdlib.h>

#include "core/progress.h"
#include "moe/router.h"
#include "runtime/forward.h"
#include "runtime/moe.h"

typedef struct {
    double t_in, ffn; // start of the current FFN, seconds spent in FFNs
} ffn_timer;

static void time_hook(void *user, int layer, kf_hook_point p, float *x, int n, int dim) {
    ffn_timer *t = user;
    if (p == KF_HOOK_FFN_IN) t->t_in = kf_time_now();
    else t->ffn += kf_time_now() - t->t_in;
}

// Decodes N tokens; returns tokens/s and the FFN share of the time.
static double decode_run(const kf_model *m, int N, double *ffn_share) {
    kf_ctx *c;
    kf_error err = {0};
    if (kf_ctx_init(&c, m, 1, N, &err) != KF_OK) {
        fprintf(stderr, "bench_moe: %s\n", err.msg);
        exit(1);
    }
    float *logits = malloc(sizeof(float) * (size_t)m->n_vocab);
    ffn_timer t = {0};
    kf_forward_decode(c, 1, 0, logits, &err); // warm-up
    kf_ctx_set_hook(c, time_hook, &t, (1u << KF_HOOK_FFN_IN) | (1u << KF_HOOK_FFN_OUT));
    double t0 = kf_time_now();
    for (int p = 1; p < N; p++) kf_forward_decode(c, (p * 7) % m->n_vocab, p, logits, &err);
    double dt = kf_time_now() - t0;
    *ffn_share = t.ffn / dt;
    free(logits);
    kf_ctx_free(c);
    return (N - 1) / dt;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: bench_moe MODEL [E=16] [K=4] [N=32]\n");
        return 2;
    }
    const int E = argc > 2 ? atoi(argv[2]) : 16, K = argc > 3 ? atoi(argv[3]) : 4, N = argc > 4 ? atoi(argv[4]) : 32;
    kf_model *m;
    kf_error err = {0};
    // Weights copied into memory, as `kfuse bench --no-mmap`: decode streams
    // them at the machine's bandwidth there (bench/RESULTS.md).
    if (kf_model_load(&m, argv[1], &err) != KF_OK || kf_model_load_to_memory(m, &err) != KF_OK) {
        fprintf(stderr, "bench_moe: %s\n", err.msg);
        return 1;
    }
    double share_dense, share_moe;
    double tps_dense = decode_run(m, N, &share_dense);
    for (int l = 0; l < m->n_layer; l++) {
        if (kf_router_similarity(m, l, E, &err) != KF_OK) {
            fprintf(stderr, "bench_moe: %s\n", err.msg);
            return 1;
        }
        m->layers[l].n_expert = E;
        m->layers[l].top_k = K;
    }
    double tps_moe = decode_run(m, N, &share_moe);
    // router cost alone: scores + selection for every layer, per token
    const int C = m->n_embd, R = 200;
    float *x = malloc(sizeof(float) * (size_t)C), scores[1024], hidden[1];
    int sel[1024], order[1024];
    for (int i = 0; i < C; i++) x[i] = (float)((i * 37) % 11) / 11.0f - 0.5f;
    double t0 = kf_time_now();
    for (int r = 0; r < R; r++)
        for (int l = 0; l < m->n_layer && E <= 1024; l++) {
            kf_moe_router_scores(&m->layers[l], x, 1, scores, hidden);
            kf_moe_select(scores, E, K, 0, sel, order);
        }
    double router_ms = (kf_time_now() - t0) / R * 1e3;
    double ms_dense = 1e3 / tps_dense, ms_moe = 1e3 / tps_moe;
    printf("{\"model\": \"%s\", \"experts\": %d, \"top_k\": %d, \"ffn_share_computed\": %.4f,\n"
           " \"dense\": {\"decode_tok_s\": %.2f, \"ms_per_token\": %.2f, \"ffn_ms\": %.2f, \"ffn_share_of_time\": %.3f},\n"
           " \"moe\": {\"decode_tok_s\": %.2f, \"ms_per_token\": %.2f, \"ffn_ms\": %.2f, \"ffn_share_of_time\": %.3f,"
           " \"router_ms\": %.3f},\n \"speedup\": %.3f, \"ffn_time_ratio\": %.3f}\n",
           argv[1], E, K, (double)K / E, tps_dense, ms_dense, ms_dense * share_dense, share_dense, tps_moe, ms_moe,
           ms_moe * share_moe, share_moe, router_ms, tps_moe / tps_dense, (ms_moe * share_moe) / (ms_dense * share_dense));
    free(x);
    kf_model_free(m);
    return 0;
}
