// AdamW, the schedule and gradient clipping (adamw.h).
#include "train/adamw.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"

struct kf_adamw {
    kf_adamw_opts o;
    int64_t t;
    float *buf;     // all moments
    float **m, **v; // per parameter, into buf
    int n;
};

kf_adamw_opts kf_adamw_defaults(void) { return (kf_adamw_opts){0.9f, 0.999f, 1e-8f, 0.0f}; }

kf_status kf_adamw_init(kf_adamw **out, const kf_param *params, int n, const kf_adamw_opts *o, kf_error *err) {
    *out = NULL;
    kf_adamw *a = calloc(1, sizeof *a);
    int64_t total = 0;
    for (int i = 0; i < n; i++) total += (params[i].n + 15) & ~(int64_t)15;
    if (a) {
        a->o = *o;
        a->n = n;
        a->m = calloc((size_t)(n > 0 ? n : 1), sizeof *a->m);
        a->v = calloc((size_t)(n > 0 ? n : 1), sizeof *a->v);
        a->buf = kf_alloc_large(sizeof(float) * (size_t)(2 * total + 16));
    }
    if (!a || !a->m || !a->v || !a->buf) {
        kf_adamw_free(a);
        return kf_error_set(err, KF_ERR_NOMEM, "adamw: out of memory for %lld moments", (long long)(2 * total));
    }
    memset(a->buf, 0, sizeof(float) * (size_t)(2 * total));
    float *p = a->buf;
    for (int i = 0; i < n; i++) {
        a->m[i] = p;
        p += (params[i].n + 15) & ~(int64_t)15;
        a->v[i] = p;
        p += (params[i].n + 15) & ~(int64_t)15;
    }
    *out = a;
    return KF_OK;
}

void kf_adamw_free(kf_adamw *a) {
    if (!a) return;
    free(a->buf);
    free(a->m);
    free(a->v);
    free(a);
}

void kf_adamw_step(kf_adamw *a, kf_param *params, int n, float lr) {
    a->t++;
    const float b1 = a->o.beta1, b2 = a->o.beta2, eps = a->o.eps;
    const float c1 = 1.0f / (float)(1.0 - pow(b1, (double)a->t)), c2 = 1.0f / (float)(1.0 - pow(b2, (double)a->t));
    for (int i = 0; i < n; i++) {
        float *w = params[i].w, *m = a->m[i], *v = a->v[i];
        const float *g = params[i].g;
        const float wd = params[i].decay ? a->o.weight_decay : 0.0f;
        const int64_t e = params[i].n;
#pragma omp parallel for if (e >= (1 << 16))
        for (int64_t j = 0; j < e; j++) {
            m[j] = b1 * m[j] + (1.0f - b1) * g[j];
            v[j] = b2 * v[j] + (1.0f - b2) * g[j] * g[j];
            w[j] -= lr * (m[j] * c1 / (sqrtf(v[j] * c2) + eps) + wd * w[j]);
        }
    }
}

int64_t kf_adamw_t(const kf_adamw *a) { return a->t; }
void kf_adamw_set_t(kf_adamw *a, int64_t t) { a->t = t; }
float *kf_adamw_m(kf_adamw *a, int i) { return a->m[i]; }
float *kf_adamw_v(kf_adamw *a, int i) { return a->v[i]; }

float kf_lr_schedule(int64_t s, int64_t total, int64_t warmup, float lr, float min_ratio) {
    if (s < warmup) return lr * (float)(s + 1) / (float)warmup;
    const double span = (double)(total - warmup);
    const double p = span > 0 ? fmin(1.0, (double)(s - warmup) / span) : 1.0;
    const double lo = (double)lr * min_ratio;
    return (float)(lo + ((double)lr - lo) * 0.5 * (1.0 + cos(3.14159265358979323846 * p)));
}

double kf_grad_norm(const kf_param *params, int n) {
    double ss = 0.0;
    for (int i = 0; i < n; i++)
        for (int64_t j = 0; j < params[i].n; j++) ss += (double)params[i].g[j] * params[i].g[j];
    return sqrt(ss);
}

double kf_grad_clip(kf_param *params, int n, double max_norm) {
    const double norm = kf_grad_norm(params, n);
    if (max_norm <= 0 || norm <= max_norm) return norm;
    const float s = (float)(max_norm / norm);
    for (int i = 0; i < n; i++)
        for (int64_t j = 0; j < params[i].n; j++) params[i].g[j] *= s;
    return norm;
}
