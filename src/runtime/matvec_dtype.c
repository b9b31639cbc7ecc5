// Kernels for weights kept in F16, BF16 or Q8_0 (matvec_dtype.h).
//
// Every variant is one row's dot product (w: one row of C values in the
// dtype, x: C floats, xs: the activation as the variant wants it); the row
// loop and its OpenMP team live outside the target("avx512...") functions.
// The widening variants also have an eight-row kernel for long rows (below).
#include "runtime/matvec_dtype.h"

#include <stdbool.h>

#include <cblas.h>
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/gemm_onednn.h"

// Below this many multiply-adds a matvec runs on one thread (as kernels.c).
#define KF_MV_PAR_MIN (1 << 15)

// ---- reference -------------------------------------------------------------------

void kf_ref_matvec_dt(float *y, kf_dtype d, const void *W, const float *x, int OC, int C) {
    kf_tensor t = {.data = (float *)W, .ndim = 2, .ne = {OC, C, 1, 1}, .dtype = d};
    for (int i = 0; i < OC; i++) {
        double s = 0;
        for (int j = 0; j < C; j++) s += (double)kf_tensor_get_f32(&t, (int64_t)i * C + j) * x[j];
        y[i] = (float)s;
    }
}

// ---- row dot products ------------------------------------------------------------

typedef float (*dot_fn)(const uint8_t *w, const float *x, const void *xs, int C);

static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline float f16_at(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

static inline float bf16_at(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

// 8 BF16 values at p as fp32: the 16 bits are the high half of the float.
static inline __m256 bf16x8(const uint8_t *p) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
}

static float dot_f16_avx2(const uint8_t *w, const float *x, const void *xs, int C) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int j = 0;
    for (; j + 16 <= C; j += 16) {
        a0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + 2 * j))), _mm256_loadu_ps(x + j), a0);
        a1 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + 2 * j + 16))),
                             _mm256_loadu_ps(x + j + 8), a1);
    }
    for (; j + 8 <= C; j += 8)
        a0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + 2 * j))), _mm256_loadu_ps(x + j), a0);
    float s = hsum256(_mm256_add_ps(a0, a1));
    for (; j < C; j++) s += f16_at(w + 2 * j) * x[j];
    return s;
}

static float dot_bf16_avx2(const uint8_t *w, const float *x, const void *xs, int C) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int j = 0;
    for (; j + 16 <= C; j += 16) {
        a0 = _mm256_fmadd_ps(bf16x8(w + 2 * j), _mm256_loadu_ps(x + j), a0);
        a1 = _mm256_fmadd_ps(bf16x8(w + 2 * j + 16), _mm256_loadu_ps(x + j + 8), a1);
    }
    for (; j + 8 <= C; j += 8) a0 = _mm256_fmadd_ps(bf16x8(w + 2 * j), _mm256_loadu_ps(x + j), a0);
    float s = hsum256(_mm256_add_ps(a0, a1));
    for (; j < C; j++) s += bf16_at(w + 2 * j) * x[j];
    return s;
}

// Q8_0 block b: sum of q[i] x[32b + i] in fp32, then scaled by the block's d.
static float dot_q8_0_avx2(const uint8_t *w, const float *x, const void *xs, int C) {
    __m256 acc = _mm256_setzero_ps();
    for (int b = 0; b < C / 32; b++, w += 34, x += 32) {
        const __m128i q0 = _mm_loadu_si128((const __m128i *)(w + 2)), q1 = _mm_loadu_si128((const __m128i *)(w + 18));
        __m256 s = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q0)), _mm256_loadu_ps(x));
        s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(q0, 8))), _mm256_loadu_ps(x + 8), s);
        s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q1)), _mm256_loadu_ps(x + 16), s);
        s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(q1, 8))), _mm256_loadu_ps(x + 24), s);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_at(w)), s, acc);
    }
    return hsum256(acc);
}

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl")))

// Lanes [0, n) of 16 (n <= 16).
AVX512 static inline __mmask16 mask16(int n) { return n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1); }

AVX512 static float dot_f16_avx512(const uint8_t *w, const float *x, const void *xs, int C) {
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    int j = 0;
    for (; j + 32 <= C; j += 32) {
        a0 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(w + 2 * j))), _mm512_loadu_ps(x + j), a0);
        a1 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(w + 2 * j + 32))),
                             _mm512_loadu_ps(x + j + 16), a1);
    }
    for (; j < C; j += 16) { // last columns through a mask
        __mmask16 m = mask16(C - j);
        a0 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, w + 2 * j)), _mm512_maskz_loadu_ps(m, x + j), a0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
}

AVX512 static inline __m512 bf16x16(__m256i h) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

AVX512 static float dot_bf16_avx512(const uint8_t *w, const float *x, const void *xs, int C) {
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    int j = 0;
    for (; j + 32 <= C; j += 32) {
        a0 = _mm512_fmadd_ps(bf16x16(_mm256_loadu_si256((const __m256i *)(w + 2 * j))), _mm512_loadu_ps(x + j), a0);
        a1 = _mm512_fmadd_ps(bf16x16(_mm256_loadu_si256((const __m256i *)(w + 2 * j + 32))), _mm512_loadu_ps(x + j + 16),
                             a1);
    }
    for (; j < C; j += 16) {
        __mmask16 m = mask16(C - j);
        a0 = _mm512_fmadd_ps(bf16x16(_mm256_maskz_loadu_epi16(m, w + 2 * j)), _mm512_maskz_loadu_ps(m, x + j), a0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
}

AVX512 static float dot_q8_0_avx512(const uint8_t *w, const float *x, const void *xs, int C) {
    __m512 acc = _mm512_setzero_ps();
    for (int b = 0; b < C / 32; b++, w += 34, x += 32) {
        __m512 s = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(w + 2)))),
                                 _mm512_loadu_ps(x));
        s = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(w + 18)))),
                            _mm512_loadu_ps(x + 16), s);
        acc = _mm512_fmadd_ps(_mm512_set1_ps(f16_at(w)), s, acc);
    }
    return _mm512_reduce_add_ps(acc);
}

// vdpbf16ps: pairs of BF16 weights times pairs of the BF16 activation xs,
// summed into fp32 lanes.
__attribute__((target("avx512f,avx512bw,avx512bf16"))) static float dot_bf16_dpbf16(const uint8_t *w, const float *x,
                                                                                  const void *xs, int C) {
    const uint8_t *xb = xs;
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    int j = 0;
    for (; j + 64 <= C; j += 64) {
        a0 = _mm512_dpbf16_ps(a0, (__m512bh)_mm512_loadu_si512(w + 2 * j), (__m512bh)_mm512_loadu_si512(xb + 2 * j));
        a1 = _mm512_dpbf16_ps(a1, (__m512bh)_mm512_loadu_si512(w + 2 * j + 64),
                              (__m512bh)_mm512_loadu_si512(xb + 2 * j + 64));
    }
    for (; j < C; j += 32) {
        const int n = C - j;
        const __mmask32 m = n >= 32 ? (__mmask32)0xffffffffu : (__mmask32)((1u << n) - 1);
        a0 = _mm512_dpbf16_ps(a0, (__m512bh)_mm512_maskz_loadu_epi16(m, w + 2 * j),
                              (__m512bh)_mm512_maskz_loadu_epi16(m, xb + 2 * j));
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
}

// Q8_0 weights times the Q8_0 activation xs, per block: vpdpbusd multiplies
// unsigned by signed bytes, so it takes |x| and w carrying x's sign (as
// llama.cpp does; a weight of -128 against a negative x would overflow, and
// kfuse's quantiser never writes -128). The int32 sum is scaled by both
// blocks' d.
__attribute__((target("avx512f,avx512vl,avx512vnni"))) static float dot_q8_0_vnni(const uint8_t *w, const float *x,
                                                                                const void *xs, int C) {
    const uint8_t *xq = xs;
    __m256 acc = _mm256_setzero_ps();
    for (int b = 0; b < C / 32; b++, w += 34, xq += 34) {
        const __m256i qw = _mm256_loadu_si256((const __m256i *)(w + 2)), qx = _mm256_loadu_si256((const __m256i *)(xq + 2));
        const __m256i dot = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_sign_epi8(qx, qx), _mm256_sign_epi8(qw, qx));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_at(w) * f16_at(xq)), _mm256_cvtepi32_ps(dot), acc);
    }
    return hsum256(acc);
}

// ---- eight rows at once, for long rows -------------------------------------------
//
// y[r] = W[r] x for the eight rows W[0..7] (row bytes apart), each x vector
// loaded once for all eight. A row-at-a-time kernel re-reads x from L2 for
// every row once x no longer fits beside the weight stream in L1 (C > 4096:
// 16 KiB of fp32): on the 7B shape's down projection (C 11008) that halved
// the BF16 read rate, 25 against 45 GB/s with eight rows (bench/RESULTS.md,
// "Long rows"). Same products and per-lane order as the one-row widening
// kernels.
typedef void (*dot8_fn)(float *y, const uint8_t *w, size_t row, const float *x, const void *xs, int C);

#define KF_MV_ROWS 8
#define KF_MV_ROWS_MIN_C 4097

// F16 and BF16 share the loop; f16 is a constant at each caller, so each
// wrapper compiles to its own widening.
static inline void dot8_half_avx2(float *y, const uint8_t *w, size_t row, const float *x, int C, bool f16) {
    __m256 a[KF_MV_ROWS];
    for (int r = 0; r < KF_MV_ROWS; r++) a[r] = _mm256_setzero_ps();
    int j = 0;
    for (; j + 8 <= C; j += 8) {
        const __m256 xv = _mm256_loadu_ps(x + j);
        for (int r = 0; r < KF_MV_ROWS; r++) {
            const uint8_t *p = w + r * row + 2 * j;
            const __m256 wv = f16 ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)) : bf16x8(p);
            a[r] = _mm256_fmadd_ps(wv, xv, a[r]);
        }
    }
    for (int r = 0; r < KF_MV_ROWS; r++) {
        float s = hsum256(a[r]);
        for (int k = j; k < C; k++) {
            const uint8_t *p = w + r * row + 2 * k;
            s += (f16 ? f16_at(p) : bf16_at(p)) * x[k];
        }
        y[r] = s;
    }
}

static void dot8_f16_avx2(float *y, const uint8_t *w, size_t row, const float *x, const void *xs, int C) {
    dot8_half_avx2(y, w, row, x, C, true);
}

static void dot8_bf16_avx2(float *y, const uint8_t *w, size_t row, const float *x, const void *xs, int C) {
    dot8_half_avx2(y, w, row, x, C, false);
}

static void dot8_q8_0_avx2(float *y, const uint8_t *w, size_t row, const float *x, const void *xs, int C) {
    __m256 a[KF_MV_ROWS];
    for (int r = 0; r < KF_MV_ROWS; r++) a[r] = _mm256_setzero_ps();
    for (int b = 0; b < C / 32; b++, x += 32) {
        const __m256 x0 = _mm256_loadu_ps(x), x1 = _mm256_loadu_ps(x + 8), x2 = _mm256_loadu_ps(x + 16),
                     x3 = _mm256_loadu_ps(x + 24);
        for (int r = 0; r < KF_MV_ROWS; r++) {
            const uint8_t *p = w + r * row + 34 * (size_t)b;
            const __m128i q0 = _mm_loadu_si128((const __m128i *)(p + 2)), q1 = _mm_loadu_si128((const __m128i *)(p + 18));
            __m256 s = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q0)), x0);
            s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(q0, 8))), x1, s);
            s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q1)), x2, s);
            s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(q1, 8))), x3, s);
            a[r] = _mm256_fmadd_ps(_mm256_set1_ps(f16_at(p)), s, a[r]);
        }
    }
    for (int r = 0; r < KF_MV_ROWS; r++) y[r] = hsum256(a[r]);
}

AVX512 static inline void dot8_half_avx512(float *y, const uint8_t *w, size_t row, const float *x, int C, bool f16) {
    __m512 a[KF_MV_ROWS];
    for (int r = 0; r < KF_MV_ROWS; r++) a[r] = _mm512_setzero_ps();
    for (int j = 0; j < C; j += 16) {
        const __mmask16 m = mask16(C - j);
        const __m512 xv = _mm512_maskz_loadu_ps(m, x + j);
        for (int r = 0; r < KF_MV_ROWS; r++) {
            const __m256i h = _mm256_maskz_loadu_epi16(m, w + r * row + 2 * j);
            a[r] = _mm512_fmadd_ps(f16 ? _mm512_cvtph_ps(h) : bf16x16(h), xv, a[r]);
        }
    }
    for (int r = 0; r < KF_MV_ROWS; r++) y[r] = _mm512_reduce_add_ps(a[r]);
}

AVX512 static void dot8_f16_avx512(float *y, const uint8_t *w, size_t row, const float *x, const void *xs, int C) {
    dot8_half_avx512(y, w, row, x, C, true);
}

AVX512 static void dot8_bf16_avx512(float *y, const uint8_t *w, size_t row, const float *x, const void *xs, int C) {
    dot8_half_avx512(y, w, row, x, C, false);
}

AVX512 static void dot8_q8_0_avx512(float *y, const uint8_t *w, size_t row, const float *x, const void *xs, int C) {
    __m512 a[KF_MV_ROWS];
    for (int r = 0; r < KF_MV_ROWS; r++) a[r] = _mm512_setzero_ps();
    for (int b = 0; b < C / 32; b++, x += 32) {
        const __m512 x0 = _mm512_loadu_ps(x), x1 = _mm512_loadu_ps(x + 16);
        for (int r = 0; r < KF_MV_ROWS; r++) {
            const uint8_t *p = w + r * row + 34 * (size_t)b;
            __m512 s = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(p + 2)))), x0);
            s = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(p + 18)))), x1, s);
            a[r] = _mm512_fmadd_ps(_mm512_set1_ps(f16_at(p)), s, a[r]);
        }
    }
    for (int r = 0; r < KF_MV_ROWS; r++) y[r] = _mm512_reduce_add_ps(a[r]);
}

// vdpbf16ps on eight rows, the activation as BF16 in xs (as dot_bf16_dpbf16).
__attribute__((target("avx512f,avx512bw,avx512bf16"))) static void dot8_bf16_dpbf16(float *y, const uint8_t *w,
                                                                                   size_t row, const float *x,
                                                                                   const void *xs, int C) {
    const uint8_t *xb = xs;
    __m512 a[KF_MV_ROWS];
    for (int r = 0; r < KF_MV_ROWS; r++) a[r] = _mm512_setzero_ps();
    for (int j = 0; j < C; j += 32) {
        const int n = C - j;
        const __mmask32 m = n >= 32 ? (__mmask32)0xffffffffu : (__mmask32)((1u << n) - 1);
        const __m512bh xv = (__m512bh)_mm512_maskz_loadu_epi16(m, xb + 2 * j);
        for (int r = 0; r < KF_MV_ROWS; r++)
            a[r] = _mm512_dpbf16_ps(a[r], (__m512bh)_mm512_maskz_loadu_epi16(m, w + r * row + 2 * j), xv);
    }
    for (int r = 0; r < KF_MV_ROWS; r++) y[r] = _mm512_reduce_add_ps(a[r]);
}

// vpdpbusd on eight rows, the activation as Q8_0 blocks in xs (as dot_q8_0_vnni).
__attribute__((target("avx512f,avx512vl,avx512vnni"))) static void dot8_q8_0_vnni(float *y, const uint8_t *w,
                                                                                 size_t row, const float *x,
                                                                                 const void *xs, int C) {
    const uint8_t *xq = xs;
    __m256 a[KF_MV_ROWS];
    for (int r = 0; r < KF_MV_ROWS; r++) a[r] = _mm256_setzero_ps();
    for (int b = 0; b < C / 32; b++, xq += 34) {
        const __m256i qx = _mm256_loadu_si256((const __m256i *)(xq + 2)), ax = _mm256_sign_epi8(qx, qx);
        const float dx = f16_at(xq);
        for (int r = 0; r < KF_MV_ROWS; r++) {
            const uint8_t *p = w + r * row + 34 * (size_t)b;
            const __m256i qw = _mm256_loadu_si256((const __m256i *)(p + 2));
            const __m256i dot = _mm256_dpbusd_epi32(_mm256_setzero_si256(), ax, _mm256_sign_epi8(qw, qx));
            a[r] = _mm256_fmadd_ps(_mm256_set1_ps(f16_at(p) * dx), _mm256_cvtepi32_ps(dot), a[r]);
        }
    }
    for (int r = 0; r < KF_MV_ROWS; r++) y[r] = hsum256(a[r]);
}

// ---- dispatch ----------------------------------------------------------------------

static const char *const VARIANT_NAMES[KF_MV_COUNT] = {"avx2", "avx512", "avx512_bf16", "avx512_vnni"};

const char *kf_mv_variant_name(kf_mv_variant v) { return v >= 0 && v < KF_MV_COUNT ? VARIANT_NAMES[v] : "?"; }

static int cpu_has(const char *feature) {
    __builtin_cpu_init();
    if (!strcmp(feature, "avx512")) return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                                           __builtin_cpu_supports("avx512vl");
    if (!strcmp(feature, "avx512bf16")) return cpu_has("avx512") && __builtin_cpu_supports("avx512bf16");
    return cpu_has("avx512") && __builtin_cpu_supports("avx512vnni");
}

static dot_fn pick(kf_mv_variant v, kf_dtype d) {
    static const dot_fn table[KF_MV_COUNT][KF_DTYPE_COUNT] = {
        [KF_MV_AVX2] = {[KF_DTYPE_F16] = dot_f16_avx2, [KF_DTYPE_BF16] = dot_bf16_avx2, [KF_DTYPE_Q8_0] = dot_q8_0_avx2},
        [KF_MV_AVX512] = {[KF_DTYPE_F16] = dot_f16_avx512, [KF_DTYPE_BF16] = dot_bf16_avx512,
                          [KF_DTYPE_Q8_0] = dot_q8_0_avx512},
        [KF_MV_AVX512_BF16] = {[KF_DTYPE_BF16] = dot_bf16_dpbf16},
        [KF_MV_AVX512_VNNI] = {[KF_DTYPE_Q8_0] = dot_q8_0_vnni},
    };
    return v >= 0 && v < KF_MV_COUNT && d >= 0 && d < KF_DTYPE_COUNT ? table[v][d] : NULL;
}

// The eight-row kernel of v for d.
static dot8_fn pick8(kf_mv_variant v, kf_dtype d) {
    static const dot8_fn table[KF_MV_COUNT][KF_DTYPE_COUNT] = {
        [KF_MV_AVX2] = {[KF_DTYPE_F16] = dot8_f16_avx2, [KF_DTYPE_BF16] = dot8_bf16_avx2,
                        [KF_DTYPE_Q8_0] = dot8_q8_0_avx2},
        [KF_MV_AVX512] = {[KF_DTYPE_F16] = dot8_f16_avx512, [KF_DTYPE_BF16] = dot8_bf16_avx512,
                          [KF_DTYPE_Q8_0] = dot8_q8_0_avx512},
        [KF_MV_AVX512_BF16] = {[KF_DTYPE_BF16] = dot8_bf16_dpbf16},
        [KF_MV_AVX512_VNNI] = {[KF_DTYPE_Q8_0] = dot8_q8_0_vnni},
    };
    return v >= 0 && v < KF_MV_COUNT && d >= 0 && d < KF_DTYPE_COUNT ? table[v][d] : NULL;
}

int kf_mv_variant_ok(kf_mv_variant v, kf_dtype d) {
    if (!pick(v, d)) return 0;
    switch (v) {
    case KF_MV_AVX2: return 1; // the build's baseline (x86-64-v3)
    case KF_MV_AVX512: return cpu_has("avx512");
    case KF_MV_AVX512_BF16: return cpu_has("avx512bf16");
    case KF_MV_AVX512_VNNI: return cpu_has("avx512vnni");
    default: return 0;
    }
}

size_t kf_matvec_dt_scratch(int C) {
    size_t bf16 = (size_t)C * 2, q8 = kf_dtype_size(KF_DTYPE_Q8_0, C + 31);
    return bf16 > q8 ? bf16 : q8;
}

void kf_matvec_dt_variant(kf_mv_variant v, float *y, kf_dtype d, const void *W, const float *x, int OC, int C,
                          void *xs) {
    const dot_fn f = pick(v, d);
    if (v == KF_MV_AVX512_BF16) kf_f32_to_dtype(KF_DTYPE_BF16, x, xs, C);
    if (v == KF_MV_AVX512_VNNI) kf_f32_to_dtype(KF_DTYPE_Q8_0, x, xs, C);
    const uint8_t *w = W;
    const size_t row = kf_dtype_size(d, C);
    const dot8_fn f8 = C >= KF_MV_ROWS_MIN_C ? pick8(v, d) : NULL;
    if (!f8) {
#pragma omp parallel for schedule(static) if ((int64_t)OC * C >= KF_MV_PAR_MIN)
        for (int i = 0; i < OC; i++) y[i] = f(w + (size_t)i * row, x, xs, C);
        return;
    }
    const int n_blocks = (OC + KF_MV_ROWS - 1) / KF_MV_ROWS; // the last may be short: one row at a time
#pragma omp parallel for schedule(static) if ((int64_t)OC * C >= KF_MV_PAR_MIN)
    for (int b = 0; b < n_blocks; b++) {
        const int i = b * KF_MV_ROWS;
        if (i + KF_MV_ROWS <= OC)
            f8(y + i, w + (size_t)i * row, row, x, xs, C);
        else
            for (int r = i; r < OC; r++) y[r] = f(w + (size_t)r * row, x, xs, C);
    }
}

// Default: vdpbf16ps for BF16 and vpdpbusd for Q8_0 where the CPU has them,
// as llama.cpp does; they round the activation (BF16, Q8_0), which moved
// logits by up to 0.065 on the test models (tests/test_forward_dtype.c), and
// on the 7B shape decoded 7-14% (BF16) and up to 1.5x (Q8_0) faster than the
// widening kernels (bench/RESULTS.md). F16, CPUs without them, and
// KF_KERNELS=exact: the widening AVX-512 kernels (AVX2 without AVX-512), which
// multiply the exactly decoded weights by the fp32 activation, so kept-dtype
// logits equal the fp32 path's up to summation order.
static int chosen[KF_DTYPE_COUNT]; // variant + 1 set by kf_matvec_dt_set_default, 0: the default

int kf_kernels_exact(void) {
    static int exact = -1; // read once; a benign race writes the same value
    if (exact < 0) {
        const char *e = getenv("KF_KERNELS");
        exact = e && !strcmp(e, "exact");
    }
    return exact;
}

static kf_mv_variant pick_default(kf_dtype d) {
    if (!kf_kernels_exact()) {
        if (d == KF_DTYPE_BF16 && kf_mv_variant_ok(KF_MV_AVX512_BF16, d)) return KF_MV_AVX512_BF16;
        if (d == KF_DTYPE_Q8_0 && kf_mv_variant_ok(KF_MV_AVX512_VNNI, d)) return KF_MV_AVX512_VNNI;
    }
    return cpu_has("avx512") ? KF_MV_AVX512 : KF_MV_AVX2;
}

kf_mv_variant kf_matvec_dt_default(kf_dtype d) {
    if (d < 0 || d >= KF_DTYPE_COUNT) return pick_default(d);
    if (chosen[d] != 0) return chosen[d] - 1;
    static int cached[KF_DTYPE_COUNT]; // variant + 1, decided once per dtype (every matvec asks)
    if (cached[d] == 0) cached[d] = pick_default(d) + 1;
    return cached[d] - 1;
}

int kf_matvec_dt_set_default(kf_dtype d, kf_mv_variant v) {
    if (!kf_mv_variant_ok(v, d)) return 0;
    chosen[d] = v + 1;
    return 1;
}

int kf_mv_variant_parse(const char *name) {
    for (int v = 0; v < KF_MV_COUNT; v++)
        if (!strcmp(name, VARIANT_NAMES[v])) return v;
    return -1;
}

void kf_matvec_dt(float *y, kf_dtype d, const void *W, const float *x, int OC, int C, void *xs) {
    kf_matvec_dt_variant(kf_matvec_dt_default(d), y, d, W, x, OC, C, xs);
}

// ---- prefill ------------------------------------------------------------------------

// One row of C values to fp32 (F16C and shifts; Q8_0 through core's decoder).
static void row_to_f32(kf_dtype d, const uint8_t *src, float *dst, int C) {
    int j = 0;
    if (d == KF_DTYPE_F16)
        for (; j + 8 <= C; j += 8) _mm256_storeu_ps(dst + j, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + 2 * j))));
    else if (d == KF_DTYPE_BF16)
        for (; j + 8 <= C; j += 8) _mm256_storeu_ps(dst + j, bf16x8(src + 2 * j));
    else {
        kf_dtype_to_f32(d, src, dst, C);
        return;
    }
    kf_dtype_to_f32(d, src + 2 * j, dst + j, C - j);
}

int kf_matmul_dt_tile_rows(int C, int64_t tile_floats) {
    int64_t r = C > 0 ? tile_floats / C : 1;
    return r < 1 ? 1 : r > (1 << 30) ? 1 << 30 : (int)r;
}

// BF16 weights through oneDNN's BF16 matmul: X rounded to BF16 into tile,
// 2 tile_rows rows at a time (tile holds tile_rows * C floats). False when
// oneDNN fails; the fp32 tiles then do the whole product.
static bool matmul_bf16(float *Y, const float *X, const void *W, int N, int C, int OC, float *tile, int tile_rows) {
    uint16_t *xb = (uint16_t *)tile;
    const int rows = 2 * tile_rows;
    for (int n0 = 0; n0 < N; n0 += rows) {
        const int nn = N - n0 < rows ? N - n0 : rows;
#pragma omp parallel for schedule(static) if ((int64_t)nn * C >= KF_MV_PAR_MIN)
        for (int r = 0; r < nn; r++)
            kf_f32_to_dtype(KF_DTYPE_BF16, X + (int64_t)(n0 + r) * C, xb + (int64_t)r * C, C);
        kf_error err = {0};
        if (kf_gemm_bf16(Y + (int64_t)n0 * OC, xb, W, nn, C, OC, &err) != KF_OK) return false;
    }
    return true;
}

const char *kf_matmul_dt_path(kf_dtype d) {
    return d == KF_DTYPE_BF16 && kf_gemm_bf16_ok() ? "onednn_bf16" : "f32_tiles";
}

void kf_matmul_dt(float *Y, const float *X, kf_dtype d, const void *W, int N, int C, int OC, float *tile,
                  int tile_rows) {
    if (d == KF_DTYPE_BF16 && kf_gemm_bf16_ok() && matmul_bf16(Y, X, W, N, C, OC, tile, tile_rows)) return;
    kf_matmul_dt_tiles(Y, X, d, W, N, C, OC, tile, tile_rows);
}

void kf_matmul_dt_tiles(float *Y, const float *X, kf_dtype d, const void *W, int N, int C, int OC, float *tile,
                        int tile_rows) {
    const uint8_t *w = W;
    const size_t row = kf_dtype_size(d, C);
    for (int r0 = 0; r0 < OC; r0 += tile_rows) {
        const int nr = OC - r0 < tile_rows ? OC - r0 : tile_rows;
#pragma omp parallel for schedule(static) if ((int64_t)nr * C >= KF_MV_PAR_MIN)
        for (int r = 0; r < nr; r++) row_to_f32(d, w + (size_t)(r0 + r) * row, tile + (int64_t)r * C, C);
        // Y[:, r0:r0+nr] (N, nr) = X (N, C) tile^T
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, nr, C, 1.0f, X, C, tile, C, 0.0f, Y + r0, OC);
    }
}
