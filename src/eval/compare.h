// Comparison of a model against a reference (usually the original it was
// compressed from) on the same text and windows as kf_eval_perplexity:
// perplexity of both, KL(reference || model) per scored token (mean and 99th
// percentile, computed in double), and top-1 agreement of the two argmaxes.
#ifndef KF_EVAL_COMPARE_H
#define KF_EVAL_COMPARE_H

#include <stdint.h>

#include "core/status.h"
#include "eval/perplexity.h"
#include "model/model.h"

typedef struct {
    kf_ppl_result model, ref; // perplexity of each over the same scored tokens
    double kl_mean;           // mean over scored tokens of KL(p_ref || p_model), nats
    double kl_p99;            // 99th percentile (linear interpolation, as numpy's default)
    double kl_max;
    double top1;              // share of scored tokens whose argmax agrees
    int64_t n_scored;
    double ffn_share;         // share of the model's FFN neurons computed per token (< 1 for MoE models)
} kf_compare_result;

// KL(softmax(p) || softmax(q)) over n logits, in double.
double kf_kl_logits(const float *p, const float *q, int n);

// Both models must share the vocabulary size; windows as kf_eval_perplexity.
kf_status kf_eval_compare(const kf_model *m, const kf_model *ref, const int32_t *tokens, int64_t n_tokens, int ctx,
                          int bos_id, kf_compare_result *out, kf_ppl_progress_fn progress, void *user, kf_error *err);

// The same for n_models models against one reference, whose logits are
// computed once per window (a table of candidates costs n_models + 1 forward
// passes instead of 2 * n_models). out has n_models entries; each equals what
// kf_eval_compare gives for that model alone. Progress reports models[0].
kf_status kf_eval_compare_many(const kf_model *const *models, int n_models, const kf_model *ref,
                               const int32_t *tokens, int64_t n_tokens, int ctx, int bos_id, kf_compare_result *out,
                               kf_ppl_progress_fn progress, void *user, kf_error *err);

// The reference's side of a comparison computed on its own, so that the
// reference can be unloaded before the models load (a 7B-shape reference and
// candidate then never share memory): its perplexity, and its logits at every
// scored position in a temporary file (windows x scored rows x V floats,
// held by the page cache, not by the process). kf_eval_compare_cached then
// scores one model against it; each result equals kf_eval_compare's for the
// same tokens, bit for bit (the same logits reach the same sums).
typedef struct {
    int fd;                 // the temporary file of the reference's logits
    int V, ctx, bos_id;
    int64_t n_tokens, n_chunks, n_scored;
    uint64_t tokens_hash;   // FNV-1a of the tokens, checked by kf_eval_compare_cached
    kf_ppl_result ref;      // the reference's perplexity over the scored tokens
} kf_eval_ref_cache;

kf_status kf_eval_ref_cache_make(const kf_model *ref, const int32_t *tokens, int64_t n_tokens, int ctx, int bos_id,
                                 kf_eval_ref_cache *c, kf_error *err);
// m against the cache, on the same tokens it was made from.
kf_status kf_eval_compare_cached(const kf_model *m, const kf_eval_ref_cache *c, const int32_t *tokens,
                                 int64_t n_tokens, kf_compare_result *out, kf_ppl_progress_fn progress, void *user,
                                 kf_error *err);
void kf_eval_ref_cache_free(kf_eval_ref_cache *c);

#endif
