// Feature extraction for probes: activations at hook points of every layer,
// one forward pass per split, one row per task item (word or sentence),
// written to a memory-mappable feature file.
//
// Two kinds of neurons (docs/probe.md):
// - residual: the residual stream, L+1 blocks of C = n_embd columns: the
//   embeddings (block 0, entering layer 0) and each block's output (block
//   l+1, leaving layer l): what Dalvi et al. and NeuroX call neurons;
// - ffn: the FFN neurons entering w_down, L blocks of that layer's n_ff.
// An item's row aggregates the positions of its span (task/encode.h): the
// last sub-word, the first, or their mean.
//
// The feature file is NumPy .npy v1.0, '<f4' or '<f2', shape (rows, cols),
// C order, so numpy.load(path, mmap_mode='r') reads it as it is.
#ifndef KF_PROBE_FEATURES_H
#define KF_PROBE_FEATURES_H

#include <stdbool.h>
#include <stdint.h>

#include "core/file.h"
#include "core/status.h"
#include "model/model.h"
#include "task/encode.h"

typedef enum { KF_FEAT_RESID = 0, KF_FEAT_FFN } kf_feat_kind;
typedef enum { KF_AGG_LAST = 0, KF_AGG_FIRST, KF_AGG_MEAN } kf_feat_agg;

// Column blocks of a model's features of one kind: block b is columns
// [col[b], col[b+1]); its layer is b (residual: 0 = embeddings).
typedef struct {
    kf_feat_kind kind;
    int n_blocks;
    int64_t *col; // (n_blocks + 1)
} kf_feat_layout;

kf_status kf_feat_layout_init(kf_feat_layout *lay, const kf_model *m, kf_feat_kind kind, kf_error *err);
void kf_feat_layout_free(kf_feat_layout *lay);

typedef struct {
    kf_feat_kind kind;
    kf_feat_agg agg;
    bool f16;          // store '<f2' (half the bytes; probes read it back as f32)
    int batch_tokens;  // rows of one forward call (B*T, padding included); 0 = 1024
} kf_feat_opts;

typedef struct {
    int64_t n_rows;    // items
    int64_t n_tokens;  // real tokens through the model (BOS included, padding not)
    int64_t n_padded;  // padding positions computed as well
    double seconds;    // wall time of extraction (forward passes and copies)
} kf_feat_stats;

typedef void (*kf_feat_progress_fn)(void *user, int64_t done_tokens, int64_t total_tokens);

// Runs the model over every sentence of t and writes the features of every
// item to path (temp-and-rename: nothing at path on failure). Sentences are
// taken in order of length so that a forward call of B sentences pads little;
// rows land at their item's index. Memory: one batch of activations and of
// rows, never the whole matrix.
kf_status kf_features_extract(const kf_model *m, const kf_task_tokens *t, const kf_feat_opts *o, const char *path,
                              kf_feat_stats *stats, kf_feat_progress_fn progress, void *user, kf_error *err);

// A feature file opened read-only through a memory map.
typedef struct {
    kf_mmap map;
    int64_t n_rows, n_cols;
    bool f16;
    const void *data; // (n_rows, n_cols) of f32 or f16
} kf_features;

kf_status kf_features_open(kf_features *f, const char *path, kf_error *err);
void kf_features_close(kf_features *f);

// dst (n_rows, n) f32 = columns cols[0..n) of every row.
void kf_features_gather(const kf_features *f, const int64_t *cols, int n, float *dst);

// Writes a (rows, cols) array as .npy v1.0 (cols < 0: a vector (rows,));
// descr "<f4", "<f2", "<i4".
kf_status kf_npy_write(const char *path, const char *descr, const void *data, size_t elem, int64_t rows,
                       int64_t cols, kf_error *err);

#endif
