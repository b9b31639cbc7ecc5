// The F16/BF16/Q8_0 kernels (runtime/matvec_dtype.h) against the reference
// kf_ref_matvec_dt (every weight decoded by core/tensor.c's decoders, double
// sums) on random data, odd sizes included, every variant this CPU runs;
// tolerances are bounds derived from each variant's arithmetic. And the F16
// encoder of kf_f32_to_dtype against its scalar reference, bit for bit, and
// its Q8_0 encoder's error bound at every scale.
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "runtime/matvec_dtype.h"
#include "test_util.h"

static float *rand_buf(int64_t n) {
    float *p = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    assert_non_null(p);
    for (int64_t i = 0; i < n; i++) p[i] = (float)kf_test_urand();
    return p;
}

// W (OC, C) random, stored as d; *dec its decoded values (what the kernels must multiply).
static void *rand_weights(kf_dtype d, int OC, int C, float **dec) {
    float *w = rand_buf((int64_t)OC * C);
    for (int64_t i = 0; i < (int64_t)OC * C; i += 97) w[i] = 0; // some exact zeros
    void *q = malloc(kf_dtype_size(d, (int64_t)OC * C) + 1);
    assert_non_null(q);
    kf_f32_to_dtype(d, w, q, (int64_t)OC * C);
    kf_dtype_to_f32(d, q, w, (int64_t)OC * C);
    *dec = w;
    return q;
}

// Bound on |kernel - exact| for row i. fp32 sums of C products in any order:
// 2 C 2^-24 sum|w x| (one product rounding and at most C additions each).
// avx512_bf16 multiplies x rounded to BF16 (relative error <= 2^-9); vnni
// multiplies x quantised to Q8_0 (error <= d/2 per value of a block scaled
// by d = max|x| / 127, d stored as f16).
static double tolerance(kf_mv_variant v, const float *w, const float *x, int C) {
    double abs_wx = 0, q8 = 0;
    for (int j = 0; j < C; j++) abs_wx += fabs((double)w[j] * x[j]);
    double tol = 2.0 * (C + 2) * 5.96e-8 * abs_wx + 1e-6;
    if (v == KF_MV_AVX512_BF16) tol += 0x1p-8 * abs_wx;
    if (v == KF_MV_AVX512_VNNI)
        for (int b = 0; b < C / 32; b++) {
            double amax = 0, aw = 0;
            for (int i = 0; i < 32; i++) {
                amax = fmax(amax, fabs(x[32 * b + i]));
                aw += fabs(w[32 * b + i]);
            }
            q8 += (amax / 127.0) * 1.001 / 2 * aw;
        }
    return tol + q8;
}

static void check_one(kf_mv_variant v, kf_dtype d, int OC, int C) {
    float *dec, *x = rand_buf(C), *y = rand_buf(OC), *r = rand_buf(OC);
    void *W = rand_weights(d, OC, C, &dec);
    void *xs = malloc(kf_matvec_dt_scratch(C));
    assert_non_null(xs);
    kf_matvec_dt_variant(v, y, d, W, x, OC, C, xs);
    kf_ref_matvec_dt(r, d, W, x, OC, C);
    for (int i = 0; i < OC; i++) {
        double tol = tolerance(v, dec + (int64_t)i * C, x, C);
        if (!(fabs((double)y[i] - r[i]) <= tol))
            fail_msg("%s %s OC=%d C=%d row %d: %.9g vs %.9g (tolerance %.3g)", kf_mv_variant_name(v), kf_dtype_name(d),
                     OC, C, i, y[i], r[i], tol);
    }
    free(W), free(dec), free(x), free(y), free(r), free(xs);
}

static const kf_dtype DTYPES[] = {KF_DTYPE_F16, KF_DTYPE_BF16, KF_DTYPE_Q8_0};

// Every (variant, dtype) this CPU runs: all row counts up to 20, C of 1..67
// (multiples of 32 for Q8_0), one size large enough for OpenMP, and rows
// longer than 4096 (the eight-row kernels; OC not a multiple of eight, and
// for F16/BF16 a C that ends in a partial vector).
static void check_variant(kf_mv_variant v) {
    int n_run = 0;
    for (size_t k = 0; k < sizeof DTYPES / sizeof DTYPES[0]; k++) {
        kf_dtype d = DTYPES[k];
        if (!kf_mv_variant_ok(v, d)) continue;
        n_run++;
        const int step = d == KF_DTYPE_Q8_0 ? 32 : 1, max_c = d == KF_DTYPE_Q8_0 ? 160 : 67;
        for (int OC = 1; OC <= 20; OC += 3)
            for (int C = step; C <= max_c; C += step) check_one(v, d, OC, C);
        check_one(v, d, 301, d == KF_DTYPE_Q8_0 ? 544 : 515);
        for (int OC = 1; OC <= 20; OC += 3) check_one(v, d, OC, d == KF_DTYPE_Q8_0 ? 4128 : 4109);
        check_one(v, d, 77, d == KF_DTYPE_Q8_0 ? 11008 : 11001);
    }
    if (n_run == 0) kf_test_skip("this CPU does not run the %s kernels", kf_mv_variant_name(v));
}

static void test_avx2(void **state) { check_variant(KF_MV_AVX2); }
static void test_avx512(void **state) { check_variant(KF_MV_AVX512); }
static void test_avx512_bf16(void **state) { check_variant(KF_MV_AVX512_BF16); }
static void test_avx512_vnni(void **state) { check_variant(KF_MV_AVX512_VNNI); }

// The default variant runs on this CPU and exists for every dtype.
static void test_default(void **state) {
    for (size_t k = 0; k < sizeof DTYPES / sizeof DTYPES[0]; k++) {
        assert_true(kf_mv_variant_ok(kf_matvec_dt_default(DTYPES[k]), DTYPES[k]));
        float *dec, *x = rand_buf(64), y[9], r[9];
        void *W = rand_weights(DTYPES[k], 9, 64, &dec), *xs = malloc(kf_matvec_dt_scratch(64));
        kf_matvec_dt(y, DTYPES[k], W, x, 9, 64, xs);
        kf_ref_matvec_dt(r, DTYPES[k], W, x, 9, 64);
        for (int i = 0; i < 9; i++)
            assert_true(fabs((double)y[i] - r[i]) <= tolerance(kf_matvec_dt_default(DTYPES[k]), dec + i * 64, x, 64));
        free(W), free(dec), free(x), free(xs);
    }
}

// Prefill: tiles of 1, 7 and all rows (OC not a multiple of the tile)
// against the reference row by row, through the fp32 tiles (exact weights,
// fp32 activation) and through kf_matmul_dt, which for BF16 with oneDNN
// rounds the activation to BF16 (the vdpbf16ps tolerance) and takes 2 x tile
// rows of X at a time (N = 5 rows: chunks of 2, 14, 90).
static void test_matmul_tiles(void **state) {
    const int N = 5, OC = 45;
#ifdef KF_HAVE_DNNL // built with oneDNN: BF16 prefill must take it wherever the CPU has AVX512-BF16
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512bf16")) assert_string_equal(kf_matmul_dt_path(KF_DTYPE_BF16), "onednn_bf16");
#endif
    for (size_t k = 0; k < sizeof DTYPES / sizeof DTYPES[0]; k++) {
        const kf_dtype d = DTYPES[k];
        const int C = d == KF_DTYPE_Q8_0 ? 96 : 83, tiles[] = {1, 7, OC};
        float *dec, *X = rand_buf((int64_t)N * C), *Y = rand_buf((int64_t)N * OC), *R = rand_buf(OC);
        void *W = rand_weights(d, OC, C, &dec);
        float *tile = malloc(sizeof(float) * (size_t)OC * C);
        for (int path = 0; path < 2; path++) {
            const kf_mv_variant tv = path == 1 && !strcmp(kf_matmul_dt_path(d), "onednn_bf16") ? KF_MV_AVX512_BF16
                                                                                              : KF_MV_AVX2;
            for (int t = 0; t < 3; t++) {
                for (int64_t i = 0; i < (int64_t)N * OC; i++) Y[i] = NAN; // every column must be written
                if (path == 0) kf_matmul_dt_tiles(Y, X, d, W, N, C, OC, tile, tiles[t]);
                else kf_matmul_dt(Y, X, d, W, N, C, OC, tile, tiles[t]);
                for (int n = 0; n < N; n++) {
                    kf_ref_matvec_dt(R, d, W, X + (int64_t)n * C, OC, C);
                    for (int i = 0; i < OC; i++) {
                        double tol = tolerance(tv, dec + (int64_t)i * C, X + (int64_t)n * C, C);
                        if (!(fabs((double)Y[(int64_t)n * OC + i] - R[i]) <= tol))
                            fail_msg("matmul %s (%s) tile %d row %d col %d: %g vs %g", kf_dtype_name(d),
                                     path ? kf_matmul_dt_path(d) : "f32_tiles", tiles[t], n, i,
                                     Y[(int64_t)n * OC + i], R[i]);
                    }
                }
            }
        }
        assert_int_equal(kf_matmul_dt_tile_rows(C, (int64_t)10 * C + 3), 10);
        assert_int_equal(kf_matmul_dt_tile_rows(C, 1), 1);
        free(W), free(dec), free(X), free(Y), free(R), free(tile);
    }
}

// kf_tensor_get_f32 and kf_tensor_row_f32 decode as kf_dtype_to_f32 does.
static void test_tensor_decode(void **state) {
    const int OC = 3, C = 64;
    for (size_t k = 0; k < sizeof DTYPES / sizeof DTYPES[0]; k++) {
        float *dec, row[64];
        void *W = rand_weights(DTYPES[k], OC, C, &dec);
        kf_tensor t = {.data = W, .ndim = 2, .ne = {OC, C, 1, 1}, .dtype = DTYPES[k]};
        assert_int_equal(kf_tensor_row_len(&t), C);
        assert_int_equal(kf_tensor_nbytes(&t), kf_dtype_size(DTYPES[k], OC * C));
        for (int r = 0; r < OC; r++) {
            kf_tensor_row_f32(&t, r, row);
            for (int j = 0; j < C; j++) {
                assert_true(row[j] == dec[r * C + j]);
                assert_true(kf_tensor_get_f32(&t, r * C + j) == dec[r * C + j]);
            }
        }
        free(W), free(dec);
    }
}

static float f32_of_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

// kf_f32_to_dtype's F16 encoder (F16C, 8 at a time, where built) gives the
// bits of the scalar reference kf_f32_to_f16 on: every f16 value, one ulp
// either side, every tie between neighbours and one ulp either side of it
// (round to nearest even), the overflow edge, subnormals, infinities, NaNs
// with payloads, and 2^20 random bit patterns; odd length for the tail.
static void test_f16_encode(void **state) {
    const int64_t n = 65536 * 6 + (1 << 20) + 7;
    float *x = malloc(sizeof *x * (size_t)n);
    uint16_t *got = malloc(sizeof *got * (size_t)n);
    assert_true(x && got);
    int64_t k = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        uint32_t u;
        float f = kf_f16_to_f32_1((uint16_t)h), g = kf_f16_to_f32_1((uint16_t)(h + 1));
        memcpy(&u, &f, 4);
        x[k++] = f;
        x[k++] = f32_of_bits(u + 1);
        x[k++] = f32_of_bits(u - 1);
        float tie = (f + g) / 2; // exact: both are f16 values, f32 has 13 more bits
        memcpy(&u, &tie, 4);
        x[k++] = tie;
        x[k++] = f32_of_bits(u + 1);
        x[k++] = f32_of_bits(u - 1);
    }
    for (; k < n; k++) x[k] = f32_of_bits((uint32_t)kf_rng_u64(kf_test_rng()));
    x[5] = 65520.0f, x[11] = 65519.996f, x[17] = -65520.0f, x[23] = f32_of_bits(0x7fc00001u);
    x[29] = f32_of_bits(0xff812345u), x[31] = INFINITY, x[37] = 1e-8f, x[41] = 2.9802322e-08f;
    kf_f32_to_dtype(KF_DTYPE_F16, x, got, n);
    int64_t bad = 0;
    for (int64_t i = 0; i < n; i++) {
        uint16_t want = kf_f32_to_f16(x[i]);
        if (got[i] != want && bad++ < 5) print_message("x = %a: 0x%04x, reference 0x%04x\n", (double)x[i], got[i], want);
    }
    assert_int_equal(bad, 0);
    free(x), free(got);
}

// Q8_0 blocks of max |x| from 1 down to 1e-7 (normal, subnormal and zero
// f16 scales): each value decodes within half a step of the stored scale d
// (the whole value when max |x|/127 rounds to a zero d), and no byte is -128.
static void test_q8_0_encode(void **state) {
    float x[32], y[32];
    uint8_t q[34];
    int n = 0;
    for (float amax = 1.0f; amax > 1e-7f; amax *= 0.97f, n++) {
        for (int i = 0; i < 32; i++) x[i] = amax * (float)(i - 16) / 16 * (i % 2 ? 1.0f : 0.999f);
        kf_f32_to_dtype(KF_DTYPE_Q8_0, x, q, 32);
        kf_dtype_to_f32(KF_DTYPE_Q8_0, q, y, 32);
        uint16_t h;
        memcpy(&h, q, 2);
        const double d = kf_f16_to_f32_1(h);
        for (int i = 0; i < 32; i++) {
            const double err = fabs((double)y[i] - x[i]);
            if (q[2 + i] == 0x80 || !(d > 0 ? err <= d * 0.5001 : y[i] == 0 && amax / 127 <= 0x1p-25f))
                fail_msg("max|x| %.4g: x = %.6g decodes to %.6g (q %d, d %.4g)", amax, x[i], y[i], (int8_t)q[2 + i], d);
        }
    }
    assert_true(n > 500);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_avx2),        cmocka_unit_test(test_avx512),       cmocka_unit_test(test_avx512_bf16),
        cmocka_unit_test(test_avx512_vnni), cmocka_unit_test(test_default),      cmocka_unit_test(test_matmul_tiles),
        cmocka_unit_test(test_tensor_decode), cmocka_unit_test(test_f16_encode),   cmocka_unit_test(test_q8_0_encode),
    };
    return kf_test_status(cmocka_run_group_tests(tests, NULL, NULL));
}
