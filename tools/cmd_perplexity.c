// kfuse perplexity MODEL -f TEXT [--ctx N] [--chunks N] [--json]
// --chunks N scores only the first N windows (as llama-perplexity's --chunks).
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/progress.h"
#include "eval/perplexity.h"

typedef struct {
    kf_progress bar;
    bool json;
} ppl_view;

static void on_chunk(void *user, int chunk, int n_chunks, const kf_ppl_result *r) {
    ppl_view *v = user;
    if (!v->json) {
        // Running value per window, as llama-perplexity prints it.
        printf("[%d]%.4f,", chunk + 1, r->ppl);
        fflush(stdout);
    }
    char extra[64];
    snprintf(extra, sizeof extra, "ppl %.4f", r->ppl);
    kf_progress_update(&v->bar, chunk + 1, extra);
}

int kf_cmd_perplexity(int argc, char **argv) {
    const char *path = NULL, *text_path = NULL;
    int ctx = 512;
    long chunks = 0;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-f")) text_path = kf_cli_str(argc, argv, &i);
        else if (!strcmp(argv[i], "--ctx") || !strcmp(argv[i], "-c")) ctx = (int)kf_cli_long(argc, argv, &i, 4, 1 << 20);
        else if (!strcmp(argv[i], "--chunks")) chunks = kf_cli_long(argc, argv, &i, 1, 1L << 40);
        else if (!strcmp(argv[i], "--json")) json = true;
        else if (argv[i][0] == '-') kf_cli_failf("perplexity: unknown option %s", argv[i]);
        else if (!path) path = argv[i];
        else kf_cli_failf("perplexity: unexpected argument %s", argv[i]);
    }
    if (!text_path) kf_cli_failf("perplexity: -f TEXT is required");
    if (!path) path = kf_cli_default_model();
    kf_tokenizer *tok;
    kf_model *m = kf_cli_load_model_run(path, &tok);
    kf_error err = {0};
    size_t n_ids;
    int32_t *ids = kf_cli_tokenize_file(tok, text_path, true, &n_ids);
    if (chunks && n_ids > (size_t)chunks * (size_t)ctx) n_ids = (size_t)chunks * (size_t)ctx;
    if (!json) fprintf(stderr, "perplexity: %zu tokens, %lld windows of %d\n", n_ids, (long long)(n_ids / (size_t)ctx), ctx);
    ppl_view view = {.json = json};
    kf_progress_init(&view.bar, "perplexity", "windows", (int64_t)(n_ids / (size_t)ctx));
    kf_ppl_result r;
    kf_status s = kf_eval_perplexity(m, ids, (int64_t)n_ids, ctx, kf_tokenizer_bos(tok), &r, on_chunk, &view, &err);
    kf_progress_done(&view.bar);
    if (s != KF_OK) kf_cli_fail(&err);
    double tps = r.seconds > 0 ? (double)r.n_chunks * ctx / r.seconds : 0;
    if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "model", path);
        cJSON_AddStringToObject(o, "text", text_path);
        cJSON_AddNumberToObject(o, "ctx", ctx);
        cJSON_AddNumberToObject(o, "n_tokens", (double)n_ids);
        cJSON_AddNumberToObject(o, "n_chunks", r.n_chunks);
        cJSON_AddNumberToObject(o, "n_scored", (double)r.n_scored);
        cJSON_AddNumberToObject(o, "ppl", r.ppl);
        cJSON_AddNumberToObject(o, "ppl_se", r.ppl_se);
        cJSON_AddNumberToObject(o, "nll_mean", r.nll_mean);
        cJSON_AddNumberToObject(o, "seconds", r.seconds);
        cJSON_AddNumberToObject(o, "tokens_per_s", tps);
        kf_cli_print_json(o, true);
    } else {
        printf("\nFinal estimate: PPL = %.4f +/- %.5f\n", r.ppl, r.ppl_se);
        fprintf(stderr, "perplexity: %lld tokens scored in %.2f s (%.0f tokens/s through the model)\n",
                (long long)r.n_scored, r.seconds, tps);
    }
    free(ids);
    kf_tokenizer_free(tok);
    kf_model_free(m);
    return 0;
}
