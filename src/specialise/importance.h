// How much each FFN neuron is used on one dataset (kfuse specialise).
//
// Neurons are numbered across layers: neuron i of layer l is flat index
// off[l] + i, off[l+1] - off[l] = n_ff of layer l. The statistics of the
// activations entering w_down (KF_HOOK_FFN_ACT) are summed per chunk of
// calibration windows, so that bootstrap resamples over windows cost no
// second pass: for each chunk c and neuron j,
//   S_abs[c][j] = sum |a|,  S_freq[c][j] = count(a > 0),  S_sq[c][j] = sum a^2
// over the chunk's tokens (BOS rows excluded). Memory: 3 n_chunk doubles per
// neuron, whatever the number of tokens.
#ifndef KF_SPECIALISE_IMPORTANCE_H
#define KF_SPECIALISE_IMPORTANCE_H

#include <stdint.h>

#include "calib/calib.h"
#include "core/status.h"
#include "model/model.h"

typedef enum {
    KF_IMP_ABS = 0, // mean |a|
    KF_IMP_FREQ,    // share of tokens with a > 0
    KF_IMP_SQ,      // mean a^2
    KF_IMP_COUNT,
} kf_imp_kind;

const char *kf_imp_kind_name(kf_imp_kind k);
// "abs", "freq", "sq" -> kind; -1 when unknown.
int kf_imp_kind_parse(const char *s);

typedef struct {
    int n_layer, n_chunk;
    int64_t *off;         // (n_layer + 1) flat offset of each layer's neurons
    int64_t n_neuron;     // off[n_layer]
    double *sum[KF_IMP_COUNT]; // each (n_chunk, n_neuron)
    int64_t *tokens;      // (n_chunk) tokens summed per chunk
} kf_spec_acts;

kf_status kf_spec_acts_init(kf_spec_acts *a, const kf_model *m, int n_chunk, kf_error *err);
void kf_spec_acts_free(kf_spec_acts *a);

// Adds n token rows of layer l's activations x (n, n_ff of l) to chunk c.
void kf_spec_acts_add(kf_spec_acts *a, int l, int c, const float *x, int n);
// Counts n tokens for chunk c (once per token, not per layer).
void kf_spec_acts_count(kf_spec_acts *a, int c, int64_t n);

// out (n_neuron): sum_c w_c S[c][j] / sum_c w_c N_c, chunk weights w (n_chunk;
// NULL: all 1; a bootstrap replicate passes how often each chunk was drawn).
void kf_spec_acts_importance(const kf_spec_acts *a, kf_imp_kind k, const double *w, double *out);

// Runs the windows of ids under protocol p through m and records every FFN
// layer's activations into a (whose n_chunk chunks split the windows in
// order: window w goes to chunk w * n_chunk / n_windows).
kf_status kf_spec_record(const kf_model *m, const int32_t *ids, int64_t n_ids, const kf_calib_protocol *p,
                         kf_spec_acts *a, kf_error *err);

#endif
