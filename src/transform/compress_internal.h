// Shared by the files of transform/ that implement compress.h; not part of
// the library's interface.
//   layer_stats.c  calibration passes (calib/), Block Influence, per-layer statistics
//   group.c        fold groups (kf_group_kind)
//   plan.c         one layer's new FFN, width allocation, the perplexity-target search
//   ffn.c          FFN surgery (select neurons, merged down columns, errors)
//   block.c        block surgery (drop layers, merge a block's FFN into another)
//   refit.c        least-squares refit of the down projection
//   compress.c     the driver, kf_compress_run
#ifndef KF_TRANSFORM_COMPRESS_INTERNAL_H
#define KF_TRANSFORM_COMPRESS_INTERNAL_H

#include <stdint.h>

#include "core/status.h"
#include "model/model.h"
#include "stats/moments.h"
#include "transform/compress.h"

// One layer's activation statistics in the forms the planning reads.
typedef struct {
    int F;
    int64_t n;
    double *M;       // (F,F) sum a a^T
    double *corr;    // (F,F) fold only
    double *cov;     // (F,F) fold only
    double *sum_abs; // (F)
    double *sum_sq;  // (F) diagonal of M
    int *ls_removed; // allocation with fold ls: the removal order of one greedy run to the smallest width
    int n_removed;   // (entries of ls_removed); width k keeps all but the first F - k
} kf_cmp_stats;

// From the accumulator of layer l; correlation and covariance when want_corr.
kf_status kf_cmp_stats_init(kf_cmp_stats *ls, const kf_moments *mo, int want_corr, int l, kf_error *err);
void kf_cmp_stats_free(kf_cmp_stats *ls);

// Whether the method (or the refit) needs activation statistics.
int kf_cmp_needs_stats(const kf_compress_opts *o);

// One calibration pass over ids (windows of o->ctx, o->batch per call, BOS
// first when bos_id >= 0) recording FFN activations into mo[l] for every
// layer whose mo[l] is not NULL.
kf_status kf_cmp_record_ffn(const kf_model *m, const int32_t *ids, int64_t n_ids, int bos_id,
                            const kf_compress_opts *o, kf_moments **mo, kf_error *err);

// The residual stream of every calibration row entering block `at`, in a
// temporary file (at 0: the embeddings, no file yet); fd[cur] holds it.
typedef struct {
    int fd[2], cur, at;
} kf_cmp_stream;

kf_status kf_cmp_stream_init(kf_cmp_stream *s, kf_error *err);
void kf_cmp_stream_free(kf_cmp_stream *s);

// Statistics of layer l: from o->stats, or recorded on the model as it is
// now into own (then *out = own; the caller frees it). With a stream
// (layers asked in increasing order, blocks before l already final), the
// pass runs blocks [stream->at, l] from the cached stream and moves the
// cache to block l's input; NULL: the pass runs every block.
kf_status kf_cmp_layer_moments(const kf_model *m, int l, const int32_t *ids, int64_t n_ids, int bos_id,
                               const kf_compress_opts *o, kf_cmp_stream *stream, kf_moments *own,
                               const kf_moments **out, kf_error *err);

// Fold groups of layer l by o->group: k_want groups, or (k_want <= 0) the
// correlation clustering cut at t. labels (F) in [0, k) ordered by
// representative; reps (F entries of room) and idx (k) get the
// representatives in increasing index order; *t_cut as kf_compress_layer.
kf_status kf_cmp_fold_groups(const kf_model *m, int l, const kf_cmp_stats *ls, const kf_compress_opts *o,
                             int k_want, double t, int32_t *labels, int *reps, int *idx, int *k_out, double *t_cut,
                             kf_error *err);

// The new layer as "neurons idx (k) + down projection w_new (C,k)", without
// touching the model (plan.c has the details).
kf_status kf_cmp_plan_layer(const kf_model *m, int l, const kf_cmp_stats *ls, const kf_compress_opts *o,
                            int k_want, double t, int *idx, float *w_new, int *k_out, double *t_cut, double *rel_err,
                            double *abs_err, kf_error *err);

// --method drop-layers on m (block.c).
kf_status kf_cmp_drop_layers(kf_model *m, const int32_t *ids, int64_t n_ids, int bos_id, const kf_compress_opts *o,
                             kf_compress_report *rep, kf_error *err);

#endif
