// Minimal pairs in BLiMP's JSONL (Warstadt et al. 2020; docs/formats.md#blimp-minimal-pairs-jsonl):
// one JSON object per line with the strings sentence_good, sentence_bad,
// field, linguistics_term and UID (the paradigm); other keys are ignored.
// A folder is read as every *.jsonl in it, in name order.
//
// The pairs are scored elsewhere (eval/zeroshot.h): this module reads them,
// tokenizes them with BOS first, and turns per-sentence log-probabilities
// into accuracies per paradigm, per field and overall.
#ifndef KF_TASK_BLIMP_H
#define KF_TASK_BLIMP_H

#include <stdint.h>

#include "core/status.h"
#include "tokenizer/tokenizer.h"

typedef struct {
    char *uid, *term; // UID and linguistics_term as in the file
    int field;        // index into kf_blimp_set.fields
    int n_pairs;
} kf_blimp_paradigm;

typedef struct {
    char *good, *bad; // NUL-terminated UTF-8, neither empty
    int paradigm;     // index into kf_blimp_set.paradigms
    int file, line;   // index into kf_blimp_set.files, 1-based line: for messages
} kf_blimp_pair;

typedef struct {
    kf_blimp_pair *pairs;
    int n_pairs;
    kf_blimp_paradigm *paradigms; // in order of first appearance
    int n_paradigms;
    char **fields;                // distinct field values, in order of first appearance
    int n_fields;
    char **files;                 // the paths read
    int n_files;
} kf_blimp_set;

// Reads a .jsonl file, or every *.jsonl of a folder, keeping the first
// max_per_paradigm pairs of each UID (0: all). Bad input (a line that is not
// a JSON object, a missing or empty string, invalid UTF-8, a UID seen with
// two fields) is one error naming the file and line; *set is then empty.
kf_status kf_blimp_load(kf_blimp_set *set, const char *path, int max_per_paradigm, kf_error *err);
void kf_blimp_free(kf_blimp_set *set);

// Token ids of the 2 n_pairs sentences, BOS first: sentence 2p is pair p's
// good one, 2p+1 its bad one, at ids[off[s] .. off[s+1]). *ids and *off are
// malloc'd. Fails when the tokenizer has no BOS.
kf_status kf_blimp_tokenize(const kf_blimp_set *set, const kf_tokenizer *tok, int32_t **ids, int64_t **off,
                            kf_error *err);

// Correct pairs (log p(good) > log p(bad), strictly) per paradigm, per field
// and overall, from lp[2p] = log p(good), lp[2p+1] = log p(bad).
typedef struct {
    int *paradigm_correct; // n_paradigms
    int *field_correct;    // n_fields
    int *field_pairs;      // n_fields
    int correct, n_pairs;
} kf_blimp_tally;

kf_status kf_blimp_tally_init(kf_blimp_tally *t, const kf_blimp_set *set, kf_error *err);
void kf_blimp_tally_free(kf_blimp_tally *t);
void kf_blimp_count(kf_blimp_tally *t, const kf_blimp_set *set, const double *lp);

#endif
