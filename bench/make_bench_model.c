// Creates the engine benchmark models: a random-initialised Llama written as
// a Hugging Face folder (config.json + safetensors, sharded above 5 GB).
//
//   make_bench_model [DIR] [--shape 2048x16|llama2-7b|HxLxFxHEADS] [--dtype f32|f16|bf16] [--seed S] [--shard-bytes N]
//   (default DIR /tmp/kfuse-bench/llama-2048x16, or /tmp/kfuse-bench/llama2-7b-<dtype>)
//
// Shapes: 2048x16 (the default, fp32): hidden 2048, 16 layers, FFN 5632, 32
// heads (32 kv heads, Dh 64), vocab 32000, untied head: 953.2 M parameters,
// 3.81 GB. llama2-7b: Llama-2-7B's shape (hidden 4096, 32 layers, FFN 11008,
// 32 heads, vocab 32000, untied head): 6.74 G parameters, 13.5 GB in BF16;
// in F16/BF16 each matrix is generated in fp32 and converted on its own, so
// memory stays near the model's size in its dtype. Matrices are drawn
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
#include "core/rng.h"
#include "model/model.h"
#include "synth_model.h"

// Uniform in (0, 1): 53 random bits, never 0 (log(u) stays finite).
static double uniform01(uint64_t *s) { return kf_rng_unit(kf_rng_splitmix64(s)) + 0x1.0p-54; }

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

typedef struct {
    uint64_t seed, id; // id: the next matrix's stream number
} fill_state;

// Matrices N(0, 0.02), each with its own stream; norm weights 1.
static void fill(kf_tensor *t, bool norm, void *user) {
    fill_state *f = user;
    if (!norm) {
        fill_normal(t, f->seed, f->id++, 0.02f);
        return;
    }
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

typedef struct {
    const char *name;
    int n_embd, n_layer, n_ff, n_head, n_ctx;
} bench_shape;

static const bench_shape SHAPES[] = {
    {"2048x16", 2048, 16, 5632, 32, 2048},
    {"llama2-7b", 4096, 32, 11008, 32, 4096},
};

int main(int argc, char **argv) {
    const char *dir = NULL, *shape_name = "2048x16", *dtype_name = NULL;
    uint64_t seed = 1234;
    int64_t shard_bytes = 0; // 0: the writer's default (5 GB)
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--seed") && i + 1 < argc) seed = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--shape") && i + 1 < argc) shape_name = argv[++i];
        else if (!strcmp(argv[i], "--dtype") && i + 1 < argc) dtype_name = argv[++i];
        else if (!strcmp(argv[i], "--shard-bytes") && i + 1 < argc) shard_bytes = strtoll(argv[++i], NULL, 10);
        else if (argv[i][0] == '-') {
            fprintf(stderr, "usage: make_bench_model [DIR] [--shape 2048x16|llama2-7b|HxLxFxHEADS] [--dtype f32|f16|bf16] [--seed S] [--shard-bytes N]\n");
            return 2;
        } else dir = argv[i];
    }
    const bench_shape *bs = NULL;
    for (size_t i = 0; i < sizeof SHAPES / sizeof SHAPES[0]; i++)
        if (!strcmp(shape_name, SHAPES[i].name)) bs = &SHAPES[i];
    bench_shape own = {"custom", 0, 0, 0, 0, 2048};
    if (!bs && sscanf(shape_name, "%dx%dx%dx%d", &own.n_embd, &own.n_layer, &own.n_ff, &own.n_head) == 4 &&
        own.n_embd > 0 && own.n_layer > 0 && own.n_layer <= 64 && own.n_ff > 0 && own.n_head > 0 &&
        own.n_embd % own.n_head == 0)
        bs = &own;
    if (!bs) {
        fprintf(stderr, "make_bench_model: --shape must be 2048x16, llama2-7b or HxLxFxHEADS, not '%s'\n", shape_name);
        return 2;
    }
    const bool big = bs != &SHAPES[0];
    kf_dtype dtype = big ? KF_DTYPE_BF16 : KF_DTYPE_F32;
    if (dtype_name && (!kf_dtype_parse(dtype_name, &dtype) || dtype == KF_DTYPE_Q8_0)) {
        fprintf(stderr, "make_bench_model: --dtype must be f32, f16 or bf16, not '%s' (Q8_0: kfuse convert)\n",
                dtype_name);
        return 2;
    }
    char def[256], cfg[1100], st[1100], idx[1100];
    if (!dir) {
        if (big) snprintf(def, sizeof def, "/tmp/kfuse-bench/llama2-7b-%s", dtype == KF_DTYPE_BF16 ? "bf16" :
                                                                             dtype == KF_DTYPE_F16 ? "f16" : "f32");
        else snprintf(def, sizeof def, "/tmp/kfuse-bench/llama-2048x16");
        dir = def;
    }
    kf_path_join(cfg, sizeof cfg, dir, "config.json");
    kf_path_join(st, sizeof st, dir, "model.safetensors");
    kf_path_join(idx, sizeof idx, dir, "model.safetensors.index.json");
    if (kf_file_exists(cfg) && (kf_file_exists(st) || kf_file_exists(idx))) {
        printf("make_bench_model: %s exists, kept\n", dir);
        return 0;
    }
    if (make_dirs(dir) != 0) {
        fprintf(stderr, "make_bench_model: cannot create %s\n", dir);
        return 1;
    }

    kf_error err = {0};
    int n_ff[64];
    for (int l = 0; l < bs->n_layer; l++) n_ff[l] = bs->n_ff;
    kf_synth_shape sh = {.n_vocab = 32000, .n_embd = bs->n_embd, .n_layer = bs->n_layer, .n_head = bs->n_head,
                         .n_head_kv = bs->n_head, .head_dim = bs->n_embd / bs->n_head, .n_ctx_train = bs->n_ctx,
                         .n_ff = n_ff, .norm_eps = 1e-5f, .rope_theta = 10000.0f, .dtype = dtype};
    fill_state fs = {seed, 0};
    kf_model *m;
    double t0 = kf_time_now();
    TRY(kf_synth_llama(&sh, fill, &fs, &m, &err));
    m->bos_id = 1;
    m->eos_id = 2;
    double t1 = kf_time_now();
    TRY(kf_model_save(m, dir, &(kf_save_opts){.format = KF_FORMAT_HF, .dtype = dtype, .shard_bytes = shard_bytes}, &err));
    printf("make_bench_model: %s: %.1f M params, %.2f GB of weights in %s (generated in %.1f s, written in %.1f s)\n",
           dir, kf_model_n_params(m) / 1e6, kf_model_weight_bytes(m) / 1e9, kf_dtype_name(dtype), t1 - t0,
           kf_time_now() - t1);
    kf_model_free(m);
    return 0;
}
