// Layer similarity: linear CKA (Kornblith et al. 2019) and ShortGPT Block
// Influence (Men et al. 2024).
//
// Linear CKA of X (n,dx), Y (n,dy) with column-centred Xc, Yc:
//   CKA = ||Xc^T Yc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)
//
// Three ways to get it:
// - kf_cka_linear: exact, from two sample matrices held in memory.
// - kf_cka_acc: exact, streamed. Accumulates Sxx (dx,dx), Syy (dy,dy) and the
//   cross-product Sxy (dx,dy) in double around a shift (as kf_moments), so the
//   result over many batches equals kf_cka_linear on their concatenation.
//   Memory (dx+dy)^2 doubles: 400 MB for one pair of 4096-wide layers. That
//   is fine for a few pairs, but all pairs of 32 layers x 4096 would need the
//   joint (L*C)^2 second moment, 137 GB, or L^2/2 cross-products, 70 GB.
// - kf_cka_mb: all pairs, streamed, minibatch CKA (Nguyen et al. 2021): per
//   batch of B tokens, the Gram K_l = X_l X_l^T (B,B) of every layer, and
//   for every pair the unbiased estimator HSIC_1(K_l, K_m) (Song et al. 2012),
//   summed over batches; CKA_lm = sum HSIC_1(K_l,K_m) / sqrt(sum HSIC_1(K_l,K_l)
//   sum HSIC_1(K_m,K_m)). Memory L*B^2 + L^2 doubles, independent of the
//   width (32 layers, B = 256: 17 MB). It estimates the population CKA
//   without the bias of small-n linear CKA, but it is not equal to the
//   full-data value. Sums over batches make it exactly additive and mergeable.
//
// Block influence of layer l: BI_l = 1 - mean over tokens of cos(x_in, x_out)
// with x_in, x_out the residual stream entering and leaving the block.
#ifndef KF_ANALYZE_CKA_H
#define KF_ANALYZE_CKA_H

#include <stdint.h>

#include "core/status.h"

// X (n,dx), Y (n,dy) row-major; n >= 2. Works in double in feature space
// (dx*dy products) or Gram space (n*n), whichever is cheaper. Fails when a
// representation is constant over the rows (CKA undefined).
kf_status kf_cka_linear(const float *X, const float *Y, int n, int dx, int dy, double *cka, kf_error *err);

#define KF_CKA_BLOCK 128 // rows per dsyrk/dgemm block

typedef struct {
    int dx, dy;
    int64_t n;
    int has_shift;
    double *shx, *shy;  // (dx), (dy) shifts: means of the first block
    double *ux, *uy;    // (dx), (dy) sums of shifted rows
    double *sxx, *syy;  // (dx,dx), (dy,dy) upper triangles of shifted products
    double *sxy;        // (dx,dy) shifted cross-product sum (x-shx)(y-shy)^T
    double *bx, *by;    // (KF_CKA_BLOCK,dx), (KF_CKA_BLOCK,dy) scratch
} kf_cka_acc;

kf_status kf_cka_acc_init(kf_cka_acc *a, int dx, int dy, kf_error *err);
void kf_cka_acc_free(kf_cka_acc *a);
// X (n,dx) and Y (n,dy): row r of both belongs to the same token.
void kf_cka_acc_add(kf_cka_acc *a, const float *X, const float *Y, int n);
kf_status kf_cka_acc_merge(kf_cka_acc *dst, const kf_cka_acc *src, kf_error *err);
kf_status kf_cka_acc_value(const kf_cka_acc *a, double *cka, kf_error *err);

#define KF_CKA_MB_COLS 64 // feature columns per double conversion chunk

typedef struct {
    int L, B;            // layers, largest batch
    int n_cur;           // rows of the current batch (0 = none set yet)
    unsigned char *have; // (L) layer set in the current batch
    double *K;           // (L,B,B) Grams of the current batch, diagonal zeroed
    double *rs;          // (L,B) row sums of K
    double *hsic;        // (L,L) sum over batches of HSIC_1
    int64_t n_batches;
    double *xb;          // (B,KF_CKA_MB_COLS) conversion scratch
    double *colmean;     // (KF_CKA_MB_COLS) scratch
} kf_cka_mb;

kf_status kf_cka_mb_init(kf_cka_mb *a, int L, int B, kf_error *err);
void kf_cka_mb_free(kf_cka_mb *a);
// Sets layer l of the current batch: X (n,d), 4 <= n <= B, n equal for all
// layers of a batch (d may differ).
kf_status kf_cka_mb_layer(kf_cka_mb *a, int l, const float *X, int n, int d, kf_error *err);
// Adds HSIC_1 of every pair for the current batch (all layers must be set)
// and starts a new batch.
kf_status kf_cka_mb_commit(kf_cka_mb *a, kf_error *err);
kf_status kf_cka_mb_merge(kf_cka_mb *dst, const kf_cka_mb *src, kf_error *err);
// cka (L,L); entries whose self-HSIC sum is <= 0 are set to NaN.
kf_status kf_cka_mb_value(const kf_cka_mb *a, double *cka, kf_error *err);

typedef struct {
    double sum_cos; // sum over tokens of cos(x_in, x_out)
    int64_t n;
} kf_bi_acc;

// in, out (n,C). A zero vector has cosine 0 with anything.
void kf_bi_add(kf_bi_acc *a, const float *in, const float *out, int n, int C);
void kf_bi_merge(kf_bi_acc *dst, const kf_bi_acc *src);
// 1 - mean cosine; needs n >= 1.
kf_status kf_bi_value(const kf_bi_acc *a, double *bi, kf_error *err);

#endif
