// Streamed, additive statistics of one d-dimensional signal (e.g. the FFN
// activations of one layer): row count, first and second moments, simple
// per-dimension counters and a top-k co-activation counter. Accumulators fed
// with disjoint row sets merge exactly into the accumulator of their union.
//
// Accuracy: the second moment is accumulated in double around a shift s (the
// mean of the first block of rows ever added): Sxx = sum (x-s)(x-s)^T. Each
// block of up to KF_MOMENTS_BLOCK rows is converted to double, shifted, and
// added with cblas_dsyrk. Shifting removes the cancellation of
// E[xx^T] - E[x]E[x]^T when |mean| >> std (residual-stream outliers), and
// double accumulation keeps the error near double rounding over millions of
// rows (an ssyrk float scratch would add ~1e-7 relative error per product and
// per block before the double sum). dsyrk costs about twice ssyrk; accuracy
// was chosen over speed by default. kf_moments_set_f32 trades it for
// speed: each block's products are summed in float (cblas_ssyrk, half the
// time of dsyrk) and the block's sum then added to Sxx in double, so the
// covariance is within ~1e-6 of its natural scale sqrt(var_i var_j) (float
// rounding of one block of at most KF_MOMENTS_BLOCK rows), however many
// rows are added. The shift and every other counter stay as above.
//
// Sxx is stored packed: its upper triangle, row by row (kf_packed_index).
// A block's products are formed KF_MOMENTS_PANEL rows of Sxx at a time by
// gemm into a (panel, d) scratch and added into the packed rows.
//
// Memory for d dims (kf_moments_bytes): d(d+1)/2 doubles for Sxx plus, with
// topk > 0, d(d+1)/2 uint32 co-activation counts, plus O(d) scratch per
// block and panel; e.g. d = 11008 needs 0.48 GB + 0.24 GB + 0.09 GB.
#ifndef KF_STATS_MOMENTS_H
#define KF_STATS_MOMENTS_H

#include <stdint.h>

#include "core/status.h"

#define KF_MOMENTS_BLOCK 512 // rows per block of products
#define KF_MOMENTS_PANEL 256 // rows of Sxx per gemm panel

typedef struct {
    int d;            // dimension
    int topk;         // co-activation set size per row (0 = no counter)
    float eps;        // threshold of the |a| > eps counter
    int64_t n;        // rows seen
    int has_shift;    // shift fixed (after the first add)
    double *shift;    // (d) centring shift s
    double *sum;      // (d) sum of (x - s)
    double *sxx;      // (d(d+1)/2) packed upper triangle of sum (x-s)(x-s)^T, see kf_packed_index
    int64_t *n_pos;   // (d) count of a > 0
    int64_t *n_nz;    // (d) count of |a| > eps
    double *sum_abs;  // (d) sum of |a|
    float *max;       // (d) largest value (-inf before any row)
    float *min;       // (d) smallest value (+inf before any row)
    uint32_t *coact;  // (d*(d+1)/2) packed upper triangle, see kf_moments_coact
    double *block;    // (KF_MOMENTS_BLOCK, d) scratch for the shifted rows
    double *panel;    // (KF_MOMENTS_PANEL, d) scratch: one panel of a block's products
    float *blockf;    // (KF_MOMENTS_BLOCK, d) the shifted rows in float; f32 mode only (NULL: double)
    float *panelf;    // (KF_MOMENTS_PANEL, d) the panel in float; f32 mode only
    int *top;         // (KF_MOMENTS_BLOCK, topk) scratch: each row's top-k indices
} kf_moments;

kf_status kf_moments_init(kf_moments *m, int d, int topk, float eps, kf_error *err);
void kf_moments_free(kf_moments *m);
// Bytes kf_moments_init (and kf_moments_set_f32 when f32) allocates for d
// dims and topk; what a memory plan counts per accumulator.
int64_t kf_moments_bytes(int d, int topk, int f32);

// Switches m to float products per block (see the top of this file); O(d)
// floats more scratch. Results before and after the switch add up as usual.
kf_status kf_moments_set_f32(kf_moments *m, kf_error *err);
// Zeroes all counts and forgets the shift, keeping d, topk and eps.
void kf_moments_reset(kf_moments *m);

// X (n_rows, d) row-major. Fails only when the co-activation counts could
// overflow uint32 (more than 2^32-1 rows).
kf_status kf_moments_add(kf_moments *m, const float *X, int n_rows, kf_error *err);
// dst += src; both must have equal d, topk and eps. The shifts may differ.
kf_status kf_moments_merge(kf_moments *dst, const kf_moments *src, kf_error *err);

// mean (d). Needs n >= 1.
kf_status kf_moments_mean(const kf_moments *m, double *mean, kf_error *err);
// cov (d,d), full symmetric, unbiased (divides by n-1 as numpy.cov). Needs n >= 2.
kf_status kf_moments_cov(const kf_moments *m, double *cov, kf_error *err);
// Pearson correlation (d,d), clipped to [-1, 1] as numpy.corrcoef. A
// constant dimension (zero variance) has correlation 0 with every other
// dimension and 1 with itself.
kf_status kf_moments_corr(const kf_moments *m, double *corr, kf_error *err);
// Number of rows in which both i and j were among the top-k dimensions
// (i == j: rows in which i was). Requires topk > 0 and 0 <= i, j < d.
uint32_t kf_moments_coact(const kf_moments *m, int i, int j);

// Index of (i, j), i <= j, in a packed upper triangle of order d (row-major).
static inline int64_t kf_packed_index(int64_t d, int64_t i, int64_t j) {
    return i * d - i * (i - 1) / 2 + (j - i);
}

#endif
