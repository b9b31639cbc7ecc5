// Compressed models leave kfuse and come back unchanged: a model folded to
// per-layer widths is written as a Hugging Face folder and as GGUF, one
// pruned to a uniform width also as llama2.c; each loads back with
// bit-identical logits, and the per-layer model decodes (generation) with the
// same logits as its prefill. A statistics file of another model is refused by
// `kfuse compress` with one line and no output.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "io/save.h"
#include "io/load.h"
#include "core/file.h"
#include "formats/gguf.h"
#include "runtime/forward.h"
#include "stats/statsfile.h"
#include "test_util.h"
#include "transform/compress.h"

#define CTX 64
#define NT (CTX * 8)

static int32_t ids[NT];
static char tmpdir[64];

static const char *root(void) {
    const char *r = getenv("KF_ROOT");
    return r ? r : ".";
}

static kf_model *load(const char *path) {
    kf_model *m = NULL;
    kf_error err = {0};
    if (kf_model_load(&m, path, &err) != KF_OK) fail_msg("%s", err.msg);
    return m;
}

static kf_model *load_small(void) {
    char path[1024];
    snprintf(path, sizeof path, "%s/models/llama-gutenberg-1.4m", root());
    return load(path);
}

static int setup(void **state) {
    kf_test_random_ids(ids, NT, 0, 4096, 2);
    snprintf(tmpdir, sizeof tmpdir, "/tmp/kf_cmp_test_XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static float *logits_of(const kf_model *m) {
    kf_ctx *c;
    kf_error err = {0};
    float *lg = malloc(sizeof *lg * (size_t)CTX * m->n_vocab);
    assert_int_equal(kf_ctx_init(&c, m, CTX, 0, &err), KF_OK);
    assert_int_equal(kf_forward_prefill(c, ids, 1, CTX, lg, &err), KF_OK);
    kf_ctx_free(c);
    return lg;
}

static kf_model *compressed(kf_cmp_method method, const int *widths) {
    kf_model *m = load_small();
    kf_compress_opts o;
    kf_compress_opts_default(&o);
    o.method = method;
    o.ctx = CTX;
    o.widths = widths;
    kf_compress_report rep;
    kf_error err = {0};
    if (kf_compress_run(m, ids, NT, 1, &o, &rep, &err) != KF_OK) fail_msg("%s", err.msg);
    kf_compress_report_free(&rep);
    return m;
}

static void same_logits(const kf_model *a, const char *path) {
    kf_model *b = load(path);
    assert_int_equal(b->n_layer, a->n_layer);
    for (int l = 0; l < a->n_layer; l++) assert_int_equal(b->layers[l].n_ff, a->layers[l].n_ff);
    float *la = logits_of(a), *lb = logits_of(b);
    assert_memory_equal(la, lb, sizeof *la * (size_t)CTX * a->n_vocab);
    free(la);
    free(lb);
    kf_model_free(b);
}

static void test_roundtrip_per_layer(void **state) {
    int widths[] = {300, 200, 150, 290};
    kf_model *m = compressed(KF_CMP_FOLD, widths);
    kf_error err = {0};
    char path[256];
    snprintf(path, sizeof path, "%s/hf", tmpdir);
    assert_int_equal(kf_model_save(m, path, &(kf_save_opts){.format = KF_FORMAT_HF}, &err), KF_OK);
    same_logits(m, path);
    snprintf(path, sizeof path, "%s/m.gguf", tmpdir);
    if (kf_model_save(m, path, &(kf_save_opts){.format = KF_FORMAT_GGUF, .tok = NULL}, &err) != KF_OK) fail_msg("%s", err.msg);
    same_logits(m, path);
    // llama2.c needs one width: refused for this model.
    snprintf(path, sizeof path, "%s/m.bin", tmpdir);
    assert_int_not_equal(kf_model_save(m, path, &(kf_save_opts){.format = KF_FORMAT_LLAMA2C}, &err), KF_OK);
    assert_false(kf_file_exists(path));
    kf_model_free(m);
}

static void test_roundtrip_uniform_llama2c(void **state) {
    int widths[] = {192, 192, 192, 192};
    kf_model *m = compressed(KF_CMP_PRUNE_WANDA, widths);
    kf_error err = {0};
    char path[256];
    snprintf(path, sizeof path, "%s/u.bin", tmpdir);
    if (kf_model_save(m, path, &(kf_save_opts){.format = KF_FORMAT_LLAMA2C}, &err) != KF_OK) fail_msg("%s", err.msg);
    same_logits(m, path);
    kf_model_free(m);
}

// Decoding token by token reproduces the prefill logits of a per-layer model.
static void test_generation_per_layer(void **state) {
    int widths[] = {100, 384, 50, 200};
    kf_model *m = compressed(KF_CMP_PRUNE_ACT, widths);
    float *pre = logits_of(m);
    kf_ctx *c;
    kf_error err = {0};
    const int V = m->n_vocab, n = 16;
    float *lg = malloc(sizeof *lg * (size_t)V);
    assert_int_equal(kf_ctx_init(&c, m, CTX, CTX, &err), KF_OK);
    for (int p = 0; p < n; p++) {
        assert_int_equal(kf_forward_decode(c, ids[p], p, lg, &err), KF_OK);
        for (int v = 0; v < V; v++) assert_true(fabsf(lg[v] - pre[(size_t)p * V + v]) <= 1e-3f);
    }
    kf_ctx_free(c);
    free(lg);
    free(pre);
    kf_model_free(m);
}

static void test_stats_of_other_model(void **state) {
    const char *kfuse = getenv("KFUSE");
    if (!kfuse) {
        kf_test_skip("$KFUSE not set (ctest sets it)");
        return;
    }
    kf_statsfile f;
    const kf_calib_protocol run = kf_calib_protocol_make(256, 1); // the run's windows: only the model differs
    kf_statsfile_init(&f, 0x1234, &run);                           // not the fingerprint of the 1.4m model
    kf_moments *mo;
    kf_error err = {0};
    assert_int_equal(kf_statsfile_add(&f, "layer.0.ffn_act", 384, 0, 0.0f, &mo, &err), KF_OK);
    char stats[256], out[256], cmd[2048], errf[256];
    snprintf(stats, sizeof stats, "%s/other.kfs", tmpdir);
    snprintf(out, sizeof out, "%s/never", tmpdir);
    snprintf(errf, sizeof errf, "%s/err.txt", tmpdir);
    assert_int_equal(kf_statsfile_save(&f, stats, &err), KF_OK);
    kf_statsfile_free(&f);
    snprintf(cmd, sizeof cmd, "%s compress %s/models/llama-gutenberg-1.4m --method fold --ffn-keep 0.5 --stats %s -o %s 2>%s",
             kfuse, root(), stats, out, errf);
    assert_int_not_equal(system(cmd), 0);
    assert_false(kf_file_exists(out) || kf_dir_exists(out));
    char *msg;
    size_t len;
    assert_int_equal(kf_file_read_all(errf, &msg, &len, &err), KF_OK);
    printf("error: %s", msg);
    assert_non_null(strstr(msg, "other.kfs"));
    assert_non_null(strchr(msg, '\n'));
    assert_true(strchr(msg, '\n') == msg + len - 1); // one line
    free(msg);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_per_layer),
        cmocka_unit_test(test_roundtrip_uniform_llama2c),
        cmocka_unit_test(test_generation_per_layer),
        cmocka_unit_test(test_stats_of_other_model),
    };
    return kf_test_status(cmocka_run_group_tests(tests, setup, teardown));
}
