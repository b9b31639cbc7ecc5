#include "runtime/kernels.h"

#include <cblas.h>
#include <immintrin.h>
#include <math.h>
#include <string.h>

// Below this many multiply-adds a matvec runs on one thread: waking the team
// costs more than it saves.
#define KF_MATVEC_PAR_MIN (1 << 15)

// ---- reference kernels --------------------------------------------------------

void kf_ref_matvec(float *y, const float *W, const float *x, int OC, int C) {
    for (int i = 0; i < OC; i++) {
        const float *w = W + (int64_t)i * C;
        float s = 0.0f;
        for (int j = 0; j < C; j++) s += w[j] * x[j];
        y[i] = s;
    }
}

void kf_ref_matvec_t(float *y, const float *W, const float *a, int R, int n, int64_t ldw) {
    for (int r = 0; r < R; r++)
        for (int c = 0; c < n; c++) y[c] += a[r] * W[r * ldw + c];
}

void kf_ref_matmul(float *Y, const float *X, const float *W, int N, int C, int OC) {
    for (int n = 0; n < N; n++) kf_ref_matvec(Y + (int64_t)n * OC, W, X + (int64_t)n * C, OC, C);
}

void kf_ref_softmax(float *x, int n) {
    float max = x[0];
    for (int i = 1; i < n; i++)
        if (x[i] > max) max = x[i];
    float sum = 0.0f;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += x[i];
    }
    for (int i = 0; i < n; i++) x[i] /= sum;
}

void kf_ref_attention(float *out, const float *q, const float *k, const float *v, int B, int T, int pos0, int H,
                      int Hkv, int Dh, int64_t kv_seq_rows, float *scores) {
    const int group = H / Hkv, QW = H * Dh, KW = Hkv * Dh;
    const float scale = 1.0f / sqrtf((float)Dh);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int h = 0; h < H; h++) {
                const float *qi = q + ((int64_t)b * T + t) * QW + h * Dh;
                float *oi = out + ((int64_t)b * T + t) * QW + h * Dh;
                const int n_keys = pos0 + t + 1, kvh = h / group;
                for (int j = 0; j < n_keys; j++) {
                    const float *kj = k + (b * kv_seq_rows + j) * KW + kvh * Dh;
                    float s = 0.0f;
                    for (int d = 0; d < Dh; d++) s += qi[d] * kj[d];
                    scores[j] = s * scale;
                }
                kf_ref_softmax(scores, n_keys);
                for (int d = 0; d < Dh; d++) oi[d] = 0.0f;
                for (int j = 0; j < n_keys; j++) {
                    const float *vj = v + (b * kv_seq_rows + j) * KW + kvh * Dh;
                    for (int d = 0; d < Dh; d++) oi[d] += scores[j] * vj[d];
                }
            }
}

void kf_ref_rope(float *x, int n_head, int Dh, int pos, float theta) {
    const int half = Dh / 2;
    for (int h = 0; h < n_head; h++) {
        float *xh = x + h * Dh;
        for (int i = 0; i < half; i++) {
            double angle = pos * pow((double)theta, -2.0 * i / Dh);
            float c = (float)cos(angle), s = (float)sin(angle);
            float a = xh[i], b = xh[i + half];
            xh[i] = a * c - b * s;
            xh[i + half] = b * c + a * s;
        }
    }
}

// ---- row-wise kernels ----------------------------------------------------------

void kf_rmsnorm(float *y, const float *x, const float *w, int C, float eps) {
    double ss = 0.0;
    for (int i = 0; i < C; i++) ss += (double)x[i] * x[i];
    float inv = (float)(1.0 / sqrt(ss / C + eps));
    for (int i = 0; i < C; i++) y[i] = x[i] * inv * w[i];
}

void kf_layernorm(float *y, const float *x, const float *w, const float *b, int C, float eps) {
    double mean = 0.0, var = 0.0;
    for (int i = 0; i < C; i++) mean += x[i];
    mean /= C;
    for (int i = 0; i < C; i++) var += (x[i] - mean) * (x[i] - mean);
    var /= C;
    float inv = (float)(1.0 / sqrt(var + eps)), m = (float)mean;
    for (int i = 0; i < C; i++) y[i] = (x[i] - m) * inv * w[i] + (b ? b[i] : 0.0f);
}

void kf_rope_table(float *cos_t, float *sin_t, int n_pos, int Dh, float theta) {
    const int half = Dh / 2;
    for (int p = 0; p < n_pos; p++)
        for (int i = 0; i < half; i++) {
            double angle = p * pow((double)theta, -2.0 * i / Dh);
            cos_t[(int64_t)p * half + i] = (float)cos(angle);
            sin_t[(int64_t)p * half + i] = (float)sin(angle);
        }
}

void kf_rope(float *x, int n_head, int Dh, const float *cos_p, const float *sin_p) {
    const int half = Dh / 2;
    for (int h = 0; h < n_head; h++) {
        float *xh = x + h * Dh;
        for (int i = 0; i < half; i++) {
            float a = xh[i], b = xh[i + half];
            xh[i] = a * cos_p[i] - b * sin_p[i];
            xh[i + half] = b * cos_p[i] + a * sin_p[i];
        }
    }
}

float kf_silu(float x) { return x / (1.0f + expf(-x)); }

float kf_gelu_tanh(float x) {
    const float k = 0.7978845608028654f; // sqrt(2/pi)
    return 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
}

// ---- optimised kernels -------------------------------------------------------

// e^x on 8 lanes (Cephes' expf): x clamped to [-87, 88], n = round(x log2 e),
// r = x - n ln 2 in two parts, e^r by a degree-7 polynomial, times 2^n built
// in the exponent bits (n + 127 stays within [1, 254]).
static inline __m256 exp8(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

// Both activations as x / (1 + e^-z): SiLU z = x; tanh-GELU z = 2 sqrt(2/pi)
// (x + 0.044715 x^3), since 0.5 (1 + tanh(u)) = sigmoid(2u) (no cancellation
// where tanh nears -1).
void kf_activate(float *act, const float *gate, int64_t n, bool gelu) {
    const float k2 = 2.0f * 0.7978845608028654f;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 x = _mm256_loadu_ps(gate ? gate + i : act + i);
        __m256 z = x;
        if (gelu) {
            const __m256 x3 = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
            z = _mm256_mul_ps(_mm256_set1_ps(k2), _mm256_fmadd_ps(_mm256_set1_ps(0.044715f), x3, x));
        }
        const __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), z));
        __m256 f = _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
        if (gate) f = _mm256_mul_ps(f, _mm256_loadu_ps(act + i));
        _mm256_storeu_ps(act + i, f);
    }
    for (; i < n; i++) {
        const float a = gate ? gate[i] : act[i];
        const float f = gelu ? kf_gelu_tanh(a) : kf_silu(a);
        act[i] = gate ? f * act[i] : f;
    }
}

void kf_matmul(float *Y, const float *X, const float *W, int N, int C, int OC) {
    // Y (N, OC) = X (N, C) * W^T: W (OC, C) row-major read transposed.
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OC, C, 1.0f, X, C, W, C, 0.0f, Y, OC);
}

static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// One row: two accumulators of 8 lanes, scalar tail.
static inline float dot_avx2(const float *w, const float *x, int C) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int j = 0;
    for (; j + 16 <= C; j += 16) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + j), _mm256_loadu_ps(x + j), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + j + 8), _mm256_loadu_ps(x + j + 8), a1);
    }
    for (; j + 8 <= C; j += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + j), _mm256_loadu_ps(x + j), a0);
    float s = hsum256(_mm256_add_ps(a0, a1));
    for (; j < C; j++) s += w[j] * x[j];
    return s;
}

float kf_dot(const float *a, const float *b, int n) { return dot_avx2(a, b, n); }

void kf_matvec_t(float *y, const float *W, const float *a, int R, int n, int64_t ldw) {
    int r = 0;
    for (; r + 4 <= R; r += 4) {
        const float *w0 = W + r * ldw, *w1 = w0 + ldw, *w2 = w1 + ldw, *w3 = w2 + ldw;
        const __m256 a0 = _mm256_set1_ps(a[r]), a1 = _mm256_set1_ps(a[r + 1]), a2 = _mm256_set1_ps(a[r + 2]),
                     a3 = _mm256_set1_ps(a[r + 3]);
        int c = 0;
        for (; c + 8 <= n; c += 8) {
            __m256 acc = _mm256_loadu_ps(y + c);
            acc = _mm256_fmadd_ps(a0, _mm256_loadu_ps(w0 + c), acc);
            acc = _mm256_fmadd_ps(a1, _mm256_loadu_ps(w1 + c), acc);
            acc = _mm256_fmadd_ps(a2, _mm256_loadu_ps(w2 + c), acc);
            acc = _mm256_fmadd_ps(a3, _mm256_loadu_ps(w3 + c), acc);
            _mm256_storeu_ps(y + c, acc);
        }
        for (; c < n; c++) y[c] += a[r] * w0[c] + a[r + 1] * w1[c] + a[r + 2] * w2[c] + a[r + 3] * w3[c];
    }
    for (; r < R; r++)
        for (int c = 0; c < n; c++) y[c] += a[r] * W[r * ldw + c];
}

void kf_matvec_avx2(float *y, const float *W, const float *x, int OC, int C) {
    // Four rows per iteration (eight accumulators) so each load of x feeds four FMAs.
    const int n_blocks = (OC + 3) / 4;
#pragma omp parallel for schedule(static) if ((int64_t)OC * C >= KF_MATVEC_PAR_MIN)
    for (int blk = 0; blk < n_blocks; blk++) {
        const int i = blk * 4;
        if (i + 4 > OC) {
            for (int r = i; r < OC; r++) y[r] = dot_avx2(W + (int64_t)r * C, x, C);
            continue;
        }
        const float *w0 = W + (int64_t)i * C, *w1 = w0 + C, *w2 = w1 + C, *w3 = w2 + C;
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(),
               a3 = _mm256_setzero_ps(), b0 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps(),
               b2 = _mm256_setzero_ps(), b3 = _mm256_setzero_ps();
        int j = 0;
        for (; j + 16 <= C; j += 16) {
            __m256 xa = _mm256_loadu_ps(x + j), xb = _mm256_loadu_ps(x + j + 8);
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + j), xa, a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + j), xa, a1);
            a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + j), xa, a2);
            a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + j), xa, a3);
            b0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + j + 8), xb, b0);
            b1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + j + 8), xb, b1);
            b2 = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + j + 8), xb, b2);
            b3 = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + j + 8), xb, b3);
        }
        for (; j + 8 <= C; j += 8) {
            __m256 xa = _mm256_loadu_ps(x + j);
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + j), xa, a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + j), xa, a1);
            a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + j), xa, a2);
            a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + j), xa, a3);
        }
        float s0 = hsum256(_mm256_add_ps(a0, b0)), s1 = hsum256(_mm256_add_ps(a1, b1)),
              s2 = hsum256(_mm256_add_ps(a2, b2)), s3 = hsum256(_mm256_add_ps(a3, b3));
        for (; j < C; j++) {
            s0 += w0[j] * x[j];
            s1 += w1[j] * x[j];
            s2 += w2[j] * x[j];
            s3 += w3[j] * x[j];
        }
        y[i] = s0;
        y[i + 1] = s1;
        y[i + 2] = s2;
        y[i + 3] = s3;
    }
}

// One row with 16-lane registers; the tail is a masked load, so no scalar loop.
__attribute__((target("avx512f"))) static inline float dot_avx512(const float *w, const float *x, int C) {
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    int j = 0;
    for (; j + 32 <= C; j += 32) {
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w + j), _mm512_loadu_ps(x + j), a0);
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w + j + 16), _mm512_loadu_ps(x + j + 16), a1);
    }
    for (; j + 16 <= C; j += 16) a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w + j), _mm512_loadu_ps(x + j), a0);
    if (j < C) {
        __mmask16 m = (__mmask16)((1u << (C - j)) - 1);
        a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w + j), _mm512_maskz_loadu_ps(m, x + j), a1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
}

__attribute__((target("avx512f"))) void kf_matvec_avx512(float *y, const float *W, const float *x, int OC, int C) {
    const int n_blocks = (OC + 3) / 4;
#pragma omp parallel for schedule(static) if ((int64_t)OC * C >= KF_MATVEC_PAR_MIN)
    for (int blk = 0; blk < n_blocks; blk++) {
        const int i = blk * 4;
        if (i + 4 > OC) {
            for (int r = i; r < OC; r++) y[r] = dot_avx512(W + (int64_t)r * C, x, C);
            continue;
        }
        const float *w0 = W + (int64_t)i * C, *w1 = w0 + C, *w2 = w1 + C, *w3 = w2 + C;
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(),
               a3 = _mm512_setzero_ps(), b0 = _mm512_setzero_ps(), b1 = _mm512_setzero_ps(),
               b2 = _mm512_setzero_ps(), b3 = _mm512_setzero_ps();
        int j = 0;
        for (; j + 32 <= C; j += 32) {
            __m512 xa = _mm512_loadu_ps(x + j), xb = _mm512_loadu_ps(x + j + 16);
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w0 + j), xa, a0);
            a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w1 + j), xa, a1);
            a2 = _mm512_fmadd_ps(_mm512_loadu_ps(w2 + j), xa, a2);
            a3 = _mm512_fmadd_ps(_mm512_loadu_ps(w3 + j), xa, a3);
            b0 = _mm512_fmadd_ps(_mm512_loadu_ps(w0 + j + 16), xb, b0);
            b1 = _mm512_fmadd_ps(_mm512_loadu_ps(w1 + j + 16), xb, b1);
            b2 = _mm512_fmadd_ps(_mm512_loadu_ps(w2 + j + 16), xb, b2);
            b3 = _mm512_fmadd_ps(_mm512_loadu_ps(w3 + j + 16), xb, b3);
        }
        for (; j < C; j += 16) {
            // Last (possibly partial) 16 columns through a mask.
            __mmask16 m = C - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (C - j)) - 1);
            __m512 xa = _mm512_maskz_loadu_ps(m, x + j);
            a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w0 + j), xa, a0);
            a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w1 + j), xa, a1);
            a2 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w2 + j), xa, a2);
            a3 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w3 + j), xa, a3);
        }
        y[i] = _mm512_reduce_add_ps(_mm512_add_ps(a0, b0));
        y[i + 1] = _mm512_reduce_add_ps(_mm512_add_ps(a1, b1));
        y[i + 2] = _mm512_reduce_add_ps(_mm512_add_ps(a2, b2));
        y[i + 3] = _mm512_reduce_add_ps(_mm512_add_ps(a3, b3));
    }
}

int kf_cpu_has_avx512(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") != 0;
}

void kf_matvec(float *y, const float *W, const float *x, int OC, int C) {
    static int has_avx512 = -1; // decided once; a benign race writes the same value
    if (has_avx512 < 0) has_avx512 = kf_cpu_has_avx512();
    if (has_avx512)
        kf_matvec_avx512(y, W, x, OC, C);
    else
        kf_matvec_avx2(y, W, x, OC, C);
}

void kf_attention(float *out, const float *q, const float *k, const float *v, int B, int T, int pos0, int H,
                  int Hkv, int Dh, int64_t kv_seq_rows) {
    const int group = H / Hkv, QW = H * Dh, KW = Hkv * Dh;
    const float scale = 1.0f / sqrtf((float)Dh);
#pragma omp parallel for collapse(2) schedule(dynamic, 1) if (B * H > 1 && (int64_t)T * (pos0 + T) * Dh >= 4096)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            const int kvh = h / group;
            const float *kb = k + b * kv_seq_rows * KW + kvh * Dh; // key j at kb + j*KW
            const float *vb = v + b * kv_seq_rows * KW + kvh * Dh;
            for (int t = 0; t < T; t++) {
                const float *qi = q + ((int64_t)b * T + t) * QW + h * Dh;
                float *oi = out + ((int64_t)b * T + t) * QW + h * Dh;
                // Online softmax: running max m and sum s; oi holds the
                // weighted sum of values scaled by exp(-m).
                float m = -INFINITY, s = 0.0f;
                memset(oi, 0, sizeof(float) * (size_t)Dh);
                const int n_keys = pos0 + t + 1;
                for (int j = 0; j < n_keys; j++) {
                    const float score = dot_avx2(qi, kb + (int64_t)j * KW, Dh) * scale;
                    if (score > m) {
                        const float c = expf(m - score); // 0 on the first key
                        s *= c;
                        for (int d = 0; d < Dh; d++) oi[d] *= c;
                        m = score;
                    }
                    const float w = expf(score - m);
                    s += w;
                    const float *vj = vb + (int64_t)j * KW;
                    for (int d = 0; d < Dh; d++) oi[d] += w * vj[d];
                }
                const float inv = 1.0f / s;
                for (int d = 0; d < Dh; d++) oi[d] *= inv;
            }
        }
}
