// Zero-shot scoring: the log-probability a model gives whole sentences, as
// minimal-pair tasks (task/blimp.h) compare them. Sentence s is
// ids[off[s] .. off[s+1]), BOS first; its score is
//   lp[s] = sum_{t=1}^{n-1} log p(ids[t] | ids[0..t-1])   (n tokens, in double)
// so the BOS itself is not scored and every real token is.
#ifndef KF_EVAL_ZEROSHOT_H
#define KF_EVAL_ZEROSHOT_H

#include <stdint.h>

#include "core/status.h"
#include "model/model.h"

// Called after each forward call with the sentences scored so far.
typedef void (*kf_zs_progress_fn)(void *user, int64_t done, int64_t total);

// Batched: sentences sorted by length (longest first) and run max_rows
// tokens per forward call, B sentences of the batch's longest length T,
// shorter ones right-padded with their BOS. Attention is causal, so padding
// after a sentence changes none of its logits; padded positions are not
// scored. max_rows is raised to the longest sentence when shorter.
kf_status kf_eval_sentence_logprobs(const kf_model *m, const int32_t *ids, const int64_t *off, int n, int max_rows,
                                    double *lp, kf_zs_progress_fn progress, void *user, kf_error *err);

// Reference: one sentence per forward call, no padding (tests check the
// batched path against it).
kf_status kf_eval_sentence_logprobs_ref(const kf_model *m, const int32_t *ids, const int64_t *off, int n,
                                        double *lp, kf_error *err);

#endif
