// Token sampling from logits: greedy, temperature, nucleus (top-p).
#ifndef KF_SAMPLE_SAMPLER_H
#define KF_SAMPLE_SAMPLER_H

#include <stdint.h>

#include "core/rng.h"
#include "core/status.h"

typedef struct {
    int n_vocab;
    float temp;      // 0 = greedy
    float top_p;     // 1 = off
    kf_rng rng;
    struct kf_sample_cand *cand; // (n_vocab) scratch, allocated once
} kf_sampler;

kf_status kf_sampler_init(kf_sampler *s, int n_vocab, float temp, float top_p, uint64_t seed, kf_error *err);
void kf_sampler_free(kf_sampler *s);
// Picks the next token from logits (n_vocab); logits are not modified.
int32_t kf_sampler_sample(kf_sampler *s, const float *logits);
int32_t kf_sample_argmax(const float *logits, int n);

#endif
