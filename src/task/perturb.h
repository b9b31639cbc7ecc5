// Seeded character noise for robustness evaluation (`kfuse eval --perturb`):
// typos made of four edits on code points, never on bytes, so valid UTF-8 in
// gives valid UTF-8 out. Each eligible code point (anything but whitespace
// and control characters) that a swap has not already taken is edited with
// probability rate, the edit drawn uniformly from
//   swap       with the next code point (when that one is eligible; else
//              one of the other three is drawn)
//   drop       the code point is removed
//   insert     a random letter a-z (A-Z after an upper-case ASCII letter)
//              follows it
//   substitute it becomes a different random letter, case as for insert
// The stream is kf_rng seeded with seed: the same text, rate and seed give
// the same output on every machine.
#ifndef KF_TASK_PERTURB_H
#define KF_TASK_PERTURB_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

typedef struct {
    double rate;   // per eligible code point, [0, 1]
    uint64_t seed;
} kf_perturb_opts;

typedef struct {
    int64_t n_eligible;   // eligible code points in the input
    int64_t n_considered; // of them, those not taken by a swap: the ones drawn for
    int64_t n_swap, n_drop, n_insert, n_sub;
} kf_perturb_stats;

// Parses "typo:RATE[,seed:S]" (seed 0 when absent).
kf_status kf_perturb_parse(const char *spec, kf_perturb_opts *out, kf_error *err);

// Perturbs text (len bytes of UTF-8; invalid UTF-8 is an error naming the
// byte offset) into a malloc'd NUL-terminated *out of *out_len bytes.
kf_status kf_perturb_typo(const char *text, size_t len, const kf_perturb_opts *o, char **out, size_t *out_len,
                          kf_perturb_stats *st, kf_error *err);

#endif
