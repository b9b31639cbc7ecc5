// Training speed of kfuse's backward pass (src/train), one thread count: one
// optimiser step on a batch of B windows of T tokens = forward, next-token
// cross-entropy, backward, AdamW, the same step bench/torch_train_bench.py
// times in PyTorch on the same model. Also the distillation step that
// `kfuse recover` takes (the teacher's forward added, KL instead of CE).
//
//   bench_train [MODEL] [-t THREADS] [-b 8] [-c 256] [-r 5] [--train all|ffn]
//
// Output: one JSON row per line with "engine", "test", "threads", "repeats",
// "median", "min", "max", "unit", as bench_engine; the "share" rows give the
// median of each phase's share of the step's wall time.
// Tokens: the pseudo-random ids (i * 7919 + 13) mod V of torch_train_bench.py
// (speed does not depend on them). One warm-up step, then the repeats; the
// warm-up step's loss is printed ("first_loss") to check that both sides
// compute the same thing.
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/progress.h"
#include "eval/bench.h"
#include "io/load.h"
#include "runtime/forward.h"
#include "train/adamw.h"
#include "train/ops.h"
#include "train/train.h"

#define MAX_REPEATS 100

enum { PH_TEACHER, PH_FORWARD, PH_LOSS, PH_BACKWARD, PH_UPDATE, PH_COUNT };
static const char *const PHASE[PH_COUNT] = {"teacher", "forward", "loss", "backward", "update"};

static _Noreturn void die(const char *msg) {
    fprintf(stderr, "bench_train: %s\n", msg);
    exit(1);
}

static void print_row(const char *test, int threads, int repeats, kf_bench_stat st, const char *unit) {
    printf("{\"engine\": \"kfuse\", \"test\": \"%s\", \"threads\": %d, \"repeats\": %d, \"median\": %.4f, "
           "\"min\": %.4f, \"max\": %.4f, \"unit\": \"%s\"}\n",
           test, threads, repeats, st.median, st.min, st.max, unit);
}

typedef struct {
    kf_train *t;
    kf_adamw *opt;
    kf_param *ps;
    int n_ps;
    kf_ctx *teacher; // NULL: cross-entropy step
    float *tlogits;  // (B*T, V) teacher logits
    int32_t *tokens, *targets;
    int B, T, V;
} step_ctx;

// One step; ph[] receives each phase's wall seconds. Returns the loss:
// mean CE over the tokens that have a next one, or mean KL per token.
static double step(step_ctx *s, double ph[PH_COUNT]) {
    kf_error err = {0};
    double t0 = kf_time_now();
    if (s->teacher && kf_forward_prefill(s->teacher, s->tokens, s->B, s->T, s->tlogits, &err) != KF_OK) die(err.msg);
    double t1 = kf_time_now();
    if (kf_train_forward(s->t, s->tokens, &err) != KF_OK) die(err.msg);
    double t2 = kf_time_now();
    int N = s->B * s->T;
    double loss = kf_train_distill_loss(kf_train_dlogits(s->t), kf_train_logits(s->t), s->teacher ? s->tlogits : NULL,
                                        s->teacher ? NULL : s->targets, 1.0f, 1.0f,
                                        s->teacher ? N : s->B * (s->T - 1), N, s->V, NULL, NULL);
    double t3 = kf_time_now();
    kf_train_zero_grad(s->t);
    kf_train_backward(s->t);
    double t4 = kf_time_now();
    kf_adamw_step(s->opt, s->ps, s->n_ps, 1e-5f);
    double t5 = kf_time_now();
    ph[PH_TEACHER] = t1 - t0, ph[PH_FORWARD] = t2 - t1, ph[PH_LOSS] = t3 - t2, ph[PH_BACKWARD] = t4 - t3,
    ph[PH_UPDATE] = t5 - t4;
    return loss;
}

static void run(const char *name, step_ctx *s, int threads, int repeats) {
    double ph[PH_COUNT], tps[MAX_REPEATS], share[PH_COUNT][MAX_REPEATS];
    double loss = step(s, ph); // warm-up
    for (int r = 0; r < repeats; r++) {
        step(s, ph);
        double total = 0;
        for (int p = 0; p < PH_COUNT; p++) total += ph[p];
        tps[r] = (double)s->B * s->T / total;
        for (int p = 0; p < PH_COUNT; p++) share[p][r] = ph[p] / total;
    }
    char test[64];
    printf("{\"engine\": \"kfuse\", \"test\": \"%s_first_loss\", \"threads\": %d, \"value\": %.6f}\n", name,
           threads, loss);
    snprintf(test, sizeof test, "%s_b%dx%d", name, s->B, s->T);
    print_row(test, threads, repeats, kf_bench_summarise(tps, repeats), "tokens/s");
    for (int p = 0; p < PH_COUNT; p++) {
        if (p == PH_TEACHER && !s->teacher) continue;
        snprintf(test, sizeof test, "%s_share_%s", name, PHASE[p]);
        print_row(test, threads, repeats, kf_bench_summarise(share[p], repeats), "fraction");
    }
}

int main(int argc, char **argv) {
    const char *path = "models/llama-gutenberg-6.5m", *mode = "all";
    int threads = omp_get_max_threads(), B = 8, T = 256, repeats = 5;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-t") && v) threads = atoi(v), i++;
        else if (!strcmp(a, "-b") && v) B = atoi(v), i++;
        else if (!strcmp(a, "-c") && v) T = atoi(v), i++;
        else if (!strcmp(a, "-r") && v) repeats = atoi(v), i++;
        else if (!strcmp(a, "--train") && v) mode = v, i++;
        else if (a[0] != '-') path = a;
        else die("usage: bench_train [MODEL] [-t THREADS] [-b 8] [-c 256] [-r 5] [--train all|ffn]");
    }
    if (threads < 1 || B < 1 || T < 2 || repeats < 1 || repeats > MAX_REPEATS) die("bad -t, -b, -c or -r");
    if (strcmp(mode, "all") && strcmp(mode, "ffn")) die("--train must be all or ffn");
    omp_set_num_threads(threads);
    kf_error err = {0};
    kf_model *m, *tm;
    if (kf_model_load(&m, path, &err) != KF_OK || kf_model_load(&tm, path, &err) != KF_OK) die(err.msg);
    step_ctx s = {.B = B, .T = T, .V = m->n_vocab};
    kf_train_opts to = {.mode = strcmp(mode, "ffn") ? KF_TRAIN_ALL : KF_TRAIN_FFN};
    if (kf_train_init(&s.t, m, B, T, &to, &err) != KF_OK) die(err.msg);
    s.ps = kf_train_params(s.t, &s.n_ps);
    kf_adamw_opts ao = kf_adamw_defaults();
    if (kf_adamw_init(&s.opt, s.ps, s.n_ps, &ao, &err) != KF_OK) die(err.msg);
    size_t N = (size_t)B * T;
    s.tokens = malloc(sizeof *s.tokens * N);
    s.targets = malloc(sizeof *s.targets * N);
    s.tlogits = malloc(sizeof *s.tlogits * N * (size_t)s.V);
    if (!s.tokens || !s.targets || !s.tlogits) die("out of memory");
    for (size_t i = 0; i < N; i++) s.tokens[i] = (int32_t)((i * 7919 + 13) % (size_t)s.V);
    // target of position t is the next token of the same window; the last has none
    for (size_t i = 0; i < N; i++) s.targets[i] = (i + 1) % (size_t)T ? s.tokens[i + 1] : -1;
    printf("{\"engine\": \"info\", \"test\": \"model\", \"model\": \"%s\", \"params\": %lld, \"train\": \"%s\", "
           "\"threads\": %d}\n", path, (long long)kf_model_n_params(m), mode, threads);
    run("train_ce", &s, threads, repeats);
    if (kf_ctx_init(&s.teacher, tm, B * T, 0, &err) != KF_OK) die(err.msg);
    run("train_distill", &s, threads, repeats);
    kf_ctx_free(s.teacher);
    free(s.tokens), free(s.targets), free(s.tlogits);
    kf_adamw_free(s.opt);
    kf_train_free(s.t);
    kf_model_free(m);
    kf_model_free(tm);
    return 0;
}
