// Dalvi et al. (2020) §5–6 on one task: which layers and how few neurons a
// linear probe needs (docs/probe.md).
//
//  1. a probe per block (residual: embeddings and every layer's output) and
//     the oracle on all blocks;
//  2. LayerSelector: the smallest prefix of blocks 0..k whose probe's dev
//     accuracy is within delta of the oracle's (acc >= (1 - delta) oracle);
//  3. correlation clustering of the kept neurons on the training rows
//     (average linkage on 1 - |rho|, cut at cc_threshold; analyze/corrclust.h),
//     one neuron per cluster (its lowest column), and a probe on those;
//  4. feature selection: rank those neurons by their share of the LS+CC
//     probe's weight mass (sum_k |W_kj| / sum |W|), retrain on the top p% for
//     each p of the grid, keep the smallest set within delta of the LS+CC
//     probe's dev accuracy.
// Every probe's features are standardised with the training rows' mean and
// standard deviation. Dev accuracy makes the choices; test accuracy is
// reported. With control labels, every probe also has a control probe on the
// same neurons (Hewitt & Liang 2019): selectivity = task - control accuracy.
#ifndef KF_PROBE_DALVI_H
#define KF_PROBE_DALVI_H

#include <stdbool.h>
#include <stdint.h>

#include "core/status.h"
#include "probe/features.h"
#include "probe/logreg.h"

typedef struct {
    const kf_features *x;   // (n, cols) features
    const int32_t *y;       // (n) task labels
    const int32_t *y_ctrl;  // (n) control labels, or NULL for none
} kf_probe_split;

typedef struct {
    kf_logreg_opts lr;
    double delta;           // 0.01
    double cc_threshold;    // 0.3
    const double *grid;     // percentages of the LS+CC neurons (ascending)
    int n_grid;
    bool blocks_only;       // stop after the per-block probes (step 1 without the oracle)
} kf_dalvi_opts;

// One trained probe: what it saw and how it did.
typedef struct {
    char name[32];          // "block 3", "oracle", "ls", "ls+cc", "top 5%", with " control" for control probes
    int n_features;
    int iters;
    bool converged;
    double seconds, objective;
    double dev_acc, test_acc;
} kf_probe_run;

typedef struct {
    int n_blocks, n_classes;
    int64_t n_neurons;          // all neurons of this kind in the model
    double *block_dev, *block_test, *block_ctrl; // (n_blocks) accuracy per block (control: test, NAN without)
    double oracle_dev, oracle_test, oracle_ctrl;
    int ls_blocks;              // blocks 0 .. ls_blocks-1 kept
    double *prefix_dev;         // (n_blocks) dev accuracy of the prefix 0..k probes trained (NAN beyond)
    double ls_dev, ls_test;
    int cc_neurons;             // cluster representatives of the kept neurons
    double cc_dev, cc_test;
    double *grid_dev, *grid_test; // (n_grid)
    int *grid_n;                // (n_grid) neurons of each grid point
    int n_selected;
    int64_t *selected;          // (n_selected) columns of the final set, by weight share
    int *selected_per_block;    // (n_blocks)
    double final_dev, final_test, final_ctrl, selectivity; // control/selectivity NAN without control labels
    int64_t *confusion;         // (K, K) test rows: true label, predicted
    kf_logreg final_model;      // the final probe, on columns selected[0..n_selected) standardised with
    double *final_mean, *final_inv_std; // (n_selected) the training rows' mean and 1/std of those columns
    float *block_w;             // (K, n_neurons) every per-block probe's weights in the block's columns
                                // (the task ranking of `kfuse compress --task`)
    kf_probe_run *runs;
    int n_runs;
    double seconds;
} kf_dalvi_result;

// Every accuracy a run did not reach (blocks_only, no control labels) is NAN.
typedef void (*kf_dalvi_progress_fn)(void *user, int step, const char *what);

kf_status kf_dalvi_run(const kf_feat_layout *lay, const kf_probe_split *train, const kf_probe_split *dev,
                       const kf_probe_split *test, int n_classes, const kf_dalvi_opts *o, kf_dalvi_result *out,
                       kf_dalvi_progress_fn progress, void *user, kf_error *err);
void kf_dalvi_result_free(kf_dalvi_result *r);

// Per-column mean and 1/std (std 0 -> 1) of the training rows, in double.
kf_status kf_probe_col_stats(const kf_features *x, double *mean, double *inv_std, kf_error *err);

#endif
