// Task datasets read from files, for probing (docs/tasks.md):
// - token labelling from CoNLL-U: one label per word, from a chosen column
//   (UPOS, XPOS, DEPREL, ...); multiword-token ranges (3-4) and empty nodes
//   (8.1) are skipped;
// - sentence classification from TSV: a header row names the columns, one
//   text column and one label column are used.
// A split (train, dev, test) is read on its own; the label set comes from
// the training split, and a dev/test label outside it is an error naming the
// file and line. Errors name the file, the line and the problem; nothing is
// half-read (on failure the split is left empty).
#ifndef KF_TASK_TASK_H
#define KF_TASK_TASK_H

#include <stdbool.h>
#include <stdint.h>

#include "core/status.h"

typedef enum {
    KF_TASK_TOKEN = 0, // a label per word (CoNLL-U)
    KF_TASK_SENTENCE,  // a label per sentence (TSV)
} kf_task_kind;

// The labels of a task, numbered in order of first appearance in training.
typedef struct {
    int n;
    char **names; // (n) NUL-terminated
} kf_label_set;

// One split. Token task: sentence s has words [sent_off[s], sent_off[s+1])
// of words/labels. Sentence task: item s is sentence s (sent_off[s] = s),
// words[s] its whole text.
typedef struct {
    kf_task_kind kind;
    int n_sent;
    int64_t n_items;   // words (token task) or sentences
    int64_t *sent_off; // (n_sent + 1)
    int64_t *sent_line; // (n_sent) line of the sentence's first item in the file (1-based)
    char **words;      // (n_items) word forms, or sentence texts
    int32_t *labels;   // (n_items) index into the task's label set
    char path[1024];
} kf_task_split;

// Column of a CoNLL-U file by name (ID FORM LEMMA UPOS XPOS FEATS HEAD
// DEPREL DEPS MISC, case-insensitive) or -1.
int kf_conllu_column(const char *name);

// Reads a CoNLL-U file, labels from column `col` (kf_conllu_column). With
// grow true (training split) unseen labels are added to labels; otherwise an
// unseen label is an error. max_items > 0 keeps the first whole sentences
// whose words fit within max_items (Dalvi et al. took the first 150,000
// training tokens). Errors: a word line without 10 tab-separated columns,
// an empty sentence, an empty or '_' label, text that is not UTF-8.
kf_status kf_task_read_conllu(kf_task_split *out, const char *path, int col, kf_label_set *labels, bool grow,
                              int64_t max_items, kf_error *err);

// Reads a TSV file with a header row; text_col and label_col name header
// columns. Every row must have the header's number of columns; an empty text
// or label is an error. grow and max_items as above (max_items counts rows).
kf_status kf_task_read_tsv(kf_task_split *out, const char *path, const char *text_col, const char *label_col,
                           kf_label_set *labels, bool grow, int64_t max_items, kf_error *err);

void kf_task_split_free(kf_task_split *s);
void kf_label_set_free(kf_label_set *l);

// Index of name in the set or -1.
int kf_label_set_find(const kf_label_set *l, const char *name);

// Hewitt & Liang (2019) control task: every word type gets a fixed random
// label drawn from the empirical label distribution of the training split
// (counts (n_labels)), by a hash of the word and the seed, so the same type
// always gets the same label in every split.
int32_t kf_task_control_label(const char *word, const int64_t *counts, int n_labels, uint64_t seed);

#endif
