#include "sample/sampler.h"

#include <math.h>
#include <stdlib.h>

struct kf_sample_cand {
    float p;
    int32_t id;
};

kf_status kf_sampler_init(kf_sampler *s, int n_vocab, float temp, float top_p, uint64_t seed, kf_error *err) {
    if (n_vocab <= 0) return kf_error_set(err, KF_ERR_ARG, "sampler: vocabulary size %d", n_vocab);
    if (!(temp >= 0.0f) || temp > 100.0f) return kf_error_set(err, KF_ERR_ARG, "--temp must be in [0, 100], got %g", temp);
    if (!(top_p > 0.0f && top_p <= 1.0f)) return kf_error_set(err, KF_ERR_ARG, "--top-p must be in (0, 1], got %g", top_p);
    s->n_vocab = n_vocab;
    s->temp = temp;
    s->top_p = top_p;
    kf_rng_seed(&s->rng, seed);
    s->cand = malloc(sizeof *s->cand * (size_t)n_vocab);
    if (!s->cand) return kf_error_set(err, KF_ERR_NOMEM, "sampler: out of memory");
    return KF_OK;
}

void kf_sampler_free(kf_sampler *s) {
    free(s->cand);
    s->cand = NULL;
}

int32_t kf_sample_argmax(const float *logits, int n) {
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (logits[i] > logits[best]) best = i;
    return best;
}

static int cmp_desc(const void *a, const void *b) {
    float pa = ((const struct kf_sample_cand *)a)->p, pb = ((const struct kf_sample_cand *)b)->p;
    return (pa < pb) - (pa > pb);
}

int32_t kf_sampler_sample(kf_sampler *s, const float *logits) {
    int n = s->n_vocab;
    if (s->temp == 0.0f) return kf_sample_argmax(logits, n);
    float mx = logits[kf_sample_argmax(logits, n)];
    double sum = 0;
    for (int i = 0; i < n; i++) {
        s->cand[i].p = expf((logits[i] - mx) / s->temp);
        s->cand[i].id = i;
        sum += s->cand[i].p;
    }
    int kept = n;
    double mass = sum;
    if (s->top_p < 1.0f) {
        // Nucleus: the smallest set of most likely tokens whose mass reaches top_p.
        qsort(s->cand, (size_t)n, sizeof *s->cand, cmp_desc);
        double acc = 0;
        for (kept = 0; kept < n;) {
            acc += s->cand[kept++].p;
            if (acc >= s->top_p * sum) break;
        }
        mass = acc;
    }
    double r = kf_rng_uniform(&s->rng) * mass, acc = 0;
    for (int i = 0; i < kept; i++) {
        acc += s->cand[i].p;
        if (r < acc) return s->cand[i].id;
    }
    return s->cand[kept - 1].id;
}
