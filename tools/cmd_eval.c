// kfuse eval MODEL [MODEL...] --ref ORIGINAL -f TEXT [--ctx N --json --bench-p N --bench-n N --bench-r N
//   --no-bench --top-k K | --coverage T]
// Several models are scored in one pass over the text, the reference computed
// once per window; --json then prints an array of the one-model objects.
// --top-k / --coverage change the expert selection of MoE models.
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/progress.h"
#include "eval/bench.h"
#include "eval/compare.h"

static void on_chunk(void *user, int chunk, int n_chunks, const kf_ppl_result *r) {
    char extra[64];
    snprintf(extra, sizeof extra, "ppl %.4f", r->ppl);
    kf_progress_update(user, chunk + 1, extra);
}

static cJSON *side_json(const char *path, const kf_model *m, const kf_ppl_result *p, const kf_bench_result *b) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "path", path);
    cJSON_AddNumberToObject(o, "ppl", p->ppl);
    cJSON_AddNumberToObject(o, "ppl_se", p->ppl_se);
    cJSON_AddNumberToObject(o, "nll_mean", p->nll_mean);
    cJSON_AddNumberToObject(o, "params", (double)kf_model_n_params(m));
    cJSON_AddNumberToObject(o, "weight_bytes", (double)kf_model_weight_bytes(m));
    if (b) {
        cJSON_AddNumberToObject(o, "prefill_tps", b->pp.median);
        cJSON_AddNumberToObject(o, "decode_tps", b->tg.median);
    }
    return o;
}

static cJSON *result_json(const char *text_path, int ctx, size_t n_ids, const char *path, const kf_model *m,
                          const char *ref_path, const kf_model *ref, const kf_compare_result *r,
                          const kf_bench_result *bm, const kf_bench_result *br, const int bench_pnr[3]) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "text", text_path);
    cJSON_AddNumberToObject(o, "ctx", ctx);
    cJSON_AddNumberToObject(o, "n_tokens", (double)n_ids);
    cJSON_AddNumberToObject(o, "n_scored", (double)r->n_scored);
    cJSON_AddNumberToObject(o, "kl_mean", r->kl_mean);
    cJSON_AddNumberToObject(o, "kl_p99", r->kl_p99);
    cJSON_AddNumberToObject(o, "kl_max", r->kl_max);
    cJSON_AddNumberToObject(o, "top1_agreement", r->top1);
    cJSON_AddNumberToObject(o, "ffn_share", r->ffn_share);
    cJSON_AddItemToObject(o, "model", side_json(path, m, &r->model, bm));
    cJSON_AddItemToObject(o, "ref", side_json(ref_path, ref, &r->ref, br));
    if (bm) {
        cJSON_AddNumberToObject(o, "bench_prompt", bench_pnr[0]);
        cJSON_AddNumberToObject(o, "bench_gen", bench_pnr[1]);
        cJSON_AddNumberToObject(o, "bench_repeats", bench_pnr[2]);
    }
    return o;
}

static void print_text(const char *text_path, int ctx, const char *path, const kf_model *m, const kf_model *ref,
                       const kf_compare_result *r, const kf_bench_result *bm, const kf_bench_result *br,
                       const int bench_pnr[3]) {
    printf("%s vs reference on %s: %lld tokens scored (ctx %d)\n", path, text_path, (long long)r->n_scored, ctx);
    printf("%-10s %12s %12s\n", "", "model", "reference");
    printf("%-10s %12.4f %12.4f\n", "ppl", r->model.ppl, r->ref.ppl);
    printf("%-10s %12lld %12lld\n", "params", (long long)kf_model_n_params(m), (long long)kf_model_n_params(ref));
    printf("%-10s %12lld %12lld\n", "bytes", (long long)kf_model_weight_bytes(m), (long long)kf_model_weight_bytes(ref));
    if (r->ffn_share < 1) printf("%-10s %12.4f %12.4f  (FFN neurons computed per token)\n", "ffn share", r->ffn_share, 1.0);
    if (bm) {
        printf("%-10s %12.1f %12.1f  (tokens/s, prompt %d)\n", "prefill", bm->pp.median, br->pp.median, bench_pnr[0]);
        printf("%-10s %12.1f %12.1f  (tokens/s, %d tokens)\n", "decode", bm->tg.median, br->tg.median, bench_pnr[1]);
    }
    printf("KL(ref||model): mean %.6f  p99 %.6f  max %.6f nats; top-1 agreement %.4f\n", r->kl_mean, r->kl_p99,
           r->kl_max, r->top1);
}

int kf_cmd_eval(int argc, char **argv) {
    const char *ref_path = NULL, *text_path = NULL;
    const char **paths = calloc((size_t)argc, sizeof *paths);
    int n_models = 0, ctx = 256, bench_p = 128, bench_n = 64, bench_r = 3, top_k = 0;
    double coverage = 0;
    bool json = false, bench = true;
    if (!paths) kf_cli_failf("eval: out of memory");
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-f")) text_path = kf_cli_str(argc, argv, &i);
        else if (!strcmp(argv[i], "--ref")) ref_path = kf_cli_str(argc, argv, &i);
        else if (!strcmp(argv[i], "--ctx") || !strcmp(argv[i], "-c")) ctx = (int)kf_cli_long(argc, argv, &i, 4, 1 << 20);
        else if (!strcmp(argv[i], "--bench-p")) bench_p = (int)kf_cli_long(argc, argv, &i, 1, 1 << 16);
        else if (!strcmp(argv[i], "--bench-n")) bench_n = (int)kf_cli_long(argc, argv, &i, 1, 1 << 16);
        else if (!strcmp(argv[i], "--bench-r")) bench_r = (int)kf_cli_long(argc, argv, &i, 1, 1000);
        else if (!strcmp(argv[i], "--no-bench")) bench = false;
        else if (!strcmp(argv[i], "--json")) json = true;
        else if (!strcmp(argv[i], "--top-k")) top_k = (int)kf_cli_long(argc, argv, &i, 1, 1 << 16);
        else if (!strcmp(argv[i], "--coverage")) coverage = kf_cli_double(argc, argv, &i, 1e-9, 1);
        else if (argv[i][0] == '-') kf_cli_failf("eval: unknown option %s", argv[i]);
        else paths[n_models++] = argv[i];
    }
    if (!n_models) kf_cli_failf("eval: MODEL is required");
    if (top_k > 0 && coverage > 0) kf_cli_failf("eval: give at most one of --top-k, --coverage");
    if (!ref_path) kf_cli_failf("eval: --ref ORIGINAL is required");
    if (!text_path) kf_cli_failf("eval: -f TEXT is required");
    kf_tokenizer *tok = NULL;
    kf_model **ms = calloc((size_t)n_models, sizeof *ms);
    if (!ms) kf_cli_failf("eval: out of memory");
    kf_error err = {0};
    for (int k = 0; k < n_models; k++) {
        ms[k] = kf_cli_load_model_run(paths[k], k == 0 ? &tok : NULL);
        if ((top_k > 0 || coverage > 0) && kf_model_set_expert_selection(ms[k], top_k, (float)coverage, &err) != KF_OK)
            kf_cli_fail(&err);
    }
    kf_model *ref = kf_cli_load_model_run(ref_path, NULL);
    for (int k = 0; k < n_models; k++)
        if (ref->n_vocab != ms[k]->n_vocab)
            kf_cli_failf("eval: vocabularies differ: %s has %d entries, %s has %d", paths[k], ms[k]->n_vocab, ref_path,
                         ref->n_vocab);
    size_t n_ids;
    int32_t *ids = kf_cli_tokenize_file(tok, text_path, true, &n_ids);
    kf_progress bar;
    kf_progress_init(&bar, "eval", "windows", (int64_t)(n_ids / (size_t)ctx));
    kf_compare_result *r = calloc((size_t)n_models, sizeof *r);
    kf_bench_result *bm = calloc((size_t)n_models, sizeof *bm), br;
    if (!r || !bm) kf_cli_failf("eval: out of memory");
    kf_status s = kf_eval_compare_many((const kf_model *const *)ms, n_models, ref, ids, (int64_t)n_ids, ctx,
                                       kf_tokenizer_bos(tok), r, on_chunk, &bar, &err);
    kf_progress_done(&bar);
    if (s != KF_OK) kf_cli_fail(&err);
    if (bench) {
        // All measured in this process, one after the other.
        for (int k = 0; k < n_models; k++)
            if (kf_bench_run(ms[k], bench_p, bench_n, bench_r, &bm[k], &err) != KF_OK) kf_cli_fail(&err);
        if (kf_bench_run(ref, bench_p, bench_n, bench_r, &br, &err) != KF_OK) kf_cli_fail(&err);
    }
    const int pnr[3] = {bench_p, bench_n, bench_r};
    if (json) {
        cJSON *all = n_models > 1 ? cJSON_CreateArray() : NULL;
        for (int k = 0; k < n_models; k++) {
            cJSON *o = result_json(text_path, ctx, n_ids, paths[k], ms[k], ref_path, ref, &r[k], bench ? &bm[k] : NULL,
                                   bench ? &br : NULL, pnr);
            if (!all) kf_cli_print_json(o, true);
            else cJSON_AddItemToArray(all, o);
        }
        if (all) kf_cli_print_json(all, true);
    } else {
        for (int k = 0; k < n_models; k++)
            print_text(text_path, ctx, paths[k], ms[k], ref, &r[k], bench ? &bm[k] : NULL, bench ? &br : NULL, pnr);
    }
    free(ids);
    free(r);
    free(bm);
    kf_tokenizer_free(tok);
    for (int k = 0; k < n_models; k++) kf_model_free(ms[k]);
    free(ms);
    free(paths);
    kf_model_free(ref);
    return 0;
}
