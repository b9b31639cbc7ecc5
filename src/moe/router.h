// Routers of a MoEfied layer: the similarity router (no training) and
// routers trained in C to predict each expert's contribution from the FFN
// input, plus the recall of the oracle's choice used to compare them.
//
// Training data: X (n, C) FFN inputs and Y (n, E) per-expert contributions
// (norm of the expert's output, kf_moe_expert_norms) of calibration tokens.
// Targets are divided by their mean so one learning rate fits every layer;
// scores are therefore relative contributions, which is all that top-k and
// coverage selection need (both are scale-invariant).
// Loss: mean squared error; optimiser: Adam (beta 0.9/0.999) on shuffled
// minibatches, seeded. Linear: scores = W x + b. MLP: scores = W2 relu(W1 x +
// b1) + b2, He-initialised W1, small W2, b2 = mean target.
#ifndef KF_MOE_ROUTER_H
#define KF_MOE_ROUTER_H

#include <stdint.h>

#include "core/status.h"
#include "model/model.h"

// Similarity router of layer l (E experts of consecutive neurons): row e of
// router_w is the mean of the expert's input rows (gate rows when gated, up
// rows otherwise), router_b the mean of its b_up (GPT-2) or absent.
kf_status kf_router_similarity(kf_model *m, int l, int E, kf_error *err);

typedef struct {
    int hidden;   // 0: linear router; else the MLP's hidden width
    int epochs;
    int batch;
    float lr;
    uint64_t seed;
} kf_router_train_opts;

// Defaults: linear, 20 epochs, batch 128, lr 3e-3, seed 1.
void kf_router_train_opts_default(kf_router_train_opts *o);

// Trains layer l's router on X (n, C), Y (n, E) and stores it in the layer
// (router kind, tensors owned by the model). *loss: final training MSE on the
// normalised targets (may be NULL).
kf_status kf_router_train(kf_model *m, int l, int E, const float *X, const float *Y, int n,
                          const kf_router_train_opts *o, double *loss, kf_error *err);

// Mean over rows of |router top-k ∩ oracle top-k| / k, where the oracle
// ranks Y (n, E) and the router is layer L's (linear or MLP) on X (n, C).
// Also *share (may be NULL): mean fraction of experts L's own selection rule
// (top_k or coverage) picks. Scratch is allocated here.
kf_status kf_router_recall(const kf_layer *L, int E, const float *X, const float *Y, int n, int k, double *recall,
                           double *share, kf_error *err);

#endif
