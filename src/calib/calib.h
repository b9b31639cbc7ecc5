// The calibration protocol: how a stream of token ids becomes the windows
// that run through a model. One definition serves analyze, compress, moefy
// and eval, so statistics gathered by one are comparable with another's:
//
//   window w = ids[w*ctx .. (w+1)*ctx), windows that fit in the first
//   max_tokens ids (all ids when max_tokens <= 0), in order; with bos_id >= 0
//   each window's first token is replaced by bos_id (llama.cpp's protocol: a
//   window starts like a document), otherwise the text runs as it is.
//   Windows run `batch` at a time (one forward call of batch*ctx rows);
//   batch b (windows b*batch ..) runs on rank b % n_ranks, so n_ranks
//   processes (MPI) deal the batches round-robin and one process runs all.
//
// kf_calib_run drives the windows through a kf_ctx whose hooks the caller
// installed, calling the caller back before and after each forward call
// (with the logits when asked), so recording, scoring and progress stay
// with the caller. The protocol is also recorded in statistics files
// (stats/statsfile.h) and compared on load (kf_calib_check_same).
#ifndef KF_CALIB_CALIB_H
#define KF_CALIB_CALIB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "model/model.h"
#include "runtime/forward.h"

typedef struct {
    int ctx;            // tokens per window
    int batch;          // windows per forward call
    int bos_id;         // >= 0: first token of every window replaced by it; < 0: windows as in the text
    int64_t max_tokens; // ids used at most (whole windows of them); <= 0: all
    int rank, n_ranks;  // this process and the number of processes the batches are dealt to
} kf_calib_protocol;

// ctx, bos_id as given; batch 4, every id, one process.
kf_calib_protocol kf_calib_protocol_make(int ctx, int bos_id);

// Windows of the protocol in n_ids ids (all ranks together).
int64_t kf_calib_n_windows(const kf_calib_protocol *p, int64_t n_ids);
// Windows this rank runs.
int64_t kf_calib_n_rank_windows(const kf_calib_protocol *p, int64_t n_ids);
// Rows of the largest forward call (min(batch, windows) * ctx): the size a
// kf_ctx for kf_calib_run needs.
int kf_calib_max_rows(const kf_calib_protocol *p, int64_t n_ids);

// Checks the protocol against the model and the text: ctx >= 2, batch >= 1,
// rank in [0, n_ranks), ctx within learned positions, a BOS id in the
// vocabulary, at least one window. what names the caller in the error.
kf_status kf_calib_check(const kf_calib_protocol *p, const kf_model *m, int64_t n_ids, const char *what,
                         kf_error *err);

// "ctx 256 with BOS 1" / "ctx 128 and no BOS".
void kf_calib_describe(const kf_calib_protocol *p, char *buf, size_t size);

// Statistics gathered under `had` serve a run under `want` when the windows
// are the same: equal ctx and BOS policy (batch, token count and ranks only
// change rounding or sample size). Otherwise one line: "<what> was gathered
// with ctx 128 and no BOS; this run uses ctx 256 with BOS 1".
kf_status kf_calib_check_same(const kf_calib_protocol *had, const kf_calib_protocol *want, const char *what,
                              kf_error *err);

typedef struct {
    int64_t first;         // index of the batch's first window (its rows start at token first*ctx of the text)
    int n;                 // windows in the batch
    int ctx;
    const int32_t *tokens; // (n, ctx) as run; positions >= 1 are the text's tokens (targets for scoring)
    const float *logits;   // after the call, (n*ctx, n_vocab) when the sink asked for them, else NULL
    int64_t done, total;   // this rank's windows run, this batch included (after the call), and in all
    bool stop;             // a callback sets it: no further batch runs
} kf_calib_batch;

typedef kf_status (*kf_calib_fn)(void *user, kf_calib_batch *b, kf_error *err);

typedef struct {
    kf_calib_fn before; // before each forward call, or NULL
    kf_calib_fn after;  // after each forward call (hook errors, scoring, progress), or NULL
    void *user;
    bool logits;        // compute the logits of every row
} kf_calib_sink;

// Runs this rank's windows of ids (n_ids) through c (made for m with at least
// kf_calib_max_rows rows) with the hooks installed on it. Stops at the first
// failure of the forward pass or a callback, or when a callback sets stop.
kf_status kf_calib_run(kf_ctx *c, const kf_model *m, const int32_t *ids, int64_t n_ids, const kf_calib_protocol *p,
                       const kf_calib_sink *sink, kf_error *err);

#endif
