#include "io/load.h"
#include "cli.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "core/file.h"

void kf_cli_fail(const kf_error *err) {
    fprintf(stderr, "kfuse: %s\n", err->msg);
    exit(1);
}

void kf_cli_failf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "kfuse: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

const char *kf_cli_str(int argc, char **argv, int *i) {
    if (*i + 1 >= argc) kf_cli_failf("option %s needs a value", argv[*i]);
    return argv[++*i];
}

long kf_cli_long(int argc, char **argv, int *i, long lo, long hi) {
    const char *opt = argv[*i], *v = kf_cli_str(argc, argv, i);
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || *end || end == v || x < lo || x > hi)
        kf_cli_failf("option %s: '%s' is not an integer in [%ld, %ld]", opt, v, lo, hi);
    return x;
}

const char *kf_cli_size_str(char *buf, size_t n, int64_t bytes) {
    if (bytes >= ((int64_t)1 << 30)) snprintf(buf, n, "%.2f GiB", bytes / 1073741824.0);
    else snprintf(buf, n, "%.1f MiB", bytes / 1048576.0);
    return buf;
}

double kf_cli_double(int argc, char **argv, int *i, double lo, double hi) {
    const char *opt = argv[*i], *v = kf_cli_str(argc, argv, i);
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || *end || end == v || !(x >= lo && x <= hi))
        kf_cli_failf("option %s: '%s' is not a number in [%g, %g]", opt, v, lo, hi);
    return x;
}

uint64_t kf_cli_bytes(int argc, char **argv, int *i) {
    const char *opt = argv[*i], *v = kf_cli_str(argc, argv, i);
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    double unit = 1;
    switch (*end) {
    case 'K': case 'k': unit = 1024.0, end++; break;
    case 'M': case 'm': unit = 1048576.0, end++; break;
    case 'G': case 'g': unit = 1073741824.0, end++; break;
    case 'T': case 't': unit = 1099511627776.0, end++; break;
    default: break;
    }
    if (unit > 1 && (*end == 'B' || *end == 'b')) end++;
    x *= unit;
    if (errno || *end || end == v || !(x >= 1 && x < 1e18))
        kf_cli_failf("option %s: '%s' is not a size (bytes, or a number with K, M, G or T)", opt, v);
    return (uint64_t)x;
}

uint64_t kf_cli_physical_memory(void) {
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    return pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page : (uint64_t)8 << 30;
}

int64_t kf_cli_default_max_memory(const kf_model *m) {
    int64_t free_b = ((int64_t)kf_cli_physical_memory() - kf_model_weight_bytes(m)) / 2;
    return free_b > ((int64_t)256 << 20) ? free_b : (int64_t)256 << 20;
}

const char *kf_cli_default_model(void) {
    static const char *rel = "models/llama-gutenberg-6.5m";
    if (kf_dir_exists(rel)) return rel;
    return KF_SOURCE_DIR "/models/llama-gutenberg-6.5m";
}

static kf_model *load_model(const char *path, kf_tokenizer **tok, bool keep_dtype) {
    kf_error err = {0};
    kf_model *m;
    if (kf_model_load_opts(&m, path, &(kf_load_opts){.keep_dtype = keep_dtype}, &err) != KF_OK) kf_cli_fail(&err);
    if (tok) {
        if (kf_tokenizer_load_for_model(tok, path, m->n_vocab, &err) != KF_OK) kf_cli_fail(&err);
        if (kf_tokenizer_n_vocab(*tok) > m->n_vocab)
            kf_cli_failf("%s: tokenizer has %d entries but the model's vocabulary is %d", path,
                         kf_tokenizer_n_vocab(*tok), m->n_vocab);
    }
    return m;
}

kf_model *kf_cli_load_model(const char *path, kf_tokenizer **tok) { return load_model(path, tok, false); }

kf_model *kf_cli_load_model_run(const char *path, kf_tokenizer **tok) { return load_model(path, tok, true); }

kf_dtype kf_cli_save_dtype(const char *cmd, const char *name, const kf_model *m, kf_format f) {
    if (!name) return kf_save_default_dtype(kf_model_weight_dtype(m), f);
    kf_dtype d;
    if (!kf_dtype_parse(name, &d)) kf_cli_failf("%s: --dtype must be f32, f16, bf16 or q8_0, not '%s'", cmd, name);
    if (f == KF_FORMAT_HF && d == KF_DTYPE_Q8_0)
        kf_cli_failf("%s: --dtype q8_0 needs --format gguf (safetensors stores f32, f16, bf16)", cmd);
    if (f == KF_FORMAT_LLAMA2C && d != KF_DTYPE_F32) kf_cli_failf("%s: llama2c stores f32 only", cmd);
    return d;
}

void kf_cli_save_model(const char *cmd, const kf_model *m, const char *out, const kf_save_opts *so) {
    if (so->format == KF_FORMAT_GGUF && so->tok && kf_tokenizer_split_matters(so->tok))
        fprintf(stderr, "%s: warning: the tokenizer splits words at every \"\xE2\x96\x81\" (Metaspace split) and has pieces "
                        "that span one; kfuse reads the split back from %s, llama.cpp does not and may tokenize runs "
                        "of spaces differently\n", cmd, out);
    kf_error err = {0};
    if (kf_model_save(m, out, so, &err) != KF_OK) kf_cli_fail(&err);
}

char *kf_cli_read_text(const char *path, size_t *len) {
    kf_error err = {0};
    char *buf;
    if (kf_file_read_all(path, &buf, len, &err) != KF_OK) kf_cli_fail(&err);
    return buf;
}

int32_t *kf_cli_tokenize_file(const kf_tokenizer *tok, const char *path, bool add_bos, size_t *n_ids) {
    size_t len;
    char *text = kf_cli_read_text(path, &len);
    kf_error err = {0}, named;
    int32_t *ids;
    if (kf_tokenizer_encode(tok, text, len, add_bos, &ids, n_ids, &err) != KF_OK) {
        kf_error_set(&named, err.code, "%s: %s", path, err.msg);
        kf_cli_fail(&named);
    }
    free(text);
    return ids;
}

void kf_cli_print_json(cJSON *o, bool pretty) {
    char *txt = pretty ? cJSON_Print(o) : cJSON_PrintUnformatted(o);
    if (!txt) kf_cli_failf("out of memory printing JSON");
    printf("%s\n", txt);
    free(txt);
    cJSON_Delete(o);
}
