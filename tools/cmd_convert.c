// kfuse convert MODEL -o OUT [--format hf|gguf|llama2c] [--dtype f32|f16|bf16|q8_0] [--dense] [--random-init SEED]
// Writes MODEL in another format through kf_model_save (the one writer).
// The format defaults from OUT: *.gguf -> gguf, *.bin -> llama2c, else a
// Hugging Face folder. Weights keep the dtype MODEL stores them in unless
// --dtype says otherwise (GGUF: F32, F16, BF16, Q8_0; Hugging Face folders:
// F32, F16, BF16, a Q8_0 model is written as F16; llama2.c: F32). --dense drops a MoEfied
// model's experts and routers: the dense model with every neuron, which is
// what readers that ignore the experts (llama.cpp, transformers) compute.
// --random-init SEED writes MODEL re-initialised at random (kf_model_randomize,
// the untrained control of `kfuse probe --random-init SEED`), so that every
// command can run on the control.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/file.h"
#include "io/moe_fields.h"
#include "io/save.h"
#include "probe/classifier.h"

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n > k && !strcmp(s + n - k, suffix);
}

int kf_cmd_convert(int argc, char **argv) {
    const char *path = NULL, *out = NULL, *format = NULL, *dtype_name = NULL;
    bool dense = false, random_init = false;
    uint64_t init_seed = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-o")) out = kf_cli_str(argc, argv, &i);
        else if (!strcmp(a, "--format")) format = kf_cli_str(argc, argv, &i);
        else if (!strcmp(a, "--dtype")) dtype_name = kf_cli_str(argc, argv, &i);
        else if (!strcmp(a, "--dense")) dense = true;
        else if (!strcmp(a, "--random-init")) {
            random_init = true;
            init_seed = (uint64_t)kf_cli_long(argc, argv, &i, 0, KF_CLASSIFIER_MAX_SEED); // the seeds probe records
        }
        else if (a[0] == '-') kf_cli_failf("convert: unknown option %s", a);
        else if (!path) path = a;
        else kf_cli_failf("convert: unexpected argument %s", a);
    }
    if (!path) kf_cli_failf("convert: MODEL is required");
    if (!out) kf_cli_failf("convert: -o OUT is required");
    if (!format) format = ends_with(out, ".gguf") ? "gguf" : ends_with(out, ".bin") ? "llama2c" : "hf";
    kf_format fmt;
    if (!kf_format_parse(format, &fmt)) kf_cli_failf("convert: --format must be hf, gguf or llama2c, not '%s'", format);
    if (dtype_name) kf_cli_save_dtype("convert", dtype_name, NULL, fmt); // a bad name fails before any work

    kf_tokenizer *tok = NULL; // GGUF embeds the vocabulary
    // weights stay in their file dtype (a 7B BF16 model fits in memory); the writers convert row by row
    kf_model *m = kf_cli_load_model_run(path, fmt == KF_FORMAT_GGUF ? &tok : NULL);
    if (dense) kf_moe_make_dense(m);
    kf_error err = {0};
    if (random_init && kf_model_randomize(m, init_seed, &err) != KF_OK) kf_cli_fail(&err);
    const kf_dtype dtype = kf_cli_save_dtype("convert", dtype_name, m, fmt);
    kf_save_opts so = {.format = fmt, .dtype = dtype, .tok = tok, .tokenizer_dir = kf_dir_exists(path) ? path : NULL};
    kf_cli_save_model("convert", m, out, &so);
    fprintf(stderr, "convert: %s -> %s (%s, %s%s%s)\n", path, out, format, kf_dtype_name(dtype), dense ? ", dense" : "",
            random_init ? ", random init" : "");
    kf_tokenizer_free(tok);
    kf_model_free(m);
    return 0;
}
