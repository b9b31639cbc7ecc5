// The recorder of kf_analyze_run's recording pass (pipeline.c), shared with
// its MPI reduction (record_mpi.c); internal to analyze/.
#ifndef KF_ANALYZE_RECORDER_H
#define KF_ANALYZE_RECORDER_H

#include "analyze/analysis.h"
#include "analyze/cka.h"
#include "analyze/pipeline.h"
#include "core/status.h"
#include "model/model.h"
#include "stats/moments.h"

typedef struct {
    const kf_model *m;
    int L, C, R, N;          // layers, width, residual representations, rows per call
    int joint;
    int stride;              // joint residual rows: tokens whose index is a multiple of it
    int64_t t0;              // token index of the current call's first row
    kf_moments **ffn;        // (L) owned by stats; NULL for a layer another rank holds (shard)
    kf_moments *resid_all;   // joint (R*C) or NULL
    kf_moments **resid;      // (R) per representation when not joint
    kf_cka_mb cka;           // minibatch CKA when not joint
    kf_bi_acc *bi;           // (L)
    float *resid_buf;        // (R, N, C) residual stream of the current call
    float *rows;             // (KF_MOMENTS_BLOCK, R*C) concatenated rows
    int S;
    int32_t *slot;           // (N) sample slot of each row of the current call, -1 none
    float **ffn_sample;      // (L) (S, F); NULL for a layer another rank holds (shard)
    float *resid_sample;     // (R, S, C) or NULL
    // --shard-layers under MPI: every rank's FFN activations of layer l go
    // to owner[l] (MPI_Send), which alone accumulates them, in rank order
    int shard, rank, n_ranks;
    const int32_t *owner;    // (L) rank holding each layer's FFN statistics
    const int64_t *sample_pos; // (S) token index of each sample slot
    int64_t *calls;          // (n_ranks, 2) first token and rows of every rank's current call (0 rows: none this round)
    float *gather;           // (N, max F of the owned layers) another rank's rows, or NULL
    int32_t *slot_other;     // (N) sample slots of another rank's rows
    int first, end;          // blocks a layer-group pass runs
    int cache_in, cache_out; // fds: the stream entering block first / leaving block end-1 (-1: none), row t at t*C floats
    kf_status st;
    kf_error err;
} recorder;

// Sample slot of every row of the call covering tokens [t0, t0 + n) (-1: none).
void kf_analyze_fill_slots(int32_t *slot, int64_t t0, int n, const int64_t *pos, int S);

#ifdef KF_HAVE_MPI
// Sums the recorder's accumulators and samples over all MPI ranks (the FFN
// ones only without sharding: sharded, each owner has all rows already).
kf_status kf_analyze_mpi_reduce(recorder *r, kf_error *err);
// Sharded recording, called by every rank in the same order: at the start of
// each call (n rows from token t0; n = 0 for a rank without a call this
// round) and at every layer's FFN activations x (n, dim), which go to the
// layer's owner.
void kf_analyze_shard_call(recorder *r, int64_t t0, int n);
void kf_analyze_shard_ffn(recorder *r, int l, const float *x, int n, int dim);
// The layer results of the layers rank 0 does not hold, from their owners
// into layers (L) on rank 0; thresholds and k-means seconds summed there.
kf_status kf_analyze_mpi_gather_layers(const int32_t *owner, int L, int rank, kf_analysis_layer *layers, double *thr_s,
                                       double *km_s, kf_error *err);
// n doubles of layer l from its owner into buf on rank 0.
void kf_analyze_mpi_to_root(double *buf, size_t n, int owner, int rank, int l);
// kf_analysis_save_stats when sharded: rank 0 writes, the owners send.
kf_status kf_analyze_mpi_save_stats(const kf_analysis *a, const char *path, kf_error *err);
#endif

#endif
