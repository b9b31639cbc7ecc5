// Creates the engine benchmark model: a random-initialised Llama written as a
// Hugging Face folder (config.json + model.safetensors), fp32.
//
//   make_bench_model [DIR] [--seed S]      (default /tmp/kfuse-bench/llama-2048x16)
//
// Shape: hidden 2048, 16 layers, FFN 5632, 32 heads (32 kv heads, Dh 64),
// vocab 32000, untied head: 953.2 M parameters, 3.81 GB. Matrices are drawn
// from N(0, 0.02) (the Hugging Face Llama init), norm weights are 1, so the
// residual stream stays O(1) through the 16 layers and logits stay finite.
// Values depend only on the seed, the tensor and the row, not on threads.
// Does nothing when DIR already holds config.json and model.safetensors.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/save.h"
#include "core/file.h"
#include "core/progress.h"
#include "model/model.h"

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// Uniform in (0, 1): 53 random bits, never 0 (log(u) stays finite).
static double uniform01(uint64_t *s) { return ((splitmix64(s) >> 11) + 0.5) * (1.0 / 9007199254740992.0); }

// t (rows, cols) filled with N(0, std) by Box-Muller; row r of tensor `id`
// uses its own stream so rows can be generated in parallel.
static void fill_normal(kf_tensor *t, uint64_t seed, uint64_t id, float std) {
    int64_t rows = t->ne[0], cols = kf_tensor_nelem(t) / t->ne[0];
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        uint64_t s = seed ^ (id << 40) ^ (uint64_t)r * 0xD1B54A32D192ED03ull;
        float *row = t->data + r * cols;
        for (int64_t i = 0; i < cols; i += 2) {
            double rad = sqrt(-2.0 * log(uniform01(&s))), ang = 6.283185307179586 * uniform01(&s);
            row[i] = (float)(std * rad * cos(ang));
            if (i + 1 < cols) row[i + 1] = (float)(std * rad * sin(ang));
        }
    }
}

static void fill_ones(kf_tensor *t) {
    for (int64_t i = 0; i < kf_tensor_nelem(t); i++) t->data[i] = 1.0f;
}

static void fail(const kf_error *err) {
    fprintf(stderr, "make_bench_model: %s\n", err->msg);
    exit(1);
}

#define TRY(x)                          \
    do {                                \
        if ((x) != KF_OK) fail(&err);   \
    } while (0)

// mkdir -p for the folder of the model (and its parents).
static int make_dirs(const char *dir) {
    char p[1024];
    if (snprintf(p, sizeof p, "%s", dir) >= (int)sizeof p) return -1;
    for (char *c = p + 1; *c; c++) {
        if (*c != '/') continue;
        *c = '\0';
        mkdir(p, 0755);
        *c = '/';
    }
    mkdir(p, 0755);
    return kf_dir_exists(p) ? 0 : -1;
}

int main(int argc, char **argv) {
    const char *dir = "/tmp/kfuse-bench/llama-2048x16";
    uint64_t seed = 1234;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--seed") && i + 1 < argc) seed = strtoull(argv[++i], NULL, 10);
        else if (argv[i][0] == '-') {
            fprintf(stderr, "usage: make_bench_model [DIR] [--seed S]\n");
            return 2;
        } else dir = argv[i];
    }
    char cfg[1100], st[1100];
    kf_path_join(cfg, sizeof cfg, dir, "config.json");
    kf_path_join(st, sizeof st, dir, "model.safetensors");
    if (kf_file_exists(cfg) && kf_file_exists(st)) {
        printf("make_bench_model: %s exists, kept\n", dir);
        return 0;
    }
    if (make_dirs(dir) != 0) {
        fprintf(stderr, "make_bench_model: cannot create %s\n", dir);
        return 1;
    }

    kf_error err = {0};
    kf_model *m = kf_model_new();
    if (!m) return 1;
    m->arch = KF_ARCH_LLAMA;
    m->norm = KF_NORM_RMS;
    m->act = KF_ACT_SILU;
    m->pos = KF_POS_ROPE;
    m->gated_ffn = true;
    m->n_vocab = 32000;
    m->n_embd = 2048;
    m->n_layer = 16;
    m->n_head = 32;
    m->n_head_kv = 32;
    m->head_dim = 64;
    m->n_ctx_train = 2048;
    m->norm_eps = 1e-5f;
    m->rope_theta = 10000.0f;
    m->tied_head = false;
    m->bos_id = 1;
    m->eos_id = 2;
    const int64_t C = m->n_embd, V = m->n_vocab, F = 5632, Q = (int64_t)m->n_head * m->head_dim,
                  KV = (int64_t)m->n_head_kv * m->head_dim;
    const float std = 0.02f;
    m->layers = calloc((size_t)m->n_layer, sizeof *m->layers);
    if (!m->layers) return 1;

    double t0 = kf_time_now();
    uint64_t id = 0;
    TRY(kf_model_alloc_tensor(m, &m->tok_embd, 2, (int64_t[]){V, C}, &err));
    fill_normal(&m->tok_embd, seed, id++, std);
    TRY(kf_model_alloc_tensor(m, &m->lm_head, 2, (int64_t[]){V, C}, &err));
    fill_normal(&m->lm_head, seed, id++, std);
    TRY(kf_model_alloc_tensor(m, &m->out_norm_w, 1, (int64_t[]){C}, &err));
    fill_ones(&m->out_norm_w);
    for (int l = 0; l < m->n_layer; l++) {
        kf_layer *L = &m->layers[l];
        L->n_ff = (int)F;
        struct {
            kf_tensor *t;
            int64_t rows, cols;
        } mats[] = {{&L->wq, Q, C},          {&L->wk, KV, C},   {&L->wv, KV, C}, {&L->wo, C, Q},
                    {&L->w_gate, F, C},      {&L->w_up, F, C},  {&L->w_down, C, F}};
        for (size_t i = 0; i < sizeof mats / sizeof mats[0]; i++) {
            TRY(kf_model_alloc_tensor(m, mats[i].t, 2, (int64_t[]){mats[i].rows, mats[i].cols}, &err));
            fill_normal(mats[i].t, seed, id++, std);
        }
        TRY(kf_model_alloc_tensor(m, &L->attn_norm_w, 1, (int64_t[]){C}, &err));
        fill_ones(&L->attn_norm_w);
        TRY(kf_model_alloc_tensor(m, &L->ffn_norm_w, 1, (int64_t[]){C}, &err));
        fill_ones(&L->ffn_norm_w);
    }
    TRY(kf_model_validate(m, dir, &err));
    double t1 = kf_time_now();
    TRY(kf_model_save(m, dir, &(kf_save_opts){.format = KF_FORMAT_HF}, &err));
    printf("make_bench_model: %s: %.1f M params, %.2f GB fp32 (generated in %.1f s, written in %.1f s)\n", dir,
           kf_model_n_params(m) / 1e6, kf_model_n_params(m) * 4.0 / 1e9, t1 - t0, kf_time_now() - t1);
    kf_model_free(m);
    return 0;
}
