// Optimised kernels against their references on random data, odd sizes
// included, with explicit tolerances; plus known values of the scalar ones.
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "runtime/kernels.h"
#include "test_util.h"

static float *rand_buf(int64_t n) {
    float *p = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    assert_non_null(p);
    for (int64_t i = 0; i < n; i++) p[i] = (float)kf_test_urand();
    return p;
}

// Float32 dot products of length C in any summation order differ from the
// exact sum by at most about C * 2^-24 * sum|w x|; allow 4x that.
static float dot_tol(int C) { return 4.0f * (float)C * 5.96e-8f + 1e-7f; }

typedef void (*matvec_fn)(float *, const float *, const float *, int, int);

static void check_matvec(matvec_fn fn) {
    for (int OC = 1; OC <= 67; OC += (OC < 20 ? 1 : 7))
        for (int C = 1; C <= 67; C++) {
            float *W = rand_buf((int64_t)OC * C), *x = rand_buf(C);
            float *y = rand_buf(OC), *r = rand_buf(OC);
            fn(y, W, x, OC, C);
            kf_ref_matvec(r, W, x, OC, C);
            for (int i = 0; i < OC; i++) {
                // |w x| <= 1 per term, so sum|w x| <= C.
                if (fabsf(y[i] - r[i]) > dot_tol(C) * C) fail_msg("matvec OC=%d C=%d row %d: %g vs %g", OC, C, i, y[i], r[i]);
            }
            free(W), free(x), free(y), free(r);
        }
    // One size large enough to take the OpenMP path.
    const int OC = 301, C = 515;
    float *W = rand_buf((int64_t)OC * C), *x = rand_buf(C), *y = rand_buf(OC), *r = rand_buf(OC);
    fn(y, W, x, OC, C);
    kf_ref_matvec(r, W, x, OC, C);
    for (int i = 0; i < OC; i++) assert_true(fabsf(y[i] - r[i]) <= dot_tol(C) * C);
    free(W), free(x), free(y), free(r);
}

static void test_matvec_avx2(void **state) { check_matvec(kf_matvec_avx2); }

static void test_matvec_avx512(void **state) {
    if (!kf_cpu_has_avx512()) {
        kf_test_skip("the CPU has no AVX-512");
        return;
    }
    check_matvec(kf_matvec_avx512);
}

static void test_matvec_dispatch(void **state) { check_matvec(kf_matvec); }

// y += W^T a on a sub-block of a wider matrix (row stride ldw > n), against
// the reference; y starts non-zero to check that it accumulates.
static void test_matvec_t(void **state) {
    for (int R = 1; R <= 13; R++)
        for (int n = 1; n <= 41; n += 4) {
            const int ldw = n + 5;
            float *W = rand_buf((int64_t)R * ldw), *a = rand_buf(R), *y = rand_buf(n), *r = malloc(sizeof *r * n);
            memcpy(r, y, sizeof *r * n);
            kf_matvec_t(y, W, a, R, n, ldw);
            kf_ref_matvec_t(r, W, a, R, n, ldw);
            for (int c = 0; c < n; c++)
                if (fabsf(y[c] - r[c]) > dot_tol(R) * (R + 1)) fail_msg("matvec_t R=%d n=%d col %d: %g vs %g", R, n, c, y[c], r[c]);
            free(W), free(a), free(y), free(r);
        }
}

static void test_matmul(void **state) {
    const int Ns[] = {1, 2, 7, 33}, Cs[] = {1, 5, 64, 67}, OCs[] = {1, 3, 17, 130};
    for (int a = 0; a < 4; a++)
        for (int b = 0; b < 4; b++)
            for (int c = 0; c < 4; c++) {
                int N = Ns[a], C = Cs[b], OC = OCs[c];
                float *X = rand_buf((int64_t)N * C), *W = rand_buf((int64_t)OC * C);
                float *Y = rand_buf((int64_t)N * OC), *R = rand_buf((int64_t)N * OC);
                kf_matmul(Y, X, W, N, C, OC);
                kf_ref_matmul(R, X, W, N, C, OC);
                for (int64_t i = 0; i < (int64_t)N * OC; i++)
                    if (fabsf(Y[i] - R[i]) > dot_tol(C) * C)
                        fail_msg("matmul N=%d C=%d OC=%d at %lld: %g vs %g", N, C, OC, (long long)i, Y[i], R[i]);
                free(X), free(W), free(Y), free(R);
            }
}

// Attention outputs are convex combinations of values in [-1, 1]; an error
// of 1e-5 is far below any real difference (a wrong mask or head moves
// outputs by ~0.1).
static void check_attention(int B, int T, int pos0, int H, int Hkv, int Dh) {
    const int64_t kv_rows = pos0 + T + 3; // a padded per-sequence stride
    float *q = rand_buf((int64_t)B * T * H * Dh), *k = rand_buf(B * kv_rows * Hkv * Dh),
          *v = rand_buf(B * kv_rows * Hkv * Dh);
    float *o = rand_buf((int64_t)B * T * H * Dh), *r = rand_buf((int64_t)B * T * H * Dh);
    float *scores = rand_buf(pos0 + T);
    for (int d = 0; d < Dh; d++) q[d] *= 4.0f; // sharper softmax for the first query
    kf_attention(o, q, k, v, B, T, pos0, H, Hkv, Dh, kv_rows);
    kf_ref_attention(r, q, k, v, B, T, pos0, H, Hkv, Dh, kv_rows, scores);
    for (int64_t i = 0; i < (int64_t)B * T * H * Dh; i++)
        if (fabsf(o[i] - r[i]) > 1e-5f)
            fail_msg("attention B=%d T=%d pos0=%d H=%d Hkv=%d Dh=%d at %lld: %g vs %g", B, T, pos0, H, Hkv, Dh,
                     (long long)i, o[i], r[i]);
    free(q), free(k), free(v), free(o), free(r), free(scores);
}

static void test_attention(void **state) {
    check_attention(1, 1, 0, 1, 1, 1);
    check_attention(1, 7, 0, 4, 2, 8);
    check_attention(2, 13, 0, 4, 2, 16);
    check_attention(3, 5, 0, 3, 3, 5);
    check_attention(2, 67, 0, 6, 2, 48);
    check_attention(1, 1, 9, 4, 1, 16);  // decode step: one query, nine cached keys
    check_attention(1, 4, 11, 8, 4, 13); // a continuation chunk
}

static void test_attention_causal(void **state) {
    // Changing a later key/value must not change earlier outputs.
    const int T = 9, H = 2, Dh = 4;
    float *q = rand_buf(T * H * Dh), *k = rand_buf(T * H * Dh), *v = rand_buf(T * H * Dh);
    float *o1 = rand_buf(T * H * Dh), *o2 = rand_buf(T * H * Dh);
    kf_attention(o1, q, k, v, 1, T, 0, H, H, Dh, T);
    for (int i = 5 * H * Dh; i < T * H * Dh; i++) k[i] = v[i] = 7.0f;
    kf_attention(o2, q, k, v, 1, T, 0, H, H, Dh, T);
    for (int i = 0; i < 5 * H * Dh; i++) assert_float_equal(o1[i], o2[i], 0.0f);
    int changed = 0;
    for (int i = 5 * H * Dh; i < T * H * Dh; i++) changed += fabsf(o1[i] - o2[i]) > 1e-3f;
    assert_true(changed > 0);
    free(q), free(k), free(v), free(o1), free(o2);
}

static void test_rope(void **state) {
    const float thetas[] = {10000.0f, 500000.0f};
    const int Dhs[] = {2, 16, 48}, n_pos = 300, n_head = 3;
    for (int a = 0; a < 2; a++)
        for (int b = 0; b < 3; b++) {
            int Dh = Dhs[b];
            float *ct = malloc(sizeof(float) * n_pos * Dh / 2), *st = malloc(sizeof(float) * n_pos * Dh / 2);
            assert_non_null(ct);
            assert_non_null(st);
            kf_rope_table(ct, st, n_pos, Dh, thetas[a]);
            for (int p = 0; p < n_pos; p += 37) {
                float *x = rand_buf(n_head * Dh), *y = malloc(sizeof(float) * n_head * Dh);
                assert_non_null(y);
                memcpy(y, x, sizeof(float) * n_head * Dh);
                kf_rope(x, n_head, Dh, ct + p * Dh / 2, st + p * Dh / 2);
                kf_ref_rope(y, n_head, Dh, p, thetas[a]);
                for (int i = 0; i < n_head * Dh; i++) assert_float_equal(x[i], y[i], 1e-6f);
                free(x), free(y);
            }
            free(ct), free(st);
        }
    // Position 0 is the identity; position 1, pair (0, Dh/2) rotates by 1 radian.
    float x[4] = {1, 2, 3, 4}, c[2], s[2];
    kf_rope_table(c, s, 1, 4, 10000.0f);
    kf_rope(x, 1, 4, c, s);
    assert_float_equal(x[0], 1.0f, 0.0f);
    assert_float_equal(x[3], 4.0f, 0.0f);
    float y[4] = {1, 0, 0, 0};
    kf_ref_rope(y, 1, 4, 1, 10000.0f);
    assert_float_equal(y[0], cosf(1.0f), 1e-7f);
    assert_float_equal(y[2], sinf(1.0f), 1e-7f);
}

static void test_norms(void **state) {
    const int C = 67;
    float *x = rand_buf(C), *w = rand_buf(C), *b = rand_buf(C), y[67], ones[67];
    for (int i = 0; i < C; i++) ones[i] = 1.0f;
    x[3] += 2.0f; // non-zero mean
    kf_rmsnorm(y, x, ones, C, 0.0f);
    double ss = 0.0;
    for (int i = 0; i < C; i++) ss += (double)y[i] * y[i];
    assert_float_equal(ss / C, 1.0, 1e-5);
    kf_rmsnorm(y, x, w, C, 1e-5f);
    double rms = 0.0;
    for (int i = 0; i < C; i++) rms += (double)x[i] * x[i];
    rms = sqrt(rms / C + 1e-5);
    for (int i = 0; i < C; i++) assert_float_equal(y[i], x[i] / rms * w[i], 1e-6);

    kf_layernorm(y, x, ones, NULL, C, 0.0f);
    double mean = 0.0, var = 0.0;
    for (int i = 0; i < C; i++) mean += y[i];
    mean /= C;
    for (int i = 0; i < C; i++) var += (y[i] - mean) * (y[i] - mean);
    assert_float_equal(mean, 0.0, 1e-6);
    assert_float_equal(var / C, 1.0, 1e-5);
    float z[67];
    kf_layernorm(z, x, w, b, C, 0.0f);
    for (int i = 0; i < C; i++) assert_float_equal(z[i], y[i] * w[i] + b[i], 1e-6);
    free(x), free(w), free(b);
}

// kf_activate against kf_silu / kf_gelu_tanh, gated and not, over [-100, 100]
// (both tails of e^x clamped) with a tail that is not a multiple of 8:
// |error| <= 4e-7 |x| (times u when gated) + 1e-30; observed up to 2.1e-7.
static void test_activate(void **state) {
    enum { N = 20011 };
    float *x = malloc(sizeof(float) * N), *u = malloc(sizeof(float) * N), *y = malloc(sizeof(float) * N);
    assert_non_null(x), assert_non_null(u), assert_non_null(y);
    for (int i = 0; i < N; i++) {
        x[i] = -100.0f + 200.0f * (float)i / (N - 1);
        u[i] = 0.5f + (float)(i % 7);
    }
    x[N / 2] = 0.0f, x[N / 2 + 1] = 1e-30f, x[N / 2 + 2] = -1e-30f;
    for (int gelu = 0; gelu < 2; gelu++)
        for (int gated = 0; gated < 2; gated++) {
            if (gated) memcpy(y, u, sizeof(float) * N);
            else memcpy(y, x, sizeof(float) * N);
            kf_activate(y, gated ? x : NULL, N, gelu);
            double worst = 0;
            for (int i = 0; i < N; i++) {
                const double f = gelu ? kf_gelu_tanh(x[i]) : kf_silu(x[i]), want = gated ? f * u[i] : f;
                const double err = fabs(y[i] - want), bound = 4e-7 * fabs(x[i]) * (gated ? u[i] : 1) + 1e-30;
                if (!(err <= bound)) fail_msg("activate gelu=%d gated=%d x=%g: %.9g vs %.9g", gelu, gated, x[i], y[i], want);
                if (x[i] != 0) worst = fmax(worst, err / (fabs(x[i]) * (gated ? u[i] : 1)));
            }
            print_message("activate gelu=%d gated=%d: max |error| / |x| %.3g\n", gelu, gated, worst);
        }
    free(x), free(u), free(y);
}

static void test_scalar_functions(void **state) {
    // Values from the closed forms in double precision.
    assert_float_equal(kf_silu(1.0f), 0.7310585786300049, 1e-6);
    assert_float_equal(kf_silu(-3.0f), -0.14227761953270035, 1e-6);
    assert_float_equal(kf_gelu_tanh(1.0f), 0.8411919906082768, 1e-6);
    assert_float_equal(kf_gelu_tanh(-2.0f), -0.04540230591222954, 1e-6);
    float p[5] = {1, 2, 3, 4, 1000};
    kf_ref_softmax(p, 4);
    assert_float_equal(p[0] + p[1] + p[2] + p[3], 1.0f, 1e-6);
    assert_float_equal(p[3], 0.6439142598879722, 1e-6);
    kf_ref_softmax(p + 4, 1);
    assert_float_equal(p[4], 1.0f, 0.0f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matvec_avx2),   cmocka_unit_test(test_matvec_avx512),
        cmocka_unit_test(test_matvec_dispatch), cmocka_unit_test(test_matvec_t), cmocka_unit_test(test_matmul),
        cmocka_unit_test(test_attention),     cmocka_unit_test(test_attention_causal),
        cmocka_unit_test(test_rope),          cmocka_unit_test(test_norms),
        cmocka_unit_test(test_scalar_functions), cmocka_unit_test(test_activate),
    };
    return kf_test_status(cmocka_run_group_tests(tests, NULL, NULL));
}
