// kfuse eval MODEL --ref ORIGINAL -f TEXT [--ctx N --json --bench-p N --bench-n N --bench-r N --no-bench]
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

int kf_cmd_eval(int argc, char **argv) {
    const char *path = NULL, *ref_path = NULL, *text_path = NULL;
    int ctx = 256, bench_p = 128, bench_n = 64, bench_r = 3;
    bool json = false, bench = true;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-f")) text_path = kf_cli_str(argc, argv, &i);
        else if (!strcmp(argv[i], "--ref")) ref_path = kf_cli_str(argc, argv, &i);
        else if (!strcmp(argv[i], "--ctx") || !strcmp(argv[i], "-c")) ctx = (int)kf_cli_long(argc, argv, &i, 4, 1 << 20);
        else if (!strcmp(argv[i], "--bench-p")) bench_p = (int)kf_cli_long(argc, argv, &i, 1, 1 << 16);
        else if (!strcmp(argv[i], "--bench-n")) bench_n = (int)kf_cli_long(argc, argv, &i, 1, 1 << 16);
        else if (!strcmp(argv[i], "--bench-r")) bench_r = (int)kf_cli_long(argc, argv, &i, 1, 1000);
        else if (!strcmp(argv[i], "--no-bench")) bench = false;
        else if (!strcmp(argv[i], "--json")) json = true;
        else if (argv[i][0] == '-') kf_cli_failf("eval: unknown option %s", argv[i]);
        else if (!path) path = argv[i];
        else kf_cli_failf("eval: unexpected argument %s", argv[i]);
    }
    if (!path) kf_cli_failf("eval: MODEL is required");
    if (!ref_path) kf_cli_failf("eval: --ref ORIGINAL is required");
    if (!text_path) kf_cli_failf("eval: -f TEXT is required");
    kf_tokenizer *tok;
    kf_model *m = kf_cli_load_model(path, &tok);
    kf_model *ref = kf_cli_load_model(ref_path, NULL);
    if (ref->n_vocab != m->n_vocab)
        kf_cli_failf("eval: vocabularies differ: %s has %d entries, %s has %d", path, m->n_vocab, ref_path,
                     ref->n_vocab);
    kf_error err = {0};
    size_t n_ids;
    int32_t *ids = kf_cli_tokenize_file(tok, text_path, true, &n_ids);
    kf_progress bar;
    kf_progress_init(&bar, "eval", "windows", (int64_t)(n_ids / (size_t)ctx));
    kf_compare_result r;
    kf_status s = kf_eval_compare(m, ref, ids, (int64_t)n_ids, ctx, kf_tokenizer_bos(tok), &r, on_chunk, &bar, &err);
    kf_progress_done(&bar);
    if (s != KF_OK) kf_cli_fail(&err);
    kf_bench_result bm, br;
    if (bench) {
        // Both measured in this process, one after the other.
        if (kf_bench_run(m, bench_p, bench_n, bench_r, &bm, &err) != KF_OK) kf_cli_fail(&err);
        if (kf_bench_run(ref, bench_p, bench_n, bench_r, &br, &err) != KF_OK) kf_cli_fail(&err);
    }
    if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "text", text_path);
        cJSON_AddNumberToObject(o, "ctx", ctx);
        cJSON_AddNumberToObject(o, "n_tokens", (double)n_ids);
        cJSON_AddNumberToObject(o, "n_scored", (double)r.n_scored);
        cJSON_AddNumberToObject(o, "kl_mean", r.kl_mean);
        cJSON_AddNumberToObject(o, "kl_p99", r.kl_p99);
        cJSON_AddNumberToObject(o, "kl_max", r.kl_max);
        cJSON_AddNumberToObject(o, "top1_agreement", r.top1);
        cJSON_AddItemToObject(o, "model", side_json(path, m, &r.model, bench ? &bm : NULL));
        cJSON_AddItemToObject(o, "ref", side_json(ref_path, ref, &r.ref, bench ? &br : NULL));
        if (bench) {
            cJSON_AddNumberToObject(o, "bench_prompt", bench_p);
            cJSON_AddNumberToObject(o, "bench_gen", bench_n);
            cJSON_AddNumberToObject(o, "bench_repeats", bench_r);
        }
        kf_cli_print_json(o, true);
    } else {
        printf("%s: %lld tokens scored (ctx %d)\n", text_path, (long long)r.n_scored, ctx);
        printf("%-10s %12s %12s\n", "", "model", "reference");
        printf("%-10s %12.4f %12.4f\n", "ppl", r.model.ppl, r.ref.ppl);
        printf("%-10s %12lld %12lld\n", "params", (long long)kf_model_n_params(m), (long long)kf_model_n_params(ref));
        printf("%-10s %12lld %12lld\n", "bytes", (long long)kf_model_weight_bytes(m),
               (long long)kf_model_weight_bytes(ref));
        if (bench) {
            printf("%-10s %12.1f %12.1f  (tokens/s, prompt %d)\n", "prefill", bm.pp.median, br.pp.median, bench_p);
            printf("%-10s %12.1f %12.1f  (tokens/s, %d tokens)\n", "decode", bm.tg.median, br.tg.median, bench_n);
        }
        printf("KL(ref||model): mean %.6f  p99 %.6f  max %.6f nats; top-1 agreement %.4f\n", r.kl_mean, r.kl_p99,
               r.kl_max, r.top1);
    }
    free(ids);
    kf_tokenizer_free(tok);
    kf_model_free(m);
    kf_model_free(ref);
    return 0;
}
