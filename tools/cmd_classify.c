// kfuse classify DIR -f INPUT [--max-eval N] [--predictions FILE] [--compare MODEL --repeats N] [-t N] [--json]
// Runs an exported probe (`kfuse probe --export DIR`: DIR/model truncated
// after LayerSelector's last layer, DIR/classifier.json) on a labelled file
// in the task's format; prints accuracy. --compare MODEL also extracts the
// features with the full model, times both extractions (one warm-up, then
// --repeats alternating runs, median) and checks the classifier predicts the
// same on the full model's features (docs/probe-export.md). A classifier of
// a random-init probe (classifier.json model.random_init) re-initialises
// MODEL with the same seed first, so the comparison is with the probed model.
#define _GNU_SOURCE // mkdtemp
#include <cjson/cJSON.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "core/file.h"
#include "probe/classifier.h"
#include "probe/features.h"
#include "task/encode.h"
#include "task/task.h"

static int cmp_f64(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// Features of t from m into path, predictions into pred; the extraction's stats.
static kf_feat_stats run_once(const kf_model *m, const kf_task_tokens *t, const kf_classifier *c, const char *path,
                              int32_t *pred) {
    kf_error err = {0};
    kf_feat_opts fo = {.kind = c->features, .agg = c->agg, .f16 = c->f16, .batch_tokens = c->batch_tokens};
    kf_feat_stats st;
    if (kf_features_extract(m, t, &fo, path, &st, NULL, NULL, &err) != KF_OK) kf_cli_fail(&err);
    if (pred) {
        kf_features x;
        if (kf_features_open(&x, path, &err) != KF_OK) kf_cli_fail(&err);
        if (kf_classifier_predict(c, &x, pred, &err) != KF_OK) kf_cli_fail(&err);
        kf_features_close(&x);
    }
    return st;
}

int kf_cmd_classify(int argc, char **argv) {
    const char *dir = NULL, *input = NULL, *pred_path = NULL, *full_path = NULL;
    int64_t max_eval = 0;
    int repeats = 5;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-f")) input = kf_cli_str(argc, argv, &i);
        else if (!strcmp(argv[i], "--max-eval")) max_eval = kf_cli_long(argc, argv, &i, 0, 1L << 40);
        else if (!strcmp(argv[i], "--predictions")) pred_path = kf_cli_str(argc, argv, &i);
        else if (!strcmp(argv[i], "--compare")) full_path = kf_cli_str(argc, argv, &i);
        else if (!strcmp(argv[i], "--repeats")) repeats = (int)kf_cli_long(argc, argv, &i, 1, 1000);
        else if (!strcmp(argv[i], "-t")) omp_set_num_threads((int)kf_cli_long(argc, argv, &i, 1, 1024));
        else if (!strcmp(argv[i], "--json")) json = true;
        else if (argv[i][0] == '-') kf_cli_failf("classify: unknown option %s", argv[i]);
        else if (!dir) dir = argv[i];
        else kf_cli_failf("classify: unexpected argument %s", argv[i]);
    }
    if (!dir) kf_cli_failf("classify: DIR (from kfuse probe --export DIR) is required");
    if (!input) kf_cli_failf("classify: -f INPUT is required");
    char cpath[1100], mdir[1100];
    snprintf(cpath, sizeof cpath, "%s/classifier.json", dir);
    snprintf(mdir, sizeof mdir, "%s/model", dir);
    kf_error err = {0};
    kf_classifier c;
    if (kf_classifier_read(&c, cpath, &err) != KF_OK) kf_cli_fail(&err);
    kf_task_split sp;
    kf_status s;
    if (c.kind == KF_TASK_TOKEN) {
        int col = kf_conllu_column(c.task + (strncmp(c.task, "conllu:", 7) ? 0 : 7));
        if (col <= 0) kf_cli_failf("%s: task '%s' names no CoNLL-U label column", cpath, c.task);
        s = kf_task_read_conllu(&sp, input, col, &c.labels, false, max_eval, &err);
    } else {
        const char *lc = strncmp(c.task, "tsv:", 4) ? c.task : c.task + 4;
        s = kf_task_read_tsv(&sp, input, c.text_column, lc, &c.labels, false, max_eval, &err);
    }
    if (s != KF_OK) kf_cli_fail(&err);
    kf_tokenizer *tok;
    kf_model *m = kf_cli_load_model(mdir, &tok);
    if (m->n_layer != c.n_layer_kept)
        kf_cli_failf("%s: %d layers, %s expects %d", mdir, m->n_layer, cpath, c.n_layer_kept);
    kf_model *full = NULL;
    if (full_path) {
        full = kf_cli_load_model(full_path, NULL);
        if (full->n_layer != c.n_layer_full || full->n_embd != m->n_embd)
            kf_cli_failf("%s: %d layers of width %d, the probed model had %d of width %d", full_path, full->n_layer,
                         full->n_embd, c.n_layer_full, m->n_embd);
        // The probed model was MODEL re-initialised: the same seed gives the same weights.
        if (c.random_init && kf_model_randomize(full, c.init_seed, &err) != KF_OK) kf_cli_fail(&err);
    }
    kf_task_tokens tt;
    int max_len = m->n_ctx_train > 0 ? m->n_ctx_train : 1 << 20;
    if (kf_task_encode(&sp, tok, kf_tokenizer_bos(tok), max_len, &tt, &err) != KF_OK) kf_cli_fail(&err);
    const int64_t N = sp.n_items;
    int32_t *pred = malloc((size_t)(N > 0 ? N : 1) * sizeof *pred), *pred_full = NULL;
    if (!pred) kf_cli_failf("classify: out of memory");
    const char *tmpdir = getenv("TMPDIR");
    char work[1024], fpath[1100];
    snprintf(work, sizeof work, "%s/kfuse-classify-XXXXXX", tmpdir && *tmpdir ? tmpdir : "/tmp");
    if (!mkdtemp(work)) kf_cli_failf("%s: cannot create a temporary folder", work);
    snprintf(fpath, sizeof fpath, "%s/features.npy", work);

    kf_feat_stats st = run_once(m, &tt, &c, fpath, pred);
    double *t_cut = NULL, *t_full = NULL;
    int64_t same = 0;
    kf_feat_stats st_full = {0};
    if (full) {
        // Warm-up above (truncated) and here (full), then alternating timed runs.
        pred_full = malloc((size_t)(N > 0 ? N : 1) * sizeof *pred_full);
        t_cut = malloc((size_t)repeats * sizeof *t_cut);
        t_full = malloc((size_t)repeats * sizeof *t_full);
        if (!pred_full || !t_cut || !t_full) kf_cli_failf("classify: out of memory");
        st_full = run_once(full, &tt, &c, fpath, pred_full);
        for (int64_t i = 0; i < N; i++) same += pred_full[i] == pred[i];
        for (int r = 0; r < repeats; r++) {
            t_cut[r] = run_once(m, &tt, &c, fpath, NULL).seconds;
            t_full[r] = run_once(full, &tt, &c, fpath, NULL).seconds;
        }
        qsort(t_cut, (size_t)repeats, sizeof *t_cut, cmp_f64);
        qsort(t_full, (size_t)repeats, sizeof *t_full, cmp_f64);
    }
    unlink(fpath);
    rmdir(work);

    int64_t hit = 0;
    for (int64_t i = 0; i < N; i++) hit += pred[i] == sp.labels[i];
    const double acc = N > 0 ? (double)hit / (double)N : 0;
    if (pred_path) {
        char tmp[1100];
        FILE *f;
        if (kf_file_begin(pred_path, tmp, sizeof tmp, &f, &err) != KF_OK) kf_cli_fail(&err);
        bool ok = true;
        for (int64_t i = 0; i < N && ok; i++)
            ok = fprintf(f, "%s\t%s\t%s\n", sp.words[i], c.labels.names[sp.labels[i]], c.labels.names[pred[i]]) > 0;
        if (kf_file_commit(f, ok, tmp, pred_path, &err) != KF_OK) kf_cli_fail(&err);
    }
    const int64_t ntok = st.n_tokens;
    double med_cut = full ? t_cut[repeats / 2] : st.seconds, med_full = full ? t_full[repeats / 2] : 0;
    if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "classifier", cpath);
        cJSON_AddStringToObject(o, "input", input);
        cJSON_AddNumberToObject(o, "items", (double)N);
        cJSON_AddNumberToObject(o, "correct", (double)hit);
        cJSON_AddNumberToObject(o, "accuracy", acc);
        cJSON_AddNumberToObject(o, "probe_test_accuracy", c.probe_test_acc);
        cJSON_AddNumberToObject(o, "n_layer_kept", c.n_layer_kept);
        cJSON_AddNumberToObject(o, "n_layer_full", c.n_layer_full);
        cJSON_AddNumberToObject(o, "neurons", c.n_cols);
        cJSON_AddNumberToObject(o, "tokens", (double)ntok);
        cJSON_AddNumberToObject(o, "threads", omp_get_max_threads());
        if (full) {
            cJSON *b = cJSON_AddObjectToObject(o, "compare");
            cJSON_AddStringToObject(b, "full_model", full_path);
            if (c.random_init) cJSON_AddNumberToObject(b, "full_random_init", (double)c.init_seed);
            else cJSON_AddNullToObject(b, "full_random_init");
            cJSON_AddNumberToObject(b, "repeats", repeats);
            cJSON_AddNumberToObject(b, "truncated_seconds_median", med_cut);
            cJSON_AddNumberToObject(b, "full_seconds_median", med_full);
            cJSON_AddNumberToObject(b, "truncated_tokens_per_s", (double)ntok / med_cut);
            cJSON_AddNumberToObject(b, "full_tokens_per_s", (double)st_full.n_tokens / med_full);
            cJSON_AddNumberToObject(b, "truncated_rows_per_s", (double)N / med_cut);
            cJSON_AddNumberToObject(b, "full_rows_per_s", (double)N / med_full);
            cJSON_AddNumberToObject(b, "speedup", med_full / med_cut);
            cJSON_AddNumberToObject(b, "same_predictions", (double)same);
        }
        kf_cli_print_json(o, true);
    } else {
        printf("accuracy %.6f (%lld of %lld items; the probe's test accuracy %.6f)\n", acc, (long long)hit,
               (long long)N, c.probe_test_acc);
        if (full) {
            if (c.random_init) printf("full model: %s re-initialised with seed %llu (the probed model)\n", full_path,
                                      (unsigned long long)c.init_seed);
            printf("feature extraction, median of %d: truncated (%d layers) %.4f s = %.0f tokens/s, full (%d layers) "
                   "%.4f s = %.0f tokens/s, speedup %.2fx\n",
                   repeats, c.n_layer_kept, med_cut, (double)ntok / med_cut, c.n_layer_full, med_full,
                   (double)ntok / med_full, med_full / med_cut);
            printf("same predictions on the full model's features: %lld of %lld\n", (long long)same, (long long)N);
        }
    }
    free(pred), free(pred_full), free(t_cut), free(t_full);
    kf_task_tokens_free(&tt);
    kf_task_split_free(&sp);
    kf_classifier_free(&c);
    kf_tokenizer_free(tok);
    kf_model_free(m);
    kf_model_free(full);
    return 0;
}
