// The loss of a model with chosen FFN neurons removed (kfuse specialise).
//
// Removing neuron j of layer l (row j of w_gate/w_up, column j of w_down,
// bias b_up[j]) is the same as zeroing its activation before w_down, which is
// what the KF_HOOK_FFN_ACT hook here does, so one loaded model serves every
// choice of neurons without copying weights.
#ifndef KF_SPECIALISE_ABLATE_H
#define KF_SPECIALISE_ABLATE_H

#include <stdint.h>

#include "calib/calib.h"
#include "core/status.h"
#include "model/model.h"

// Neurons removed per layer: idx[off[l] .. off[l] + n[l]) are layer l's.
typedef struct {
    int n_layer;
    int *n;       // (n_layer)
    int *off;     // (n_layer)
    int32_t *idx; // neuron indices within their layer
} kf_spec_mask;

// Mean next-token NLL (nats) of m on the windows of ids under protocol p,
// every position after the first scored (position t predicts token t + 1),
// with the neurons of mask removed (mask NULL: none).
kf_status kf_spec_loss(const kf_model *m, const int32_t *ids, int64_t n_ids, const kf_calib_protocol *p,
                       const kf_spec_mask *mask, double *nll, kf_error *err);

// fo (n_neuron, flat over layers as in importance.h): the first-order
// estimate of the increase of the mean next-token NLL of m on the windows of
// ids (scored as kf_spec_loss scores them) when one FFN neuron alone is
// removed. Zeroing a_j at every position t changes L by about
//   -sum_t a_tj dL/da_tj,
// and since y = W_down a gives dL/dW_down[c][j] = sum_t dL/dy_tc a_tj, that is
//   -sum_c W_down[c][j] dL/dW_down[c][j]:
// one backward pass of src/train (KF_TRAIN_FFN) gives every neuron's
// estimate. Copies m's weights into memory and w_down to F32 (same values).
// Dense models only.
kf_status kf_spec_first_order(kf_model *m, const int32_t *ids, int64_t n_ids, const kf_calib_protocol *p, double *fo,
                              kf_error *err);

#endif
