// --recover on restructuring commands (recover_chain.h).
#include "recover_chain.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/progress.h"
#include "train/overlap.h"
#include "train/recover.h"
#include "train/train.h"

#define KF_OVERLAP_WINDOW 64 // as kfuse recover

void kf_cli_recover_chain_init(kf_cli_recover_chain *c) {
    *c = (kf_cli_recover_chain){.mode = "ffn", .tokens = 262144, .lr = 0, .batch = 8, .ctx = 256};
}

bool kf_cli_recover_chain_arg(kf_cli_recover_chain *c, int argc, char **argv, int *i) {
    const char *a = argv[*i];
    if (!strcmp(a, "--recover")) c->text = kf_cli_str(argc, argv, i);
    else if (!strcmp(a, "--recover-eval")) c->eval = kf_cli_str(argc, argv, i);
    else if (!strcmp(a, "--recover-train")) c->mode = kf_cli_str(argc, argv, i);
    else if (!strcmp(a, "--recover-tokens")) c->tokens = kf_cli_long(argc, argv, i, 1, (long)1 << 40);
    else if (!strcmp(a, "--recover-lr")) c->lr = kf_cli_double(argc, argv, i, 1e-8, 10);
    else if (!strcmp(a, "--recover-batch")) c->batch = (int)kf_cli_long(argc, argv, i, 1, 4096);
    else if (!strcmp(a, "--recover-ctx")) c->ctx = (int)kf_cli_long(argc, argv, i, 4, 1 << 16);
    else if (!strcmp(a, "--recover-max-memory")) c->max_memory = kf_cli_bytes(argc, argv, i);
    else return false;
    return true;
}

static bool parse_mode(const char *name, kf_train_mode *m) {
    if (!strcmp(name, "all")) *m = KF_TRAIN_ALL;
    else if (!strcmp(name, "ffn")) *m = KF_TRAIN_FFN;
    else if (!strcmp(name, "lora")) *m = KF_TRAIN_LORA;
    else if (!strcmp(name, "router")) *m = KF_TRAIN_ROUTER;
    else return false;
    return true;
}

void kf_cli_recover_chain_check(const char *cmd, const kf_cli_recover_chain *c) {
    kf_train_mode m;
    if (!parse_mode(c->mode, &m)) kf_cli_failf("%s: --recover-train must be all, ffn, lora or router, not '%s'", cmd, c->mode);
    if (!c->text && c->eval) kf_cli_failf("%s: --recover-eval needs --recover TRAIN.txt", cmd);
}

static void on_step(void *user, int64_t step, int64_t steps, double loss, double tps) {
    (void)steps;
    char extra[96];
    snprintf(extra, sizeof extra, "loss %.4f  %.0f tokens/s", loss, tps);
    kf_progress_update(user, step, extra);
}

void kf_cli_recover_chain_prepare(const char *cmd, kf_cli_recover_chain *c, const kf_tokenizer *tok) {
    c->ids = kf_cli_tokenize_file(tok, c->text, true, &c->n_ids);
    if (c->n_ids < (size_t)c->ctx + 1)
        kf_cli_failf("%s: %s: %zu tokens do not fill one window of %d", cmd, c->text, c->n_ids, c->ctx + 1);
    if (!c->eval) return;
    kf_error err = {0};
    int64_t n_shared = 0, n_windows = 0;
    c->eval_ids = kf_cli_tokenize_file(tok, c->eval, true, &c->n_eval);
    if (kf_train_overlap(c->ids, (int64_t)c->n_ids, c->eval_ids, (int64_t)c->n_eval, KF_OVERLAP_WINDOW, &n_shared,
                         &n_windows, &err) != KF_OK)
        kf_cli_fail(&err);
    if (n_shared > 0)
        kf_cli_failf("%s: %s overlaps the training text %s: %lld of its %lld windows of %d tokens occur there", cmd,
                     c->eval, c->text, (long long)n_shared, (long long)n_windows, KF_OVERLAP_WINDOW);
    if (c->n_eval / (size_t)c->ctx < (size_t)c->batch)
        kf_cli_failf("%s: %s: %zu tokens do not fill one batch of %d windows of %d", cmd, c->eval, c->n_eval, c->batch,
                     c->ctx);
}

cJSON *kf_cli_recover_chain_run(const char *cmd, kf_cli_recover_chain *c, kf_model *m, const char *teacher_path,
                                const kf_tokenizer *tok) {
    kf_train_opts to = {.lora_rank = 8, .seed = 1};
    parse_mode(c->mode, &to.mode);
    kf_model *teacher = kf_cli_load_model(teacher_path, NULL);
    if (m->pos == KF_POS_LEARNED && c->ctx > m->n_ctx_train)
        kf_cli_failf("%s: --recover-ctx %d exceeds the model's %d positions", cmd, c->ctx, m->n_ctx_train);
    kf_recover_opts ro = kf_recover_defaults();
    if (c->lr > 0) ro.lr = (float)c->lr; // else kfuse recover's default
    ro.bos_id = kf_tokenizer_bos(tok);
    ro.steps = (c->tokens + (int64_t)c->batch * c->ctx - 1) / ((int64_t)c->batch * c->ctx);
    if (c->eval) {
        ro.eval_ids = c->eval_ids;
        ro.n_eval_ids = (int64_t)c->n_eval;
        ro.eval_windows = 64;
    }
    kf_error err = {0};
    to.max_memory = c->max_memory ? c->max_memory : kf_cli_physical_memory() / 2;
    kf_train *t;
    if (kf_train_init(&t, m, c->batch, c->ctx, &to, &err) != KF_OK) kf_cli_fail(&err);
    kf_progress bar;
    kf_progress_init(&bar, "recover", "steps", ro.steps);
    kf_recover_result r;
    kf_status s = kf_recover_run(t, m, teacher, c->ids, (int64_t)c->n_ids, &ro, on_step, &bar, &r, &err);
    kf_progress_done(&bar);
    if (s != KF_OK) kf_cli_fail(&err);
    if (to.mode == KF_TRAIN_LORA && kf_train_lora_merge(t, &err) != KF_OK) kf_cli_fail(&err);

    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "teacher", teacher_path);
    cJSON_AddStringToObject(o, "train_text", c->text);
    cJSON_AddStringToObject(o, "train", c->mode);
    if (to.mode == KF_TRAIN_LORA) cJSON_AddNumberToObject(o, "lora_rank", to.lora_rank);
    cJSON_AddNumberToObject(o, "steps", (double)r.steps);
    cJSON_AddNumberToObject(o, "batch", c->batch);
    cJSON_AddNumberToObject(o, "ctx", c->ctx);
    cJSON_AddNumberToObject(o, "tokens", (double)r.tokens);
    cJSON_AddNumberToObject(o, "lr", ro.lr);
    cJSON_AddNumberToObject(o, "seconds", r.seconds);
    cJSON_AddNumberToObject(o, "loss_first", r.loss[0]);
    cJSON_AddNumberToObject(o, "loss_last", r.loss[r.steps - 1]);
    if (c->eval) {
        cJSON_AddStringToObject(o, "eval_text", c->eval);
        cJSON_AddNumberToObject(o, "eval_kl_before", r.evals[0].kl_mean);
        cJSON_AddNumberToObject(o, "eval_kl_after", r.evals[r.n_evals - 1].kl_mean);
    }
    fprintf(stderr, "%s: recovered %lld steps (%lld tokens, %.1f s), loss %.4f -> %.4f\n", cmd, (long long)r.steps,
            (long long)r.tokens, r.seconds, r.loss[0], r.loss[r.steps - 1]);
    kf_recover_result_free(&r);
    kf_train_free(t);
    free(c->ids);
    free(c->eval_ids);
    c->ids = c->eval_ids = NULL;
    kf_model_free(teacher);
    return o;
}
