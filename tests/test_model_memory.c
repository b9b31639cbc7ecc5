// kf_model_load_to_memory (--no-mmap): the weights leave the file mapping,
// the maps are released, a tied head stays tied, and the logits are the
// same bit for bit.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "io/load.h"
#include "model/model.h"
#include "runtime/forward.h"

static kf_model *load(const char *rel) {
    char path[1024];
    const char *root = getenv("KF_ROOT");
    snprintf(path, sizeof path, "%s/%s", root ? root : ".", rel);
    kf_model *m = NULL;
    kf_error err = {0};
    if (kf_model_load(&m, path, &err) != KF_OK) fail_msg("%s", err.msg);
    return m;
}

static float *logits_of(const kf_model *m, const int32_t *ids_in, int T) {
    int32_t ids[16];
    for (int t = 0; t < T; t++) ids[t] = ids_in[t] % m->n_vocab;
    kf_ctx *c;
    kf_error err = {0};
    if (kf_ctx_init(&c, m, T, 0, &err) != KF_OK) fail_msg("%s", err.msg);
    float *out = malloc(sizeof *out * (size_t)T * (size_t)m->n_vocab);
    assert_non_null(out);
    if (kf_forward_prefill(c, ids, 1, T, out, &err) != KF_OK) fail_msg("%s", err.msg);
    kf_ctx_free(c);
    return out;
}

static void check_model(const char *rel) {
    const int32_t ids[] = {1, 17, 300, 4000, 5, 99, 2048, 7};
    const int T = (int)(sizeof ids / sizeof ids[0]);
    kf_model *mapped = load(rel), *copied = load(rel);
    assert_true(copied->n_maps > 0);
    const float *old_embd = copied->tok_embd.data;
    kf_error err = {0};
    assert_int_equal(kf_model_load_to_memory(copied, &err), KF_OK);
    assert_int_equal(copied->n_maps, 0);
    if (copied->tok_embd.src_dtype == KF_DTYPE_F32) // F32 pointed into the file; others were converted at load
        assert_ptr_not_equal(copied->tok_embd.data, old_embd);
    if (copied->tied_head) assert_ptr_equal(copied->lm_head.data, copied->tok_embd.data);
    int n = kf_model_list_tensors(copied, NULL, 0);
    kf_named_tensor *ts = malloc(sizeof *ts * (size_t)n), *tm = malloc(sizeof *tm * (size_t)n);
    assert_int_equal(kf_model_list_tensors(copied, ts, n), n);
    assert_int_equal(kf_model_list_tensors(mapped, tm, n), n);
    for (int i = 0; i < n; i++)
        assert_memory_equal(ts[i].t->data, tm[i].t->data, sizeof(float) * (size_t)kf_tensor_nelem(ts[i].t));
    float *a = logits_of(mapped, ids, T), *b = logits_of(copied, ids, T);
    assert_memory_equal(a, b, sizeof(float) * (size_t)T * (size_t)mapped->n_vocab);
    free(a);
    free(b);
    free(ts);
    free(tm);
    kf_model_free(mapped);
    kf_model_free(copied);
}

static void test_tied_llama(void **state) {
    (void)state;
    check_model("models/llama-gutenberg-1.4m");
}

static void test_untied_gqa(void **state) {
    (void)state;
    check_model("tests/fixtures/models/llama-gqa-bf16"); // BF16: converted at load, nothing mapped but the file
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tied_llama),
        cmocka_unit_test(test_untied_gqa),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
