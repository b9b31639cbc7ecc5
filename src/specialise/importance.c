// Per-neuron activation statistics of a dataset, per chunk of windows (importance.h).
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/forward.h"
#include "specialise/importance.h"

static const char *const KIND_NAMES[KF_IMP_COUNT] = {"abs", "freq", "sq"};

const char *kf_imp_kind_name(kf_imp_kind k) { return k >= 0 && k < KF_IMP_COUNT ? KIND_NAMES[k] : "?"; }

int kf_imp_kind_parse(const char *s) {
    for (int k = 0; k < KF_IMP_COUNT; k++)
        if (!strcmp(s, KIND_NAMES[k])) return k;
    return -1;
}

kf_status kf_spec_acts_init(kf_spec_acts *a, const kf_model *m, int n_chunk, kf_error *err) {
    memset(a, 0, sizeof *a);
    if (n_chunk < 1) return kf_error_set(err, KF_ERR_ARG, "specialise: at least one chunk of windows");
    a->n_layer = m->n_layer;
    a->n_chunk = n_chunk;
    a->off = calloc((size_t)m->n_layer + 1, sizeof *a->off);
    a->tokens = calloc((size_t)n_chunk, sizeof *a->tokens);
    if (!a->off || !a->tokens) goto nomem;
    for (int l = 0; l < m->n_layer; l++) a->off[l + 1] = a->off[l] + m->layers[l].n_ff;
    a->n_neuron = a->off[m->n_layer];
    for (int k = 0; k < KF_IMP_COUNT; k++)
        if (!(a->sum[k] = calloc((size_t)n_chunk * (size_t)a->n_neuron, sizeof(double)))) goto nomem;
    return KF_OK;
nomem:
    kf_spec_acts_free(a);
    return kf_error_set(err, KF_ERR_NOMEM, "specialise: out of memory for %d chunks of neuron statistics", n_chunk);
}

void kf_spec_acts_free(kf_spec_acts *a) {
    free(a->off);
    free(a->tokens);
    for (int k = 0; k < KF_IMP_COUNT; k++) free(a->sum[k]);
    memset(a, 0, sizeof *a);
}

void kf_spec_acts_add(kf_spec_acts *a, int l, int c, const float *x, int n) {
    const int64_t F = a->off[l + 1] - a->off[l], base = (int64_t)c * a->n_neuron + a->off[l];
    double *sa = a->sum[KF_IMP_ABS] + base, *sf = a->sum[KF_IMP_FREQ] + base, *sq = a->sum[KF_IMP_SQ] + base;
    for (int r = 0; r < n; r++) {
        const float *row = x + (int64_t)r * F;
        for (int64_t j = 0; j < F; j++) {
            const double v = row[j];
            sa[j] += fabs(v);
            sf[j] += v > 0;
            sq[j] += v * v;
        }
    }
}

void kf_spec_acts_count(kf_spec_acts *a, int c, int64_t n) { a->tokens[c] += n; }

void kf_spec_acts_importance(const kf_spec_acts *a, kf_imp_kind k, const double *w, double *out) {
    double n = 0;
    for (int c = 0; c < a->n_chunk; c++) n += (w ? w[c] : 1.0) * (double)a->tokens[c];
    for (int64_t j = 0; j < a->n_neuron; j++) out[j] = 0;
    for (int c = 0; c < a->n_chunk; c++) {
        const double wc = w ? w[c] : 1.0;
        if (wc == 0) continue;
        const double *s = a->sum[k] + (int64_t)c * a->n_neuron;
        for (int64_t j = 0; j < a->n_neuron; j++) out[j] += wc * s[j];
    }
    for (int64_t j = 0; j < a->n_neuron; j++) out[j] = n > 0 ? out[j] / n : 0;
}

typedef struct {
    kf_spec_acts *a;
    const kf_calib_protocol *p;
    int64_t n_windows, first; // windows in all; the current batch's first window
    int ctx;
} recorder;

static int chunk_of(const recorder *r, int64_t w) { return (int)(w * r->a->n_chunk / r->n_windows); }

// Rows are windows one after another (row = w * ctx + t); the BOS row of each
// window is not the text's and is left out.
static void on_act(void *user, int layer, kf_hook_point point, float *x, int n, int dim) {
    recorder *r = user;
    const int skip = r->p->bos_id >= 0;
    for (int w = 0; w < n / r->ctx; w++)
        kf_spec_acts_add(r->a, layer, chunk_of(r, r->first + w), x + ((int64_t)w * r->ctx + skip) * dim,
                         r->ctx - skip);
}

static kf_status before(void *user, kf_calib_batch *b, kf_error *err) {
    recorder *r = user;
    r->first = b->first;
    const int skip = r->p->bos_id >= 0;
    for (int w = 0; w < b->n; w++) kf_spec_acts_count(r->a, chunk_of(r, b->first + w), r->ctx - skip);
    return KF_OK;
}

kf_status kf_spec_record(const kf_model *m, const int32_t *ids, int64_t n_ids, const kf_calib_protocol *p,
                         kf_spec_acts *a, kf_error *err) {
    kf_status s = kf_calib_check(p, m, n_ids, "specialise", err);
    if (s != KF_OK) return s;
    recorder r = {.a = a, .p = p, .n_windows = kf_calib_n_windows(p, n_ids), .ctx = p->ctx};
    kf_ctx *c;
    s = kf_ctx_init(&c, m, kf_calib_max_rows(p, n_ids), 0, err);
    if (s != KF_OK) return s;
    kf_ctx_set_hook(c, on_act, &r, 1u << KF_HOOK_FFN_ACT);
    kf_calib_sink sink = {.before = before, .user = &r};
    s = kf_calib_run(c, m, ids, n_ids, p, &sink, err);
    kf_ctx_free(c);
    return s;
}
