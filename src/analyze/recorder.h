// The recorder of kf_analyze_run's recording pass (pipeline.c), shared with
// its MPI reduction (record_mpi.c); internal to analyze/.
#ifndef KF_ANALYZE_RECORDER_H
#define KF_ANALYZE_RECORDER_H

#include "analyze/cka.h"
#include "core/status.h"
#include "model/model.h"
#include "stats/moments.h"

typedef struct {
    const kf_model *m;
    int L, C, R, N;          // layers, width, residual representations, rows per call
    int joint;
    int stride;              // joint residual rows: tokens whose index is a multiple of it
    int64_t t0;              // token index of the current call's first row
    kf_moments **ffn;        // (L) owned by stats
    kf_moments *resid_all;   // joint (R*C) or NULL
    kf_moments **resid;      // (R) per representation when not joint
    kf_cka_mb cka;           // minibatch CKA when not joint
    kf_bi_acc *bi;           // (L)
    float *resid_buf;        // (R, N, C) residual stream of the current call
    float *rows;             // (KF_MOMENTS_BLOCK, R*C) concatenated rows
    int S;
    int32_t *slot;           // (N) sample slot of each row of the current call, -1 none
    float **ffn_sample;      // (L) (S, F)
    float *resid_sample;     // (R, S, C) or NULL
    int first, end;          // blocks a layer-group pass runs
    int cache_in, cache_out; // fds: the stream entering block first / leaving block end-1 (-1: none), row t at t*C floats
    kf_status st;
    kf_error err;
} recorder;

#ifdef KF_HAVE_MPI
// Sums the recorder's accumulators and samples over all MPI ranks.
kf_status kf_analyze_mpi_reduce(recorder *r, kf_error *err);
#endif

#endif
