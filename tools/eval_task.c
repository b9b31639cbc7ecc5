#include "eval_task.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/file.h"
#include "core/progress.h"
#include "eval/zeroshot.h"

// Rows per forward call: wide enough for sgemm, small enough for the logits
// buffer (rows x vocabulary floats).
#define BLIMP_ROWS 1024

static void on_batch(void *user, int64_t done, int64_t total) {
    (void)total;
    kf_progress_update(user, done, NULL);
}

void kf_cli_blimp_run(kf_cli_blimp *b, const char *path, int max_pairs, const kf_tokenizer *tok,
                      const kf_model *const *cols, const char *const *names, int n_cols) {
    kf_error err = {0};
    memset(b, 0, sizeof *b);
    b->path = path;
    b->n_cols = n_cols;
    if (kf_blimp_load(&b->set, path, max_pairs, &err) != KF_OK) kf_cli_fail(&err);
    if (kf_blimp_tokenize(&b->set, tok, &b->ids, &b->off, &err) != KF_OK) kf_cli_fail(&err);
    b->lp = calloc((size_t)n_cols, sizeof *b->lp);
    b->tally = calloc((size_t)n_cols, sizeof *b->tally);
    if (!b->lp || !b->tally) kf_cli_failf("eval: out of memory");
    const int n = 2 * b->set.n_pairs;
    for (int k = 0; k < n_cols; k++) {
        if (!(b->lp[k] = malloc(sizeof *b->lp[k] * (size_t)n))) kf_cli_failf("eval: out of memory");
        kf_progress bar;
        char label[64];
        snprintf(label, sizeof label, "blimp %d/%d", k + 1, n_cols);
        kf_progress_init(&bar, label, "sentences", n);
        kf_status s = kf_eval_sentence_logprobs(cols[k], b->ids, b->off, n, BLIMP_ROWS, b->lp[k], on_batch, &bar, &err);
        kf_progress_done(&bar);
        if (s != KF_OK) kf_cli_failf("eval: %s: %s", names[k], err.msg);
        if (kf_blimp_tally_init(&b->tally[k], &b->set, &err) != KF_OK) kf_cli_fail(&err);
        kf_blimp_count(&b->tally[k], &b->set, b->lp[k]);
    }
}

static double acc(int correct, int n) { return n ? (double)correct / n : 0; }

void kf_cli_blimp_print(const kf_cli_blimp *b, const char *const *names) {
    const kf_blimp_set *s = &b->set;
    printf("BLiMP on %s: %d paradigms, %d pairs; accuracy = share of pairs whose good sentence scores higher\n",
           b->path, s->n_paradigms, s->n_pairs);
    for (int k = 0; k < b->n_cols; k++) printf("  [%d] %s\n", k + 1, names[k]);
    printf("%-52s %6s", "", "pairs");
    for (int k = 0; k < b->n_cols; k++) printf("  %6s[%d]", "", k + 1);
    printf("\n%-52s %6d", "overall", s->n_pairs);
    for (int k = 0; k < b->n_cols; k++) printf("  %9.4f", acc(b->tally[k].correct, s->n_pairs));
    printf("\n");
    for (int f = 0; f < s->n_fields; f++) {
        char name[64];
        snprintf(name, sizeof name, "field %s", s->fields[f]);
        printf("%-52s %6d", name, b->tally[0].field_pairs[f]);
        for (int k = 0; k < b->n_cols; k++) printf("  %9.4f", acc(b->tally[k].field_correct[f], b->tally[k].field_pairs[f]));
        printf("\n");
    }
    for (int p = 0; p < s->n_paradigms; p++) {
        printf("  %-50s %6d", s->paradigms[p].uid, s->paradigms[p].n_pairs);
        for (int k = 0; k < b->n_cols; k++) printf("  %9.4f", acc(b->tally[k].paradigm_correct[p], s->paradigms[p].n_pairs));
        printf("\n");
    }
}

cJSON *kf_cli_blimp_json(const kf_cli_blimp *b, int col) {
    const kf_blimp_set *s = &b->set;
    const kf_blimp_tally *t = &b->tally[col];
    cJSON *o = cJSON_CreateObject(), *fields = cJSON_CreateArray(), *pars = cJSON_CreateArray();
    cJSON_AddStringToObject(o, "path", b->path);
    cJSON_AddNumberToObject(o, "n_pairs", s->n_pairs);
    cJSON_AddNumberToObject(o, "correct", t->correct);
    cJSON_AddNumberToObject(o, "accuracy", acc(t->correct, s->n_pairs));
    for (int f = 0; f < s->n_fields; f++) {
        cJSON *x = cJSON_CreateObject();
        cJSON_AddStringToObject(x, "field", s->fields[f]);
        cJSON_AddNumberToObject(x, "n_pairs", t->field_pairs[f]);
        cJSON_AddNumberToObject(x, "correct", t->field_correct[f]);
        cJSON_AddNumberToObject(x, "accuracy", acc(t->field_correct[f], t->field_pairs[f]));
        cJSON_AddItemToArray(fields, x);
    }
    for (int p = 0; p < s->n_paradigms; p++) {
        const kf_blimp_paradigm *P = &s->paradigms[p];
        cJSON *x = cJSON_CreateObject();
        cJSON_AddStringToObject(x, "uid", P->uid);
        cJSON_AddStringToObject(x, "field", s->fields[P->field]);
        cJSON_AddStringToObject(x, "linguistics_term", P->term);
        cJSON_AddNumberToObject(x, "n_pairs", P->n_pairs);
        cJSON_AddNumberToObject(x, "correct", t->paradigm_correct[p]);
        cJSON_AddNumberToObject(x, "accuracy", acc(t->paradigm_correct[p], P->n_pairs));
        cJSON_AddItemToArray(pars, x);
    }
    cJSON_AddItemToObject(o, "fields", fields);
    cJSON_AddItemToObject(o, "paradigms", pars);
    return o;
}

void kf_cli_blimp_write_scores(const kf_cli_blimp *b, const char *file, const char *const *names) {
    char tmp[4096];
    FILE *f;
    kf_error err = {0};
    if (kf_file_begin(file, tmp, sizeof tmp, &f, &err) != KF_OK) kf_cli_fail(&err);
    bool ok = fprintf(f, "# columns: uid, file:line, then per model the log-probability of the good and of the bad sentence\n") > 0;
    for (int k = 0; k < b->n_cols && ok; k++) ok = fprintf(f, "# [%d] %s\n", k + 1, names[k]) > 0;
    ok = ok && fprintf(f, "uid\tsource") > 0;
    for (int k = 0; k < b->n_cols && ok; k++) ok = fprintf(f, "\tgood_%d\tbad_%d", k + 1, k + 1) > 0;
    ok = ok && fprintf(f, "\n") > 0;
    const kf_blimp_set *s = &b->set;
    for (int i = 0; i < s->n_pairs && ok; i++) {
        const kf_blimp_pair *p = &s->pairs[i];
        ok = fprintf(f, "%s\t%s:%d", s->paradigms[p->paradigm].uid, s->files[p->file], p->line) > 0;
        for (int k = 0; k < b->n_cols && ok; k++)
            ok = fprintf(f, "\t%.17g\t%.17g", b->lp[k][2 * i], b->lp[k][2 * i + 1]) > 0;
        ok = ok && fprintf(f, "\n") > 0;
    }
    if (kf_file_commit(f, ok, tmp, file, &err) != KF_OK) kf_cli_fail(&err);
}

void kf_cli_blimp_free(kf_cli_blimp *b) {
    for (int k = 0; k < b->n_cols; k++) {
        if (b->lp) free(b->lp[k]);
        if (b->tally) kf_blimp_tally_free(&b->tally[k]);
    }
    free(b->lp);
    free(b->tally);
    free(b->ids);
    free(b->off);
    kf_blimp_free(&b->set);
}
