// Decode speed of a MoEfied model against the dense one, in the same run.
//   bench_moe MODEL [E=16] [K=4] [N=32] [R=5]
// MODEL is typically the bandwidth-bound bench model of bench/make_bench_model
// (hidden 2048, 16 layers, FFN 5632, random Llama). Every layer is turned,
// in memory, into E experts of consecutive neurons with a similarity router
// (router quality does not change the cost) and top-K selection, so K/E of
// the FFN neurons are computed per token. Prints decode tokens/s of both, the
// FFN share of decode time (timed between the FFN_IN and FFN_OUT hooks), and
// the router's own time per token (kf_moe_router_scores + selection).
// Dense and MoE runs alternate R times after a warm-up pair (the same weights:
// only n_expert is switched); each figure is the median with min and max.
// Second part, prefill: the FFN of layer 0 on P = 512 rows, timed three ways
// (dense sgemm; MoE masked = dense sgemm with unselected activations zeroed;
// MoE grouped = rows gathered per expert, one sgemm each), R repeats each,
// to show which prefill path is cheaper and by how much.
#include <stdio.h>
#include <stdlib.h>

#include "io/load.h"
#include "core/progress.h"
#include "runtime/kernels.h"
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

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// median, min, max of n values (sorted in place)
static void stats3(double *v, int n, double out[3]) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    out[0] = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
    out[1] = v[0];
    out[2] = v[n - 1];
}

static void set_experts(kf_model *m, int E) {
    for (int l = 0; l < m->n_layer; l++) m->layers[l].n_expert = E;
}

// Dense FFN of layer L on P rows: out (P, C) = w_down (silu(gate xn) * (up xn)).
static void ffn_dense(const kf_model *m, const kf_layer *L, const float *xn, int P, float *act, float *gate,
                      float *out) {
    const int C = m->n_embd, F = L->n_ff;
    kf_matmul(act, xn, L->w_up.data, P, C, F);
    kf_matmul(gate, xn, L->w_gate.data, P, C, F);
    for (int64_t i = 0; i < (int64_t)P * F; i++) act[i] *= kf_silu(gate[i]);
    kf_matmul(out, act, L->w_down.data, P, F, C);
}

// Median ms of the prefill FFN of layer 0 for path 0 dense, 1 masked, 2 grouped.
static void prefill_paths(const kf_model *m, int P, int R, double ms[3]) {
    const kf_layer *L = &m->layers[0];
    const int C = m->n_embd, F = L->n_ff;
    float *xn = malloc(sizeof(float) * (size_t)P * C), *act = malloc(sizeof(float) * (size_t)P * F);
    float *gate = malloc(sizeof(float) * (size_t)P * F), *out = malloc(sizeof(float) * (size_t)P * C);
    for (int64_t i = 0; i < (int64_t)P * C; i++) xn[i] = (float)((i * 37) % 23) / 23.0f - 0.5f;
    kf_moe_ws *ws;
    kf_error err = {0};
    if (kf_moe_ws_init(&ws, m, P, &err) != KF_OK) {
        fprintf(stderr, "bench_moe: %s\n", err.msg);
        exit(1);
    }
    double t[3][100];
    for (int r = -1; r < R; r++)
        for (int path = 0; path < 3; path++) {
            double t0 = kf_time_now();
            if (path == 0) ffn_dense(m, L, xn, P, act, gate, out);
            else if (path == 1) kf_moe_ffn_masked(ws, m, L, xn, P, act, gate, out);
            else kf_moe_ffn_grouped(ws, m, L, xn, P, act, gate, out);
            if (r >= 0) t[path][r] = (kf_time_now() - t0) * 1e3;
        }
    for (int path = 0; path < 3; path++) {
        double st[3];
        stats3(t[path], R, st);
        ms[path] = st[0];
    }
    kf_moe_ws_free(ws);
    free(xn), free(act), free(gate), free(out);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: bench_moe MODEL [E=16] [K=4] [N=32] [R=5]\n");
        return 2;
    }
    const int E = argc > 2 ? atoi(argv[2]) : 16, K = argc > 3 ? atoi(argv[3]) : 4, N = argc > 4 ? atoi(argv[4]) : 32;
    const int R = argc > 5 ? atoi(argv[5]) : 5;
    if (E < 1 || K < 1 || K > E || N < 2 || R < 1 || R > 100) {
        fprintf(stderr, "bench_moe: need 1 <= K <= E, N >= 2, 1 <= R <= 100\n");
        return 2;
    }
    kf_model *m;
    kf_error err = {0};
    // Weights copied into memory, as `kfuse bench --no-mmap`: decode streams
    // them at the machine's bandwidth there (bench/RESULTS.md).
    if (kf_model_load(&m, argv[1], &err) != KF_OK || kf_model_load_to_memory(m, &err) != KF_OK) {
        fprintf(stderr, "bench_moe: %s\n", err.msg);
        return 1;
    }
    for (int l = 0; l < m->n_layer; l++) {
        if (m->layers[l].n_ff % E != 0 || kf_router_similarity(m, l, E, &err) != KF_OK) {
            fprintf(stderr, "bench_moe: layer %d: %s\n", l, err.msg[0] ? err.msg : "n_ff is not a multiple of E");
            return 1;
        }
        m->layers[l].top_k = K;
    }
    double tps[2][100], ffn_ms[2][100], share;
    for (int r = -1; r < R; r++) // r = -1: warm-up pair
        for (int moe = 0; moe < 2; moe++) {
            set_experts(m, moe ? E : 0);
            double t = decode_run(m, N, &share);
            if (r < 0) continue;
            tps[moe][r] = t;
            ffn_ms[moe][r] = 1e3 / t * share;
        }
    // router cost alone: scores + selection for every layer, per token
    const int C = m->n_embd, RR = 200;
    float *x = malloc(sizeof(float) * (size_t)C), scores[1024], hidden[1];
    int sel[1024], order[1024];
    for (int i = 0; i < C; i++) x[i] = (float)((i * 37) % 11) / 11.0f - 0.5f;
    double t0 = kf_time_now();
    for (int r = 0; r < RR; r++)
        for (int l = 0; l < m->n_layer && E <= 1024; l++) {
            kf_moe_router_scores(&m->layers[l], x, 1, scores, hidden);
            kf_moe_select(scores, E, K, 0, sel, order);
        }
    double router_ms = (kf_time_now() - t0) / RR * 1e3;
    const int P = 512;
    double pre[3];
    set_experts(m, E);
    prefill_paths(m, P, R, pre);
    double td[3], tm[3], fd[3], fm[3];
    stats3(tps[0], R, td), stats3(tps[1], R, tm), stats3(ffn_ms[0], R, fd), stats3(ffn_ms[1], R, fm);
    printf("{\"model\": \"%s\", \"experts\": %d, \"top_k\": %d, \"ffn_share_computed\": %.4f, \"tokens\": %d,"
           " \"repeats\": %d,\n"
           " \"dense\": {\"decode_tok_s\": [%.2f, %.2f, %.2f], \"ffn_ms\": [%.2f, %.2f, %.2f]},\n"
           " \"moe\": {\"decode_tok_s\": [%.2f, %.2f, %.2f], \"ffn_ms\": [%.2f, %.2f, %.2f], \"router_ms\": %.3f},\n"
           " \"speedup\": %.3f, \"ffn_time_ratio\": %.3f, \"ffn_time_ratio_without_router\": %.3f,\n"
           " \"prefill_ffn_layer0_ms\": {\"rows\": %d, \"dense\": %.2f, \"masked\": %.2f, \"grouped\": %.2f}}\n",
           argv[1], E, K, (double)K / E, N, R, td[0], td[1], td[2], fd[0], fd[1], fd[2], tm[0], tm[1], tm[2], fm[0],
           fm[1], fm[2], router_ms, tm[0] / td[0], fm[0] / fd[0], (fm[0] - router_ms) / fd[0], P, pre[0], pre[1], pre[2]);
    fprintf(stderr, "bench_moe: figures are [median, min, max]; ffn_ms per token, timed between the FFN_IN and FFN_OUT hooks\n");
    free(x);
    kf_model_free(m);
    return 0;
}
