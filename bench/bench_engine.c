// Engine performance in one run, one thread count: the machine's ceilings
// (STREAM triad bandwidth, OpenBLAS sgemm at the model's prefill shapes) and
// kfuse's prefill / decode speed on a model, with the ratios between them.
//
//   bench_engine [MODEL] [-t THREADS] [-p 512] [-n 32] [-r 3] [--stream-mb 256]
//                [--breakdown] [--kernels] [--dump-logits PATH]
//
// Output: one JSON object per line (lines starting with '{'), then a table.
// Every row has "engine", "test", "threads", "repeats", "median", "min",
// "max", "unit"; ratio rows have "value" and "target" instead.
//
// Definitions (also in bench/RESULTS.md):
// - triad: a[i] = b[i] + s c[i] over double arrays of --stream-mb MB each,
//   OpenMP static schedule, bytes counted 3 x array size per pass (no write-
//   allocate traffic), best and median of 20 passes.
// - read: s += a[i] over one float array of 3 x --stream-mb MB (decode's
//   pattern: weights are only read); shown for context, not used in ratios.
// - sgemm: cblas_sgemm(RowMajor, NoTrans, Trans) with M = prompt tokens and
//   each distinct (K, N) of the model's weights, as kf_matmul calls it;
//   GFLOP/s = 2 M K N / time. "mix" = total matmul flops of one prefill /
//   the time they would take at the measured per-shape medians.
// - prefill flops = 2 T P_mm + L * 2 H Dh T (T + 1): P_mm = elements of every
//   matrix multiplied per token (q, k, v, o, gate, up, down per layer, and
//   the head, since kf_bench_run asks for the logits of all T tokens);
//   causal attention does T (T + 1) / 2 query-key pairs per head, 2 Dh flops
//   each for scores and again for the weighted sum of values.
// - --kernels: decode (-n tokens) through every decode kernel this CPU has
//   for the model's weight dtype (runtime/matvec_dtype.h), one run each in
//   turn per repeat so drifts of the machine's bandwidth hit all alike.
// - decode_bw_fraction = decode tokens/s x weight bytes per token / triad
//   best GB/s (target >= 0.75); prefill_gemm_fraction = prefill flops x
//   prefill tokens/s / T / sgemm mix GFLOP/s (target >= 0.60).
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "io/load.h"
#include "core/progress.h"
#include "core/rng.h"
#include "eval/bench.h"
#include "runtime/forward.h"
#include "runtime/matvec_dtype.h"

#define N_STREAM_PASSES 20
#define N_GEMM_REPS 5
#define MAX_SHAPES 16

typedef struct {
    int threads, repeats;
} row_ctx;

static void print_stat_row(const row_ctx *rc, const char *engine, const char *test, int repeats, kf_bench_stat st,
                           const char *unit) {
    printf("{\"engine\": \"%s\", \"test\": \"%s\", \"threads\": %d, \"repeats\": %d, \"median\": %.4f, "
           "\"min\": %.4f, \"max\": %.4f, \"unit\": \"%s\"}\n",
           engine, test, rc->threads, repeats, st.median, st.min, st.max, unit);
}

static void print_ratio_row(const row_ctx *rc, const char *test, double value, double target, const char *formula) {
    printf("{\"engine\": \"kfuse\", \"test\": \"%s\", \"threads\": %d, \"value\": %.4f, \"target\": %.2f, "
           "\"formula\": \"%s\"}\n",
           test, rc->threads, value, target, formula);
}

static void *xalloc(size_t bytes) {
    void *p = aligned_alloc(64, (bytes + 63) & ~(size_t)63);
    if (!p) {
        fprintf(stderr, "bench_engine: out of memory (%zu bytes)\n", bytes);
        exit(1);
    }
    return p;
}

// CPU seconds (user + system) of the process so far.
static double cpu_seconds(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return u.ru_utime.tv_sec + u.ru_utime.tv_usec * 1e-6 + u.ru_stime.tv_sec + u.ru_stime.tv_usec * 1e-6;
}

// Share of `threads` cores the process got since (wall0, cpu0): near 1 on an
// idle machine; well below 1 means other processes took the cores and the
// numbers measured in that span are contention-limited.
static double cpu_share(double wall0, double cpu0, int threads) {
    return (cpu_seconds() - cpu0) / ((kf_time_now() - wall0) * threads);
}

// ---- memory bandwidth -------------------------------------------------------------

// STREAM triad over double arrays of n elements; GB/s per pass into gbps.
static void stream_triad(int64_t n, double *gbps, int passes) {
    double *a = xalloc(sizeof(double) * (size_t)n), *b = xalloc(sizeof(double) * (size_t)n),
           *c = xalloc(sizeof(double) * (size_t)n);
    const double s = 3.0;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) a[i] = 0.0, b[i] = 1.0, c[i] = 2.0; // first touch on the thread that uses it
    for (int p = -1; p < passes; p++) { // p = -1 warms up
        double t0 = kf_time_now();
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < n; i++) a[i] = b[i] + s * c[i];
        double t = kf_time_now() - t0;
        if (p >= 0) gbps[p] = 3.0 * sizeof(double) * (double)n / t / 1e9;
    }
    if (a[n / 2] != 7.0) fprintf(stderr, "bench_engine: triad result wrong (%g)\n", a[n / 2]);
    free(a);
    free(b);
    free(c);
}

// Read-only sweep: sum of n floats; GB/s per pass into gbps.
static void stream_read(int64_t n, double *gbps, int passes) {
    float *a = xalloc(sizeof(float) * (size_t)n);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) a[i] = 1.0f;
    volatile float sink = 0.0f;
    for (int p = -1; p < passes; p++) {
        double t0 = kf_time_now();
        float sum = 0.0f;
#pragma omp parallel for simd schedule(static) reduction(+ : sum)
        for (int64_t i = 0; i < n; i++) sum += a[i];
        double t = kf_time_now() - t0;
        sink += sum;
        if (p >= 0) gbps[p] = sizeof(float) * (double)n / t / 1e9;
    }
    (void)sink;
    free(a);
}

// ---- sgemm --------------------------------------------------------------------------

typedef struct {
    int K, N;          // weight (N, K); Y (M, N) = X (M, K) W^T
    double flops;      // matmul flops of one prefill at this shape (all layers)
    kf_bench_stat gf;  // GFLOP/s
} gemm_shape;

static int add_shape(gemm_shape *sh, int n, const kf_tensor *w, int M) {
    if (!kf_tensor_present(w)) return n;
    int N = (int)w->ne[0], K = (int)w->ne[1];
    double f = 2.0 * M * (double)K * N;
    for (int i = 0; i < n; i++)
        if (sh[i].K == K && sh[i].N == N) {
            sh[i].flops += f;
            return n;
        }
    if (n == MAX_SHAPES) return n;
    sh[n] = (gemm_shape){.K = K, .N = N, .flops = f};
    return n + 1;
}

static kf_bench_stat time_sgemm(int M, int K, int N) {
    float *X = xalloc(sizeof(float) * (size_t)M * K), *W = xalloc(sizeof(float) * (size_t)N * K),
          *Y = xalloc(sizeof(float) * (size_t)M * N);
    kf_rng rng;
    kf_rng_seed(&rng, 12345);
    for (int64_t i = 0; i < (int64_t)M * K; i++) X[i] = (float)(kf_rng_uniform(&rng) - 0.5);
    for (int64_t i = 0; i < (int64_t)N * K; i++) W[i] = (float)(kf_rng_uniform(&rng) - 0.5);
    double v[N_GEMM_REPS];
    for (int r = -1; r < N_GEMM_REPS; r++) {
        double t0 = kf_time_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, X, K, W, K, 0.0f, Y, N);
        double t = kf_time_now() - t0;
        if (r >= 0) v[r] = 2.0 * M * (double)K * N / t / 1e9;
    }
    free(X);
    free(W);
    free(Y);
    return kf_bench_summarise(v, N_GEMM_REPS);
}

// ---- per-section timing through the forward hooks -------------------------------------

// Sections between consecutive hook points of a block; "head" is the time
// after the last block (final norm + lm_head), "pre" before the first
// (embedding lookup).
enum { SEC_ATTN, SEC_NORM2, SEC_FFN_UP, SEC_FFN_DOWN, SEC_RESID, SEC_BETWEEN, SEC_COUNT };
static const char *sec_names[SEC_COUNT] = {"attn: norm+qkv+rope+attention+o", "residual+ffn norm",
                                          "ffn: gate+up+act", "ffn: down", "residual", "between blocks"};

typedef struct {
    double t_last;
    double sec[SEC_COUNT];
} breakdown;

static void breakdown_hook(void *user, int layer, kf_hook_point point, float *x, int n, int dim) {
    breakdown *b = user;
    double now = kf_time_now();
    int sec = point == KF_HOOK_BLOCK_IN    ? SEC_BETWEEN
              : point == KF_HOOK_ATTN_OUT  ? SEC_ATTN
              : point == KF_HOOK_FFN_IN    ? SEC_NORM2
              : point == KF_HOOK_FFN_ACT   ? SEC_FFN_UP
              : point == KF_HOOK_FFN_OUT   ? SEC_FFN_DOWN
                                           : SEC_RESID;
    if (!(point == KF_HOOK_BLOCK_IN && layer == 0)) b->sec[sec] += now - b->t_last;
    b->t_last = now;
}

// Times prefill (T tokens) and n_gen decodes section by section and prints
// the shares; the hooks cost two clock reads per point.
static void run_breakdown(const kf_model *m, int T, int n_gen, const row_ctx *rc) {
    kf_error err = {0};
    kf_ctx *ctx = NULL;
    int kv = T > n_gen ? T : n_gen;
    if (kf_ctx_init(&ctx, m, T, kv, &err) != KF_OK) {
        fprintf(stderr, "bench_engine: %s\n", err.msg);
        return;
    }
    int32_t *ids = xalloc(sizeof(int32_t) * (size_t)kv);
    float *logits = xalloc(sizeof(float) * (size_t)T * m->n_vocab);
    for (int i = 0; i < kv; i++) ids[i] = (int32_t)((i * 7919 + 13) % m->n_vocab);
    breakdown b;
    kf_ctx_set_hook(ctx, breakdown_hook, &b, (1u << KF_HOOK_COUNT) - 1);
    for (int phase = 0; phase < 2; phase++) {
        memset(&b, 0, sizeof b);
        double total = 0, head = 0;
        int n_calls = phase == 0 ? 1 : n_gen;
        for (int i = 0; i < n_calls; i++) {
            double t0 = kf_time_now();
            b.t_last = t0;
            kf_status s = phase == 0 ? kf_forward_prefill(ctx, ids, 1, T, logits, &err)
                                     : kf_forward_decode(ctx, ids[i], i, logits, &err);
            if (s != KF_OK) {
                fprintf(stderr, "bench_engine: %s\n", err.msg);
                goto done;
            }
            double t1 = kf_time_now();
            total += t1 - t0;
            head += t1 - b.t_last;
        }
        double blocks = 0;
        for (int s = 0; s < SEC_COUNT; s++) blocks += b.sec[s];
        double pre = total - head - blocks; // before block 0: embedding lookup
        const char *ph = phase == 0 ? "prefill" : "decode";
        printf("{\"engine\": \"kfuse\", \"test\": \"breakdown_%s\", \"threads\": %d, \"calls\": %d, \"total_s\": %.6f",
               ph, rc->threads, n_calls, total);
        for (int s = 0; s < SEC_COUNT; s++) printf(", \"%s\": %.6f", sec_names[s], b.sec[s]);
        printf(", \"embedding\": %.6f, \"head: norm+lm_head\": %.6f}\n", pre, head);
    }
done:
    free(ids);
    free(logits);
    kf_ctx_free(ctx);
}

// Decode of n_gen tokens through each kernel for the model's weight dtype,
// the kernels taking turns within every repeat.
static int run_kernels(const kf_model *m, int n_gen, const row_ctx *rc, double triad_best) {
    const kf_dtype d = m->layers[0].wq.dtype;
    if (d == KF_DTYPE_F32) return 0;
    const kf_mv_variant dflt = kf_matvec_dt_default(d);
    double tg[KF_MV_COUNT][1000], bytes = 0;
    kf_error err = {0};
    for (int r = 0; r < rc->repeats; r++)
        for (int v = 0; v < KF_MV_COUNT; v++) {
            if (!kf_matvec_dt_set_default(d, (kf_mv_variant)v)) continue;
            kf_bench_result br;
            if (kf_bench_run(m, 1, n_gen, 1, &br, &err) != KF_OK) {
                fprintf(stderr, "bench_engine: %s\n", err.msg);
                return 1;
            }
            tg[v][r] = br.tg.median;
            bytes = br.weight_bytes;
        }
    kf_matvec_dt_set_default(d, dflt);
    for (int v = 0; v < KF_MV_COUNT; v++) {
        if (!kf_mv_variant_ok((kf_mv_variant)v, d)) continue;
        kf_bench_stat st = kf_bench_summarise(tg[v], rc->repeats);
        printf("{\"engine\": \"kfuse\", \"test\": \"tg%d_kernel\", \"kernel\": \"%s\", \"dtype\": \"%s\", "
               "\"default\": %d, \"threads\": %d, \"repeats\": %d, \"median\": %.3f, \"min\": %.3f, "
               "\"max\": %.3f, \"unit\": \"tokens/s\", \"gbps_median\": %.2f, \"triad_fraction\": %.3f}\n",
               n_gen, kf_mv_variant_name((kf_mv_variant)v), kf_dtype_name(d), v == (int)dflt, rc->threads,
               rc->repeats, st.median, st.min, st.max, bytes * st.median / 1e9, bytes * st.median / 1e9 / triad_best);
    }
    return 0;
}

// Writes int32 T, int32 V, ids (T), prefill logits (T, V), then the logits of
// decoding the same T tokens one by one (T, V), for torch_bench.py --check.
static int dump_logits(const kf_model *m, const char *path) {
    enum { T = 8 };
    kf_error err = {0};
    kf_ctx *ctx = NULL;
    if (kf_ctx_init(&ctx, m, T, T, &err) != KF_OK) goto fail;
    int32_t ids[T], hdr[2] = {T, m->n_vocab};
    for (int i = 0; i < T; i++) ids[i] = (int32_t)((i * 7919 + 13) % m->n_vocab);
    float *lp = xalloc(sizeof(float) * T * (size_t)m->n_vocab), *ld = xalloc(sizeof(float) * T * (size_t)m->n_vocab);
    if (kf_forward_prefill(ctx, ids, 1, T, lp, &err) != KF_OK) goto fail;
    for (int i = 0; i < T; i++)
        if (kf_forward_decode(ctx, ids[i], i, ld + (size_t)i * m->n_vocab, &err) != KF_OK) goto fail;
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(hdr, sizeof hdr, 1, f) != 1 || fwrite(ids, sizeof ids, 1, f) != 1 ||
        fwrite(lp, sizeof(float) * T * (size_t)m->n_vocab, 1, f) != 1 ||
        fwrite(ld, sizeof(float) * T * (size_t)m->n_vocab, 1, f) != 1) {
        fprintf(stderr, "bench_engine: cannot write %s\n", path);
        if (f) fclose(f);
        return 1;
    }
    fclose(f);
    free(lp);
    free(ld);
    kf_ctx_free(ctx);
    return 0;
fail:
    fprintf(stderr, "bench_engine: %s\n", err.msg);
    kf_ctx_free(ctx);
    return 1;
}

static int arg_int(int argc, char **argv, int *i, int lo, int hi) {
    if (*i + 1 >= argc) {
        fprintf(stderr, "bench_engine: %s needs a value\n", argv[*i]);
        exit(2);
    }
    char *end;
    long v = strtol(argv[++*i], &end, 10);
    if (*end || v < lo || v > hi) {
        fprintf(stderr, "bench_engine: %s must be an integer in [%d, %d]\n", argv[*i - 1], lo, hi);
        exit(2);
    }
    return (int)v;
}

int main(int argc, char **argv) {
    const char *path = "/tmp/kfuse-bench/llama-2048x16", *dump = NULL;
    int threads = omp_get_num_procs(), T = 512, n_gen = 32, repeats = 3, stream_mb = 256;
    int do_breakdown = 0, no_mmap = 0, do_kernels = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-t")) threads = arg_int(argc, argv, &i, 1, 1024);
        else if (!strcmp(argv[i], "-p")) T = arg_int(argc, argv, &i, 1, 1 << 16);
        else if (!strcmp(argv[i], "-n")) n_gen = arg_int(argc, argv, &i, 1, 1 << 16);
        else if (!strcmp(argv[i], "-r")) repeats = arg_int(argc, argv, &i, 1, 1000);
        else if (!strcmp(argv[i], "--stream-mb")) stream_mb = arg_int(argc, argv, &i, 1, 1 << 16);
        else if (!strcmp(argv[i], "--breakdown")) do_breakdown = 1;
        else if (!strcmp(argv[i], "--no-mmap")) no_mmap = 1;
        else if (!strcmp(argv[i], "--kernels")) do_kernels = 1;
        else if (!strcmp(argv[i], "--dump-logits") && i + 1 < argc) dump = argv[++i];
        else if (argv[i][0] == '-') {
            fprintf(stderr, "usage: bench_engine [MODEL] [-t N] [-p N] [-n N] [-r N] [--stream-mb MB] "
                            "[--breakdown] [--no-mmap] [--dump-logits PATH]\n");
            return 2;
        } else path = argv[i];
    }
    setvbuf(stdout, NULL, _IOLBF, 0); // rows appear as they are measured, also through a pipe
    omp_set_num_threads(threads);
    openblas_set_num_threads(threads);
    row_ctx rc = {threads, repeats};

    kf_error err = {0};
    kf_model *m = NULL;
    // weights in their file dtype, as kfuse bench runs them (a 7B BF16 model stays 13.5 GB)
    if (kf_model_load_opts(&m, path, &(kf_load_opts){.keep_dtype = true}, &err) != KF_OK || (no_mmap && kf_model_load_to_memory(m, &err) != KF_OK)) {
        fprintf(stderr, "bench_engine: %s\n", err.msg);
        return 1;
    }
    if (dump) return dump_logits(m, dump);
    printf("{\"engine\": \"info\", \"test\": \"config\", \"threads\": %d, \"model\": \"%s\", \"params\": %lld, "
           "\"no_mmap\": %d, \"weight_bytes\": %lld, \"prompt\": %d, \"gen\": %d, \"openblas\": \"%s\"}\n",
           threads, path, (long long)kf_model_n_params(m), no_mmap, (long long)kf_model_weight_bytes(m), T, n_gen,
           openblas_get_config());

    // (a) bandwidth
    double w0 = kf_time_now(), c0 = cpu_seconds();
    int64_t n_d = (int64_t)stream_mb * 1000000 / 8;
    double v[N_STREAM_PASSES];
    stream_triad(n_d, v, N_STREAM_PASSES);
    kf_bench_stat triad = kf_bench_summarise(v, N_STREAM_PASSES);
    print_stat_row(&rc, "stream", "triad_f64", N_STREAM_PASSES, triad, "GB/s");
    stream_read(3 * n_d * 2, v, N_STREAM_PASSES);
    kf_bench_stat rd = kf_bench_summarise(v, N_STREAM_PASSES);
    print_stat_row(&rc, "stream", "read_f32", N_STREAM_PASSES, rd, "GB/s");
    double share_stream = cpu_share(w0, c0, threads);
    w0 = kf_time_now(), c0 = cpu_seconds();

    // (b) sgemm at the model's shapes
    gemm_shape sh[MAX_SHAPES];
    int n_sh = 0;
    double mm_params = 0;
    for (int l = 0; l < m->n_layer; l++) {
        const kf_layer *L = &m->layers[l];
        const kf_tensor *ws[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
        for (size_t i = 0; i < sizeof ws / sizeof ws[0]; i++) {
            n_sh = add_shape(sh, n_sh, ws[i], T);
            if (kf_tensor_present(ws[i])) mm_params += (double)kf_tensor_nelem(ws[i]);
        }
    }
    n_sh = add_shape(sh, n_sh, &m->lm_head, T);
    mm_params += (double)kf_tensor_nelem(&m->lm_head);
    double mm_flops = 0, mm_ideal_s = 0;
    for (int i = 0; i < n_sh; i++) {
        sh[i].gf = time_sgemm(T, sh[i].K, sh[i].N);
        char name[64];
        snprintf(name, sizeof name, "sgemm_M%d_K%d_N%d", T, sh[i].K, sh[i].N);
        print_stat_row(&rc, "openblas", name, N_GEMM_REPS, sh[i].gf, "GFLOP/s");
        mm_flops += sh[i].flops;
        mm_ideal_s += sh[i].flops / (sh[i].gf.median * 1e9);
    }
    double mix = mm_flops / mm_ideal_s / 1e9;
    print_stat_row(&rc, "openblas", "sgemm_mix", N_GEMM_REPS, (kf_bench_stat){mix, mix, mix}, "GFLOP/s");
    double share_gemm = cpu_share(w0, c0, threads);
    w0 = kf_time_now(), c0 = cpu_seconds();

    // (c) kfuse
    kf_bench_result r;
    if (kf_bench_run(m, T, n_gen, repeats, &r, &err) != KF_OK) {
        fprintf(stderr, "bench_engine: %s\n", err.msg);
        return 1;
    }
    double share_kfuse = cpu_share(w0, c0, threads);
    printf("{\"engine\": \"info\", \"test\": \"cpu_share\", \"threads\": %d, \"stream\": %.3f, \"sgemm\": %.3f, "
           "\"kfuse\": %.3f}\n",
           threads, share_stream, share_gemm, share_kfuse);
    char name[32];
    snprintf(name, sizeof name, "pp%d", T);
    print_stat_row(&rc, "kfuse", name, repeats, r.pp, "tokens/s");
    snprintf(name, sizeof name, "tg%d", n_gen);
    print_stat_row(&rc, "kfuse", name, repeats, r.tg, "tokens/s");

    // (d) ratios
    double attn_flops = (double)m->n_layer * 2.0 * m->n_head * m->head_dim * T * (T + 1.0);
    double pp_flops = 2.0 * T * mm_params + attn_flops;
    double pp_gflops = pp_flops * r.pp.median / T / 1e9;
    double tg_gbps = r.weight_bytes * r.tg.median / 1e9;
    printf("{\"engine\": \"kfuse\", \"test\": \"prefill_flops\", \"threads\": %d, \"flops\": %.0f, "
           "\"matmul_params\": %.0f, \"attention_flops\": %.0f, \"achieved_gflops\": %.3f}\n",
           threads, pp_flops, mm_params, attn_flops, pp_gflops);
    printf("{\"engine\": \"kfuse\", \"test\": \"decode_bytes\", \"threads\": %d, \"weight_bytes\": %.0f, "
           "\"achieved_gbps\": %.3f}\n",
           threads, r.weight_bytes, tg_gbps);
    print_ratio_row(&rc, "decode_bw_fraction", tg_gbps / triad.max, 0.75,
                    "tg tokens/s * weight_bytes / triad best GB/s");
    print_ratio_row(&rc, "prefill_gemm_fraction", pp_gflops / mix, 0.60,
                    "(2 T P_mm + L 2 H Dh T (T+1)) * pp tokens/s / T / sgemm mix GFLOP/s");
    if (do_breakdown) run_breakdown(m, T, n_gen, &rc);
    if (do_kernels && run_kernels(m, n_gen, &rc, triad.max) != 0) return 1;

    // readable table
    printf("\ntest (%d threads)%18s %10s %10s %10s  unit\n", threads, "", "median", "min", "max");
    printf("%-34s %10.2f %10.2f %10.2f  GB/s (f64, 3 arrays x %d MB)\n", "STREAM triad", triad.median, triad.min,
           triad.max, stream_mb);
    printf("%-34s %10.2f %10.2f %10.2f  GB/s (f32, %d MB)\n", "read-only sum", rd.median, rd.min, rd.max,
           3 * stream_mb);
    for (int i = 0; i < n_sh; i++) {
        char s[64];
        snprintf(s, sizeof s, "sgemm M=%d K=%d N=%d", T, sh[i].K, sh[i].N);
        printf("%-34s %10.2f %10.2f %10.2f  GFLOP/s\n", s, sh[i].gf.median, sh[i].gf.min, sh[i].gf.max);
    }
    printf("%-34s %10.2f %10s %10s  GFLOP/s (flop-weighted over one prefill)\n", "sgemm mix", mix, "", "");
    printf("%-34s %10.2f %10.2f %10.2f  tokens/s (%.1f GFLOP/s)\n", "kfuse prefill", r.pp.median, r.pp.min,
           r.pp.max, pp_gflops);
    printf("%-34s %10.2f %10.2f %10.2f  tokens/s (%.2f GB/s of weights)\n", "kfuse decode", r.tg.median, r.tg.min,
           r.tg.max, tg_gbps);
    printf("CPU share of %d cores: stream %.0f%%, sgemm %.0f%%, kfuse %.0f%% (below ~95%%: other processes "
           "took the cores; the numbers are contention-limited)\n",
           threads, 100 * share_stream, 100 * share_gemm, 100 * share_kfuse);
    printf("decode: %.1f%% of triad best (target >= 75%%); prefill: %.1f%% of sgemm mix (target >= 60%%)\n",
           100 * tg_gbps / triad.max, 100 * pp_gflops / mix);
    kf_model_free(m);
    return 0;
}
