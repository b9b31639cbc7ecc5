// analysis.json to and from kf_analysis_result (report/analysis_json.c), on a
// real analysis of the shipped 1.4m model over the repository's calibration
// text (data/calib/calib.txt, tokenized, so the contexts carry text):
// - the tree holds the result's numbers (thresholds, CKA, Block Influence,
//   cluster sizes, contexts) where the schema puts them;
// - struct -> JSON -> struct -> JSON gives the same text, and report.html
//   drawn from the struct read back is the same page;
// - a bad analysis.json (not JSON, thresholds missing, a layer missing,
//   t out of range, a label outside k, a width too large) is refused with
//   KF_ERR_FORMAT and one line that names the file and the key.
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "analyze/pipeline.h"
#include "core/file.h"
#include "io/load.h"
#include "report/analysis_json.h"
#include "report/analysis_report.h"
#include "tokenizer/tokenizer.h"

static kf_model *model;
static kf_tokenizer *tok;
static kf_analysis run;

static int setup(void **state) {
    (void)state;
    kf_error err = {0};
    const char *root = getenv("KF_ROOT");
    char path[1024], calib[1024];
    snprintf(path, sizeof path, "%s/models/llama-gutenberg-1.4m", root ? root : ".");
    snprintf(calib, sizeof calib, "%s/data/calib/calib.txt", root ? root : ".");
    char *text = NULL;
    size_t len;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    if (kf_model_load(&model, path, &err) != KF_OK ||
        kf_tokenizer_load_for_model(&tok, path, model->n_vocab, &err) != KF_OK ||
        kf_file_read_all(calib, &text, &len, &err) != KF_OK ||
        kf_tokenizer_encode(tok, text, len < 20000 ? len : 20000, false, &ids, &n_ids, &err) != KF_OK) {
        fprintf(stderr, "%s\n", err.msg);
        free(text);
        return -1;
    }
    free(text);
    kf_analyze_opts o;
    kf_analyze_opts_default(&o);
    o.n_tokens = 1024;
    o.ctx = 128;
    o.batch = 2;
    o.sample_tokens = 128;
    o.context_tokens = 256;
    kf_status st = kf_analyze_run(model, tok, ids, (int64_t)n_ids, &o, &run, &err);
    free(ids);
    if (st != KF_OK) fprintf(stderr, "%s\n", err.msg);
    return st == KF_OK ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    kf_analysis_free(&run);
    kf_tokenizer_free(tok);
    kf_model_free(model);
    return 0;
}

static char *print(const kf_analysis_result *r) {
    cJSON *j = kf_report_analysis_to_json(r);
    assert_non_null(j);
    char *s = cJSON_Print(j);
    cJSON_Delete(j);
    assert_non_null(s);
    return s;
}

static cJSON *at(const cJSON *o, const char *key) { return cJSON_GetObjectItemCaseSensitive(o, key); }

static void test_tree_holds_the_numbers(void **state) {
    (void)state;
    const kf_analysis_result *r = run.result;
    assert_non_null(r);
    cJSON *j = kf_report_analysis_to_json(r);
    assert_non_null(j);
    const int L = r->n_layer, R = L + 1;
    assert_int_equal(at(at(j, "model"), "n_layer")->valuedouble, L);
    const cJSON *cka = at(at(j, "layers"), "cka"), *thl = at(at(j, "thresholds"), "layers");
    assert_int_equal(cJSON_GetArraySize(cka), R);
    assert_true(cJSON_GetArrayItem(cJSON_GetArrayItem(cka, 1), 2)->valuedouble == r->cka[1 * R + 2]);
    for (int l = 0; l < L; l++) {
        const kf_analysis_layer *a = &r->layers[l];
        const cJSON *e = cJSON_GetArrayItem(thl, l);
        assert_true(at(e, "t")->valuedouble == a->t);
        assert_int_equal(at(e, "width")->valuedouble, a->width);
        assert_true(cJSON_GetArrayItem(at(e, "err_curve"), 37)->valuedouble == a->err_curve[37]);
        assert_true(cJSON_GetArrayItem(at(at(j, "layers"), "block_influence"), l)->valuedouble == a->block_influence);
        const cJSON *act = at(cJSON_GetArrayItem(at(at(j, "clusters"), "layers"), l), "activation");
        assert_int_equal(at(act, "k")->valuedouble, a->activation.k);
        assert_int_equal(cJSON_GetArrayItem(at(act, "sizes"), 0)->valuedouble, a->activation.clusters[0].size);
        const kf_analysis_context *x = &a->activation.clusters[0].contexts[0];
        const cJSON *c0 = cJSON_GetArrayItem(cJSON_GetArrayItem(at(act, "contexts"), 0), 0);
        assert_non_null(x->token); // a tokenizer was given
        assert_string_equal(cJSON_GetStringValue(at(c0, "token")), x->token);
        assert_int_equal(at(c0, "pos")->valuedouble, x->pos);
        assert_int_equal(cJSON_GetArraySize(at(c0, "ids")), x->n_ids);
    }
    cJSON_Delete(j);
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
    assert_int_equal(fclose(f), 0);
}

static void test_round_trip(void **state) {
    (void)state;
    char *a = print(run.result);
    cJSON *j = cJSON_Parse(a);
    assert_non_null(j);
    kf_analysis_result back;
    kf_error err = {0};
    kf_status st = kf_report_analysis_from_json(j, "analysis.json", &back, &err);
    if (st != KF_OK) fprintf(stderr, "%s\n", err.msg);
    assert_int_equal(st, KF_OK);
    cJSON_Delete(j);
    char *b = print(&back);
    assert_string_equal(a, b);

    // report.html from the struct read back is the page of the original
    char d1[] = "/tmp/kf_test_ajson_XXXXXX", d2[] = "/tmp/kf_test_ajson_XXXXXX";
    assert_non_null(mkdtemp(d1));
    assert_non_null(mkdtemp(d2));
    assert_int_equal(kf_report_analysis_write(run.result, d1, &err), KF_OK);
    assert_int_equal(kf_report_analysis_write(&back, d2, &err), KF_OK);
    char p1[1100], p2[1100], *h1, *h2;
    size_t n1, n2;
    const char *names[] = {"report.html", "analysis.json"};
    for (int i = 0; i < 2; i++) {
        snprintf(p1, sizeof p1, "%s/%s", d1, names[i]);
        snprintf(p2, sizeof p2, "%s/%s", d2, names[i]);
        assert_int_equal(kf_file_read_all(p1, &h1, &n1, &err), KF_OK);
        assert_int_equal(kf_file_read_all(p2, &h2, &n2, &err), KF_OK);
        assert_true(n1 > 1000 && n1 == n2 && memcmp(h1, h2, n1) == 0);
        free(h1);
        free(h2);
        unlink(p1);
        unlink(p2);
    }
    // and the file read back gives the same result again
    snprintf(p1, sizeof p1, "%s/analysis.json", d1);
    write_text(p1, a);
    kf_analysis_result again;
    assert_int_equal(kf_report_analysis_read(p1, &again, &err), KF_OK);
    char *c = print(&again);
    assert_string_equal(a, c);
    unlink(p1);
    rmdir(d1);
    rmdir(d2);
    free(a);
    free(b);
    free(c);
    kf_analysis_result_free(&back);
    kf_analysis_result_free(&again);
}

// The good tree with one change made by edit, written to a file and read:
// refused with KF_ERR_FORMAT and a single line holding the path and want.
static void expect_refused(void (*edit)(cJSON *), const char *want) {
    cJSON *j = kf_report_analysis_to_json(run.result);
    assert_non_null(j);
    edit(j);
    char *text = cJSON_Print(j);
    cJSON_Delete(j);
    char path[] = "/tmp/kf_test_ajson_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    write_text(path, text);
    free(text);
    kf_analysis_result r;
    kf_error err = {0};
    kf_status st = kf_report_analysis_read(path, &r, &err);
    kf_analysis_result_free(&r);
    unlink(path);
    fprintf(stderr, "refused: %s\n", err.msg);
    assert_int_equal(st, KF_ERR_FORMAT);
    assert_true(strncmp(err.msg, path, strlen(path)) == 0);
    assert_non_null(strstr(err.msg, want));
    assert_null(strchr(err.msg, '\n'));
}

static cJSON *thr_layers(cJSON *j) { return at(at(j, "thresholds"), "layers"); }
static void no_thresholds(cJSON *j) { cJSON_DeleteItemFromObjectCaseSensitive(j, "thresholds"); }
static void one_layer_less(cJSON *j) { cJSON_DeleteItemFromArray(thr_layers(j), 1); }
static void t_above_one(cJSON *j) { cJSON_SetNumberValue(at(cJSON_GetArrayItem(thr_layers(j), 1), "t"), 1.5); }
static void t_negative(cJSON *j) { cJSON_SetNumberValue(at(cJSON_GetArrayItem(thr_layers(j), 0), "t"), -0.01); }
static void t_string(cJSON *j) {
    cJSON_ReplaceItemInObjectCaseSensitive(cJSON_GetArrayItem(thr_layers(j), 0), "t", cJSON_CreateString("0.3"));
}
static void wide(cJSON *j) { cJSON_SetNumberValue(at(cJSON_GetArrayItem(thr_layers(j), 2), "width"), 1e6); }
static void label_out_of_k(cJSON *j) {
    cJSON *act = at(cJSON_GetArrayItem(at(at(j, "clusters"), "layers"), 0), "activation");
    cJSON_SetNumberValue(cJSON_GetArrayItem(at(act, "labels"), 3), at(act, "k")->valuedouble);
}
static void short_cka(cJSON *j) { cJSON_DeleteItemFromArray(at(at(j, "layers"), "cka"), 0); }

static void test_bad_files(void **state) {
    (void)state;
    expect_refused(no_thresholds, "thresholds: missing");
    expect_refused(one_layer_less, "thresholds.layers: 3 layers, model.n_layer is 4");
    expect_refused(t_above_one, "thresholds.layers[1].t: 1.5 is outside [0, 1]");
    expect_refused(t_negative, "thresholds.layers[0].t: -0.01 is outside [0, 1]");
    expect_refused(t_string, "thresholds.layers[0].t: not a number");
    expect_refused(wide, "thresholds.layers[2].width: not an integer in [1, ");
    expect_refused(label_out_of_k, "clusters.layers[0].activation.labels: entry 3 is not an integer in [0, ");
    expect_refused(short_cka, "layers.cka: 4 entries, want 5");

    char path[] = "/tmp/kf_test_ajson_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    write_text(path, "{\"schema\": \"kfuse-analysis/1\", ");
    kf_analysis_result r;
    kf_error err = {0};
    assert_int_equal(kf_report_analysis_read(path, &r, &err), KF_ERR_FORMAT);
    assert_true(strncmp(err.msg, path, strlen(path)) == 0 && strstr(err.msg, "not valid JSON"));
    kf_analysis_result_free(&r);
    unlink(path);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tree_holds_the_numbers),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_bad_files),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
