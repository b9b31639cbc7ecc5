// kfuse eval --task blimp=PATH: minimal pairs scored for every model of the
// eval and its reference (columns 0 .. n-1 the models, n the reference when
// there is one), rendered as text, JSON and a per-pair score file.
#ifndef KF_TOOLS_EVAL_TASK_H
#define KF_TOOLS_EVAL_TASK_H

#include <stdint.h>

#include "model/model.h"
#include "task/blimp.h"
#include "tokenizer/tokenizer.h"

typedef struct {
    const char *path;
    kf_blimp_set set;
    int32_t *ids;   // sentences, BOS first (task/blimp.h)
    int64_t *off;
    int n_cols;
    double **lp;    // per column: 2 n_pairs sentence log-probabilities
    kf_blimp_tally *tally;
} kf_cli_blimp;

// Reads PATH (first max_pairs of each paradigm, 0: all), tokenizes, scores
// every column with one batched pass per model; fails with one line on error.
void kf_cli_blimp_run(kf_cli_blimp *b, const char *path, int max_pairs, const kf_tokenizer *tok,
                      const kf_model *const *cols, const char *const *names, int n_cols);
// The accuracy table, one column per model (names[k] listed above it).
void kf_cli_blimp_print(const kf_cli_blimp *b, const char *const *names);
struct cJSON *kf_cli_blimp_json(const kf_cli_blimp *b, int col);
// TSV, one row per pair: uid, file:line, then good and bad log-probability per column.
void kf_cli_blimp_write_scores(const kf_cli_blimp *b, const char *file, const char *const *names);
void kf_cli_blimp_free(kf_cli_blimp *b);

#endif
