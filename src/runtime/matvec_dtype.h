// Kernels for weights kept in their file dtype (F16, BF16, Q8_0; core/tensor.h).
//
// Decode multiplies each weight matrix by one activation vector, so it reads
// every weight byte once per token and is bound by memory bandwidth: keeping
// BF16/F16 weights halves the bytes per token against fp32, Q8_0 (34 bytes
// per 32 values) reads 0.27 of them. Each kernel has a plain reference
// (kf_ref_matvec_dt: decode one value, multiply, sum in double) and SIMD
// variants tested against it (tests/test_kernels_dtype.c); kf_matvec_dt picks
// vdpbf16ps (BF16) or VNNI (Q8_0) where the CPU has them, rounding the
// activation as llama.cpp does, and the exact widening kernels for F16,
// elsewhere and under KF_KERNELS=exact (bench/bench_dtype_kernels.c,
// bench_engine --kernels, bench/RESULTS.md).
//
// Prefill (N > 1 rows) converts row tiles of W to fp32 and multiplies them
// with cblas_sgemm (kf_matmul_dt); BF16 weights go through oneDNN's BF16
// matmul instead where kfuse has it (runtime/gemm_onednn.h: 2.4-3x faster
// here, the activation rounded to BF16).
//
// Layout: W (OC, C) row-major in dtype d (Q8_0: each row C/32 blocks of an
// f16 scale and 32 int8, C a multiple of 32), x (C) and y (OC) fp32.
#ifndef KF_RUNTIME_MATVEC_DTYPE_H
#define KF_RUNTIME_MATVEC_DTYPE_H

#include <stddef.h>
#include <stdint.h>

#include "core/tensor.h"

typedef enum {
    KF_MV_AVX2 = 0,    // FMA on fp32 after widening each weight (F16C for F16; shift for BF16; int8 -> fp32 for Q8_0)
    KF_MV_AVX512,      // the same with 16-lane registers
    KF_MV_AVX512_BF16, // BF16 only: vdpbf16ps, the activation rounded to BF16
    KF_MV_AVX512_VNNI, // Q8_0 only: int8 dot products (vpdpbusd), the activation quantised to Q8_0 per block
    KF_MV_COUNT,
} kf_mv_variant;

// y (OC) = W (OC, C) x (C), the reference: every weight decoded as
// kf_dtype_to_f32 does, products summed in double.
void kf_ref_matvec_dt(float *y, kf_dtype d, const void *W, const float *x, int OC, int C);

// Whether variant v exists for dtype d and this CPU runs it.
int kf_mv_variant_ok(kf_mv_variant v, kf_dtype d);
const char *kf_mv_variant_name(kf_mv_variant v);
// Bytes of the activation scratch xs the variants take (BF16 copy or Q8_0
// blocks of x, C values); the forward pass owns it, so no call allocates.
size_t kf_matvec_dt_scratch(int C);
// y (OC) = W (OC, C) x (C) through variant v (kf_mv_variant_ok(v, d) must
// hold); OpenMP over rows for large matrices. xs: kf_matvec_dt_scratch(C) bytes.
void kf_matvec_dt_variant(kf_mv_variant v, float *y, kf_dtype d, const void *W, const float *x, int OC, int C,
                          void *xs);
// Whether the environment says KF_KERNELS=exact (read once): decode and
// prefill then keep the activation in fp32 for every dtype.
int kf_kernels_exact(void);
// The variant kf_matvec_dt uses for d: the one set by
// kf_matvec_dt_set_default, else avx512_bf16 (BF16) / avx512_vnni (Q8_0)
// where the CPU has them and KF_KERNELS is not exact, else the widening
// AVX-512 kernel (AVX2 without AVX-512).
kf_mv_variant kf_matvec_dt_default(kf_dtype d);
// Makes v the decode kernel for d from now on, process-wide like the thread
// count (kfuse bench --kernel); 0 when v has no kernel for d or this CPU lacks it.
// Not to be called while a forward pass runs.
int kf_matvec_dt_set_default(kf_dtype d, kf_mv_variant v);
// The variant named name (kf_mv_variant_name), -1 for none.
int kf_mv_variant_parse(const char *name);
void kf_matvec_dt(float *y, kf_dtype d, const void *W, const float *x, int OC, int C, void *xs);

// Rows per fp32 tile of kf_matmul_dt for rows of C values: tile_floats / C, at least 1.
int kf_matmul_dt_tile_rows(int C, int64_t tile_floats);
// Y (N, OC) = X (N, C) W^T for W (OC, C) in dtype d: tile_rows rows of W at a
// time are decoded into tile (tile_rows * C floats) and multiplied by
// cblas_sgemm into Y's columns; for BF16 with oneDNN, X is rounded to BF16
// into tile (2 tile_rows rows at a time) and multiplied by W in place.
void kf_matmul_dt(float *Y, const float *X, kf_dtype d, const void *W, int N, int C, int OC, float *tile,
                  int tile_rows);
// The fp32-tile path alone, for every dtype (exact weights, fp32 activation).
void kf_matmul_dt_tiles(float *Y, const float *X, kf_dtype d, const void *W, int N, int C, int OC, float *tile,
                        int tile_rows);
// Which path kf_matmul_dt takes for d here: "onednn_bf16" or "f32_tiles".
const char *kf_matmul_dt_path(kf_dtype d);

#endif
