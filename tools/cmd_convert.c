// kfuse convert MODEL -o OUT [--format hf|gguf|llama2c] [--dtype f32|f16|bf16|q8_0] [--dense]
// Writes MODEL in another format through kf_model_save (the one writer).
// The format defaults from OUT: *.gguf -> gguf, *.bin -> llama2c, else a
// Hugging Face folder. --dtype stores GGUF weights as F16, BF16 or Q8_0
// (Hugging Face folders and llama2.c are F32 only). --dense drops a MoEfied
// model's experts and routers: the dense model with every neuron, which is
// what readers that ignore the experts (llama.cpp, transformers) compute.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/file.h"
#include "io/moe_fields.h"
#include "io/save.h"

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n > k && !strcmp(s + n - k, suffix);
}

static bool parse_dtype(const char *v, kf_dtype *out) {
    static const struct {
        const char *name;
        kf_dtype d;
    } names[] = {{"f32", KF_DTYPE_F32}, {"f16", KF_DTYPE_F16}, {"bf16", KF_DTYPE_BF16}, {"q8_0", KF_DTYPE_Q8_0}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcmp(v, names[i].name)) {
            *out = names[i].d;
            return true;
        }
    return false;
}

int kf_cmd_convert(int argc, char **argv) {
    const char *path = NULL, *out = NULL, *format = NULL, *dtype_name = "f32";
    bool dense = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-o")) out = kf_cli_str(argc, argv, &i);
        else if (!strcmp(a, "--format")) format = kf_cli_str(argc, argv, &i);
        else if (!strcmp(a, "--dtype")) dtype_name = kf_cli_str(argc, argv, &i);
        else if (!strcmp(a, "--dense")) dense = true;
        else if (a[0] == '-') kf_cli_failf("convert: unknown option %s", a);
        else if (!path) path = a;
        else kf_cli_failf("convert: unexpected argument %s", a);
    }
    if (!path) kf_cli_failf("convert: MODEL is required");
    if (!out) kf_cli_failf("convert: -o OUT is required");
    if (!format) format = ends_with(out, ".gguf") ? "gguf" : ends_with(out, ".bin") ? "llama2c" : "hf";
    kf_format fmt;
    if (!kf_format_parse(format, &fmt)) kf_cli_failf("convert: --format must be hf, gguf or llama2c, not '%s'", format);
    kf_dtype dtype;
    if (!parse_dtype(dtype_name, &dtype)) kf_cli_failf("convert: --dtype must be f32, f16, bf16 or q8_0, not '%s'", dtype_name);
    if (dtype != KF_DTYPE_F32 && fmt != KF_FORMAT_GGUF)
        kf_cli_failf("convert: --dtype %s needs --format gguf (%s files are F32)", dtype_name, format);

    kf_tokenizer *tok = NULL; // GGUF embeds the vocabulary
    kf_model *m = kf_cli_load_model(path, fmt == KF_FORMAT_GGUF ? &tok : NULL);
    if (dense) kf_moe_make_dense(m);
    kf_save_opts so = {.format = fmt, .dtype = dtype, .tok = tok, .tokenizer_dir = kf_dir_exists(path) ? path : NULL};
    kf_cli_save_model("convert", m, out, &so);
    fprintf(stderr, "convert: %s -> %s (%s, %s%s)\n", path, out, format, dtype_name, dense ? ", dense" : "");
    kf_tokenizer_free(tok);
    kf_model_free(m);
    return 0;
}
