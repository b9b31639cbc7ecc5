// kfuse recover STUDENT --teacher ORIGINAL -f TRAIN.txt [--tokens N | --steps S] [--lr 1e-3 --batch 8 --ctx 256
//   --train all|ffn|lora --lora-rank 8 --lora-alpha A --warmup 0.05 --min-lr 0.1 --clip 1 --wd 0 --kl 1 --ce 0
//   --seed 1 --eval FILE --eval-every K --eval-windows W --adapter-out DIR --checkpoint DIR --checkpoint-every S
//   --resume --max-memory SIZE --json] -o OUT [--format hf|gguf]
// Distils the original into the (compressed) student on the training text
// (src/train/recover.h) and saves the result through kf_model_save; with
// --train lora the adapters are also written in PEFT's layout (default
// OUT-adapter) and merged into the saved weights. An --eval text that shares
// a window of 64 tokens with the training text is refused. --checkpoint DIR
// saves the training state every S steps (default: a tenth of the run);
// --resume continues the same command from DIR's newest checkpoint.
// --max-memory caps the training activations (default half the RAM): above
// it they are recomputed layer by layer, to the same result.
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/file.h"
#include "core/progress.h"
#include "io/save.h"
#include "train/checkpoint.h"
#include "train/overlap.h"
#include "train/recover.h"

#define KF_OVERLAP_WINDOW 64

static void on_step(void *user, int64_t step, int64_t steps, double loss, double tps) {
    char extra[96];
    snprintf(extra, sizeof extra, "loss %.4f  %.0f tokens/s", loss, tps);
    kf_progress_update(user, step, extra);
}

static cJSON *curve(const double *x, int64_t n) {
    cJSON *a = cJSON_CreateArray();
    for (int64_t i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(x[i]));
    return a;
}

int kf_cmd_recover(int argc, char **argv) {
    const char *path = NULL, *teacher_path = NULL, *text_path = NULL, *out = NULL, *format = "hf",
               *mode_name = "all", *eval_path = NULL, *adapter_out = NULL;
    int64_t tokens = 1 << 20, steps = 0;
    int batch = 8, ctx = 256, eval_windows = 64;
    bool json = false;
    kf_recover_opts ro = kf_recover_defaults();
    kf_train_opts to = {.mode = KF_TRAIN_ALL, .lora_rank = 8};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--teacher")) teacher_path = kf_cli_str(argc, argv, &i);
        else if (!strcmp(a, "-f")) text_path = kf_cli_str(argc, argv, &i);
        else if (!strcmp(a, "-o")) out = kf_cli_str(argc, argv, &i);
        else if (!strcmp(a, "--format")) format = kf_cli_str(argc, argv, &i);
        else if (!strcmp(a, "--tokens")) tokens = kf_cli_long(argc, argv, &i, 1, (long)1 << 40);
        else if (!strcmp(a, "--steps")) steps = kf_cli_long(argc, argv, &i, 1, (long)1 << 30);
        else if (!strcmp(a, "--lr")) ro.lr = (float)kf_cli_double(argc, argv, &i, 1e-8, 10);
        else if (!strcmp(a, "--batch")) batch = (int)kf_cli_long(argc, argv, &i, 1, 4096);
        else if (!strcmp(a, "--ctx") || !strcmp(a, "-c")) ctx = (int)kf_cli_long(argc, argv, &i, 4, 1 << 16);
        else if (!strcmp(a, "--train")) mode_name = kf_cli_str(argc, argv, &i);
        else if (!strcmp(a, "--lora-rank")) to.lora_rank = (int)kf_cli_long(argc, argv, &i, 1, 4096);
        else if (!strcmp(a, "--lora-alpha")) to.lora_alpha = (float)kf_cli_double(argc, argv, &i, 1e-6, 1e6);
        else if (!strcmp(a, "--warmup")) ro.warmup_share = (float)kf_cli_double(argc, argv, &i, 0, 1);
        else if (!strcmp(a, "--min-lr")) ro.min_lr_ratio = (float)kf_cli_double(argc, argv, &i, 0, 1);
        else if (!strcmp(a, "--clip")) ro.clip = (float)kf_cli_double(argc, argv, &i, 0, 1e9);
        else if (!strcmp(a, "--wd")) ro.adamw.weight_decay = (float)kf_cli_double(argc, argv, &i, 0, 10);
        else if (!strcmp(a, "--kl")) ro.kl_weight = (float)kf_cli_double(argc, argv, &i, 0, 1e6);
        else if (!strcmp(a, "--ce")) ro.ce_weight = (float)kf_cli_double(argc, argv, &i, 0, 1e6);
        else if (!strcmp(a, "--seed")) ro.seed = (uint64_t)kf_cli_long(argc, argv, &i, 0, (long)1 << 62);
        else if (!strcmp(a, "--eval")) eval_path = kf_cli_str(argc, argv, &i);
        else if (!strcmp(a, "--eval-every")) ro.eval_every = kf_cli_long(argc, argv, &i, 1, (long)1 << 30);
        else if (!strcmp(a, "--eval-windows")) eval_windows = (int)kf_cli_long(argc, argv, &i, 1, 1 << 24);
        else if (!strcmp(a, "--adapter-out")) adapter_out = kf_cli_str(argc, argv, &i);
        else if (!strcmp(a, "--checkpoint")) ro.checkpoint_dir = kf_cli_str(argc, argv, &i);
        else if (!strcmp(a, "--checkpoint-every")) ro.checkpoint_every = kf_cli_long(argc, argv, &i, 1, (long)1 << 30);
        else if (!strcmp(a, "--resume")) ro.resume = true;
        else if (!strcmp(a, "--max-memory")) to.max_memory = kf_cli_bytes(argc, argv, &i);
        else if (!strcmp(a, "--json")) json = true;
        else if (a[0] == '-') kf_cli_failf("recover: unknown option %s", a);
        else if (!path) path = a;
        else kf_cli_failf("recover: unexpected argument %s", a);
    }
    if (!path) kf_cli_failf("recover: STUDENT is required");
    if (!teacher_path) kf_cli_failf("recover: --teacher ORIGINAL is required");
    if (!text_path) kf_cli_failf("recover: -f TRAIN.txt is required");
    if (!out) kf_cli_failf("recover: -o OUT is required");
    if (!strcmp(mode_name, "all")) to.mode = KF_TRAIN_ALL;
    else if (!strcmp(mode_name, "ffn")) to.mode = KF_TRAIN_FFN;
    else if (!strcmp(mode_name, "lora")) to.mode = KF_TRAIN_LORA;
    else if (!strcmp(mode_name, "router")) to.mode = KF_TRAIN_ROUTER;
    else kf_cli_failf("recover: --train must be all, ffn, lora or router, not '%s'", mode_name);
    if (ro.min_lr_ratio > 1) kf_cli_failf("recover: --min-lr is a share of --lr in [0, 1]");
    kf_format fmt;
    if (!kf_format_parse(format, &fmt) || fmt == KF_FORMAT_LLAMA2C)
        kf_cli_failf("recover: --format must be hf or gguf, not '%s'", format);
    char adapter_default[1100];
    if (to.mode == KF_TRAIN_LORA && !adapter_out) {
        if ((size_t)snprintf(adapter_default, sizeof adapter_default, "%s-adapter", out) >= sizeof adapter_default)
            kf_cli_failf("recover: %s: path too long", out);
        adapter_out = adapter_default;
    }
    ro.seed = ro.seed ? ro.seed : 1;
    to.seed = ro.seed;

    kf_tokenizer *tok = NULL;
    kf_model *m = kf_cli_load_model(path, &tok);
    kf_model *teacher = kf_cli_load_model(teacher_path, NULL);
    if (teacher->n_vocab != m->n_vocab)
        kf_cli_failf("recover: vocabularies differ: %s has %d entries, %s has %d", path, m->n_vocab, teacher_path,
                     teacher->n_vocab);
    if (m->pos == KF_POS_LEARNED && ctx > m->n_ctx_train)
        kf_cli_failf("recover: --ctx %d exceeds %s's %d positions", ctx, path, m->n_ctx_train);
    size_t n_ids, n_eval = 0;
    int32_t *ids = kf_cli_tokenize_file(tok, text_path, true, &n_ids), *eval_ids = NULL;
    if (n_ids < (size_t)ctx + 1)
        kf_cli_failf("recover: %s: %zu tokens do not fill one window of %d", text_path, n_ids, ctx + 1);
    kf_error err = {0};
    int64_t n_shared = 0, n_windows = 0;
    if (eval_path) {
        eval_ids = kf_cli_tokenize_file(tok, eval_path, true, &n_eval);
        if (kf_train_overlap(ids, (int64_t)n_ids, eval_ids, (int64_t)n_eval, KF_OVERLAP_WINDOW, &n_shared,
                             &n_windows, &err) != KF_OK)
            kf_cli_fail(&err);
        if (n_shared > 0)
            kf_cli_failf("recover: %s overlaps the training text %s: %lld of its %lld windows of %d tokens occur there",
                         eval_path, text_path, (long long)n_shared, (long long)n_windows, KF_OVERLAP_WINDOW);
        if (n_eval / (size_t)ctx < (size_t)batch)
            kf_cli_failf("recover: %s: %zu tokens do not fill one batch of %d windows of %d", eval_path, n_eval, batch,
                         ctx);
        ro.eval_ids = eval_ids;
        ro.n_eval_ids = (int64_t)n_eval;
        ro.eval_windows = eval_windows;
    }
    ro.bos_id = kf_tokenizer_bos(tok);
    ro.steps = steps ? steps : (tokens + (int64_t)batch * ctx - 1) / ((int64_t)batch * ctx);
    int64_t at = 0;
    if (ro.checkpoint_dir) {
        if (kf_ckpt_latest(ro.checkpoint_dir, &at, &err) != KF_OK) kf_cli_fail(&err);
        if (at > 0 && !ro.resume)
            kf_cli_failf("recover: %s holds a checkpoint at step %lld; add --resume to continue it, or choose another "
                         "folder", ro.checkpoint_dir, (long long)at);
        if (ro.resume && at == 0) kf_cli_failf("recover: --resume: %s holds no checkpoint", ro.checkpoint_dir);
        if (ro.resume) fprintf(stderr, "recover: resuming %s at step %lld of %lld\n", ro.checkpoint_dir, (long long)at,
                               (long long)ro.steps);
        if (!ro.checkpoint_every) ro.checkpoint_every = ro.steps >= 10 ? ro.steps / 10 : 1;
    } else if (ro.resume) {
        kf_cli_failf("recover: --resume needs --checkpoint DIR");
    }
    const int64_t params0 = kf_model_n_params(m);

    if (!to.max_memory) to.max_memory = kf_cli_physical_memory() / 2;
    kf_train *t;
    if (kf_train_init(&t, m, batch, ctx, &to, &err) != KF_OK) kf_cli_fail(&err);
    if (kf_train_recomputes(t))
        fprintf(stderr, "recover: activations of %d x %d tokens above --max-memory %.0f MiB: recomputed layer by "
                        "layer in the backward (workspace %.1f MiB)\n",
                batch, ctx, (double)to.max_memory / 1048576.0, (double)kf_train_workspace_bytes(t) / 1048576.0);
    int n_params;
    kf_param *ps = kf_train_params(t, &n_params);
    int64_t n_trained = 0;
    for (int i = 0; i < n_params; i++) n_trained += ps[i].n;
    kf_progress bar;
    kf_progress_init(&bar, "recover", "steps", ro.steps);
    kf_recover_result r;
    kf_status s = kf_recover_run(t, m, teacher, ids, (int64_t)n_ids, &ro, on_step, &bar, &r, &err);
    kf_progress_done(&bar);
    if (s != KF_OK) kf_cli_fail(&err);
    if (to.mode == KF_TRAIN_LORA) {
        if (kf_train_lora_save_peft(t, adapter_out, teacher_path, &err) != KF_OK) kf_cli_fail(&err);
        if (kf_train_lora_merge(t, &err) != KF_OK) kf_cli_fail(&err);
    }
    kf_save_opts so = {.format = fmt, .tok = tok, .tokenizer_dir = kf_dir_exists(path) ? path : NULL};
    kf_cli_save_model("recover", m, out, &so);

    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "student", path);
    cJSON_AddStringToObject(o, "teacher", teacher_path);
    cJSON_AddStringToObject(o, "train_text", text_path);
    cJSON_AddNumberToObject(o, "train_text_tokens", (double)n_ids);
    cJSON_AddStringToObject(o, "train", mode_name);
    if (to.mode == KF_TRAIN_LORA) {
        cJSON_AddNumberToObject(o, "lora_rank", to.lora_rank);
        cJSON_AddNumberToObject(o, "lora_alpha", to.lora_alpha > 0 ? to.lora_alpha : to.lora_rank);
        cJSON_AddStringToObject(o, "adapter", adapter_out);
    }
    cJSON_AddNumberToObject(o, "params", (double)params0);
    cJSON_AddNumberToObject(o, "params_trained", (double)n_trained);
    cJSON_AddNumberToObject(o, "steps", (double)r.steps);
    cJSON_AddNumberToObject(o, "batch", batch);
    cJSON_AddNumberToObject(o, "ctx", ctx);
    cJSON_AddNumberToObject(o, "tokens", (double)r.tokens);
    cJSON_AddNumberToObject(o, "lr", ro.lr);
    cJSON_AddNumberToObject(o, "min_lr_ratio", ro.min_lr_ratio);
    cJSON_AddNumberToObject(o, "warmup_share", ro.warmup_share);
    cJSON_AddNumberToObject(o, "clip", ro.clip);
    cJSON_AddNumberToObject(o, "weight_decay", ro.adamw.weight_decay);
    cJSON_AddNumberToObject(o, "kl_weight", ro.kl_weight);
    cJSON_AddNumberToObject(o, "ce_weight", ro.ce_weight);
    cJSON_AddNumberToObject(o, "seed", (double)ro.seed);
    cJSON_AddNumberToObject(o, "max_memory", (double)to.max_memory);
    cJSON_AddNumberToObject(o, "workspace_bytes", (double)kf_train_workspace_bytes(t));
    cJSON_AddBoolToObject(o, "recompute", kf_train_recomputes(t));
    cJSON_AddNumberToObject(o, "seconds", r.seconds);
    cJSON_AddNumberToObject(o, "tokens_per_s", r.seconds > 0 ? r.tokens / r.seconds : 0);
    cJSON *tm = cJSON_CreateObject();
    cJSON_AddNumberToObject(tm, "teacher", r.t_teacher);
    cJSON_AddNumberToObject(tm, "forward", r.t_forward);
    cJSON_AddNumberToObject(tm, "loss", r.t_loss);
    cJSON_AddNumberToObject(tm, "backward", r.t_backward);
    cJSON_AddNumberToObject(tm, "update", r.t_update);
    cJSON_AddItemToObject(o, "time_s", tm);
    cJSON_AddItemToObject(o, "loss", curve(r.loss, r.steps));
    cJSON_AddItemToObject(o, "kl", curve(r.kl, r.steps));
    cJSON_AddItemToObject(o, "ce", curve(r.ce, r.steps));
    cJSON_AddItemToObject(o, "grad_norm", curve(r.grad_norm, r.steps));
    cJSON_AddItemToObject(o, "lr_schedule", curve(r.lr, r.steps));
    if (eval_path) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "text", eval_path);
        cJSON_AddNumberToObject(e, "windows_checked_for_overlap", (double)n_windows);
        cJSON_AddNumberToObject(e, "overlap_window", KF_OVERLAP_WINDOW);
        cJSON *pts = cJSON_CreateArray();
        for (int i = 0; i < r.n_evals; i++) {
            cJSON *p = cJSON_CreateObject();
            cJSON_AddNumberToObject(p, "step", (double)r.evals[i].step);
            cJSON_AddNumberToObject(p, "tokens", (double)r.evals[i].step * batch * ctx);
            cJSON_AddNumberToObject(p, "kl_mean", r.evals[i].kl_mean);
            cJSON_AddNumberToObject(p, "n_scored", (double)r.evals[i].n_scored);
            cJSON_AddItemToArray(pts, p);
        }
        cJSON_AddItemToObject(e, "curve", pts);
        cJSON_AddNumberToObject(e, "kl_before", r.evals[0].kl_mean);
        cJSON_AddNumberToObject(e, "kl_after", r.evals[r.n_evals - 1].kl_mean);
        cJSON_AddItemToObject(o, "eval", e);
    }
    if (ro.checkpoint_dir) {
        cJSON_AddStringToObject(o, "checkpoint", ro.checkpoint_dir);
        cJSON_AddNumberToObject(o, "checkpoint_every", (double)ro.checkpoint_every);
        cJSON_AddNumberToObject(o, "resumed_at_step", (double)at);
    }
    cJSON_AddStringToObject(o, "output", out);
    cJSON_AddStringToObject(o, "format", format);
    if (!json)
        fprintf(stderr, "recover: %lld steps, %lld tokens in %.1f s (%.0f tokens/s), loss %.4f -> %.4f%s; wrote %s\n",
                (long long)r.steps, (long long)r.tokens, r.seconds, r.seconds > 0 ? r.tokens / r.seconds : 0,
                r.loss[0], r.loss[r.steps - 1], eval_path ? " (held-out KL in the summary)" : "", out);
    kf_cli_print_json(o, json);
    kf_recover_result_free(&r);
    kf_train_free(t);
    free(ids);
    free(eval_ids);
    kf_tokenizer_free(tok);
    kf_model_free(m);
    kf_model_free(teacher);
    return 0;
}
