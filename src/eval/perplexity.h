// Perplexity with the protocol of llama.cpp's llama-perplexity: the text is
// tokenized once (with BOS), cut into non-overlapping windows of ctx tokens
// whose first token is replaced by BOS (calib/'s protocol, kf_eval_protocol),
// and in each window the tokens of the second half are scored (positions
// ctx/2 .. ctx-2 predicting the next token), with log-softmax accumulated in
// double.
#ifndef KF_EVAL_PERPLEXITY_H
#define KF_EVAL_PERPLEXITY_H

#include <stdint.h>

#include "calib/calib.h"
#include "core/status.h"
#include "model/model.h"

typedef struct {
    double ppl;       // exp(mean nll)
    double ppl_se;    // standard error of ppl (delta method, as llama.cpp)
    double nll_mean;  // nats per token
    int64_t n_scored; // tokens scored
    int n_chunks;
    double seconds;   // wall time of the forward passes
} kf_ppl_result;

// Called after each window with the running result.
typedef void (*kf_ppl_progress_fn)(void *user, int chunk, int n_chunks, const kf_ppl_result *so_far);

// The windows of evaluation: ctx tokens, first replaced by bos_id (< 0: left
// as they are), 512/ctx windows per forward call (one from ctx 512) so that
// sgemm stays efficient for short windows.
kf_calib_protocol kf_eval_protocol(int ctx, int bos_id);

kf_status kf_eval_perplexity(const kf_model *m, const int32_t *tokens, int64_t n_tokens, int ctx, int bos_id,
                             kf_ppl_result *out, kf_ppl_progress_fn progress, void *user, kf_error *err);

// Sets ppl, ppl_se, nll_mean of r from the sums of the n_scored NLLs and of
// their squares.
void kf_ppl_finish(kf_ppl_result *r, double nll, double nll2);

// log p(target) under softmax(logits[0..n)), in double.
double kf_log_softmax_at(const float *logits, int n, int target);

#endif
