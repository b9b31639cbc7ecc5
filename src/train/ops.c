// Forward and backward of each operation of the training pass (ops.h).
#include "train/ops.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "runtime/kernels.h"
#include "runtime/moe.h"

// Element-wise loops run in parallel from this many elements on (a parallel
// region's barrier costs more than a small loop).
#define KF_TRAIN_PAR (1 << 15)

// ---- matmul ---------------------------------------------------------------------

void kf_train_ref_matmul_forward(float *out, const float *inp, const float *W, const float *b, int N, int C,
                                 int OC) {
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OC; o++) {
            float s = b ? b[o] : 0.0f;
            for (int c = 0; c < C; c++) s += inp[(int64_t)n * C + c] * W[(int64_t)o * C + c];
            out[(int64_t)n * OC + o] = s;
        }
}

void kf_train_matmul_forward(float *out, const float *inp, const float *W, const float *b, int N, int C, int OC) {
    // The call runtime's kf_matmul makes, so that the training forward rounds as prefill does.
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OC, C, 1.0f, inp, C, W, C, 0.0f, out, OC);
    if (!b) return;
#pragma omp parallel for if ((int64_t)N * OC >= KF_TRAIN_PAR)
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OC; o++) out[(int64_t)n * OC + o] += b[o];
}

void kf_train_ref_matmul_backward(float *dinp, float *dW, float *db, const float *dout, const float *inp,
                                  const float *W, int N, int C, int OC) {
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OC; o++) {
            const float d = dout[(int64_t)n * OC + o];
            for (int c = 0; c < C; c++) {
                if (dinp) dinp[(int64_t)n * C + c] += d * W[(int64_t)o * C + c];
                if (dW) dW[(int64_t)o * C + c] += d * inp[(int64_t)n * C + c];
            }
            if (db) db[o] += d;
        }
}

void kf_train_matmul_backward(float *dinp, float *dW, float *db, const float *dout, const float *inp,
                              const float *W, int N, int C, int OC) {
    // dinp (N, C) += dout (N, OC) W (OC, C)
    if (dinp) cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, C, OC, 1.0f, dout, OC, W, C, 1.0f, dinp, C);
    // dW (OC, C) += dout^T (OC, N) inp (N, C)
    if (dW) cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, C, N, 1.0f, dout, OC, inp, C, 1.0f, dW, C);
    if (db) {
        // Columns in parallel, rows in order: the same sums at any thread count.
#pragma omp parallel for if ((int64_t)N * OC >= KF_TRAIN_PAR)
        for (int o = 0; o < OC; o++) {
            float s = 0.0f;
            for (int n = 0; n < N; n++) s += dout[(int64_t)n * OC + o];
            db[o] += s;
        }
    }
}

// ---- norms ----------------------------------------------------------------------

void kf_train_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *w, int N, int C, float eps) {
#pragma omp parallel for if ((int64_t)N * C >= KF_TRAIN_PAR)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (int64_t)n * C;
        float *y = out + (int64_t)n * C;
        double ss = 0.0;
        for (int i = 0; i < C; i++) ss += (double)x[i] * x[i];
        const float r = (float)(1.0 / sqrt(ss / C + eps));
        for (int i = 0; i < C; i++) y[i] = x[i] * r * w[i];
        rstd[n] = r;
    }
}

void kf_train_rmsnorm_backward(float *dinp, float *dw, const float *dout, const float *inp, const float *w,
                               const float *rstd, int N, int C) {
    // y_i = x_i r w_i, r = (mean x^2 + eps)^(-1/2):
    //   dx_i = r w_i dy_i - x_i r^3 / C * sum_j dy_j w_j x_j;   dw_i = sum over rows of dy_i x_i r
#pragma omp parallel for if ((int64_t)N * C >= KF_TRAIN_PAR)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (int64_t)n * C, *dy = dout + (int64_t)n * C;
        float *dx = dinp + (int64_t)n * C;
        const float r = rstd[n];
        double dot = 0.0;
        for (int i = 0; i < C; i++) dot += (double)dy[i] * w[i] * x[i];
        const float k = (float)(dot * r * r * r / C);
        for (int i = 0; i < C; i++) dx[i] += r * w[i] * dy[i] - x[i] * k;
    }
    if (!dw) return;
#pragma omp parallel for if ((int64_t)N * C >= KF_TRAIN_PAR)
    for (int i = 0; i < C; i++) {
        float s = 0.0f;
        for (int n = 0; n < N; n++) s += dout[(int64_t)n * C + i] * inp[(int64_t)n * C + i] * rstd[n];
        dw[i] += s;
    }
}

void kf_train_layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *w,
                                const float *b, int N, int C, float eps) {
#pragma omp parallel for if ((int64_t)N * C >= KF_TRAIN_PAR)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (int64_t)n * C;
        float *y = out + (int64_t)n * C;
        double mu = 0.0, var = 0.0;
        for (int i = 0; i < C; i++) mu += x[i];
        mu /= C;
        for (int i = 0; i < C; i++) var += (x[i] - mu) * (x[i] - mu);
        var /= C;
        const float r = (float)(1.0 / sqrt(var + eps)), m = (float)mu;
        for (int i = 0; i < C; i++) y[i] = (x[i] - m) * r * w[i] + (b ? b[i] : 0.0f);
        mean[n] = m;
        rstd[n] = r;
    }
}

void kf_train_layernorm_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                                 const float *w, const float *mean, const float *rstd, int N, int C) {
    // xhat = (x - mean) r, y = xhat w + b, g = dy w:
    //   dx = r (g - mean(g) - xhat mean(g xhat));   dw += dy xhat;   db += dy
#pragma omp parallel for if ((int64_t)N * C >= KF_TRAIN_PAR)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (int64_t)n * C, *dy = dout + (int64_t)n * C;
        float *dx = dinp + (int64_t)n * C;
        const float m = mean[n], r = rstd[n];
        double g_mean = 0.0, gx_mean = 0.0;
        for (int i = 0; i < C; i++) {
            const double g = (double)dy[i] * w[i];
            g_mean += g;
            gx_mean += g * (x[i] - m) * r;
        }
        g_mean /= C;
        gx_mean /= C;
        for (int i = 0; i < C; i++) {
            const float xhat = (x[i] - m) * r;
            dx[i] += r * (dy[i] * w[i] - (float)g_mean - xhat * (float)gx_mean);
        }
    }
    if (!dw && !db) return;
#pragma omp parallel for if ((int64_t)N * C >= KF_TRAIN_PAR)
    for (int i = 0; i < C; i++) {
        float sw = 0.0f, sb = 0.0f;
        for (int n = 0; n < N; n++) {
            const float d = dout[(int64_t)n * C + i];
            sw += d * (inp[(int64_t)n * C + i] - mean[n]) * rstd[n];
            sb += d;
        }
        if (dw) dw[i] += sw;
        if (db) db[i] += sb;
    }
}

// ---- rotate-half RoPE -------------------------------------------------------------

// Rotates each (i, i + Dh/2) pair of every head by the angle of its row's
// position, with sign +1 (forward) or -1 (backward: the inverse rotation).
static void rope_rotate(float *x, const float *cos_t, const float *sin_t, int B, int T, int n_head, int Dh,
                        float sign) {
    const int half = Dh / 2, W = n_head * Dh;
#pragma omp parallel for if ((int64_t)B * T * W >= KF_TRAIN_PAR)
    for (int r = 0; r < B * T; r++) {
        const float *c = cos_t + (int64_t)(r % T) * half, *s = sin_t + (int64_t)(r % T) * half;
        for (int h = 0; h < n_head; h++) {
            float *xh = x + (int64_t)r * W + h * Dh;
            for (int i = 0; i < half; i++) {
                const float a = xh[i], b = xh[i + half], si = sign * s[i];
                xh[i] = a * c[i] - b * si;
                xh[i + half] = b * c[i] + a * si;
            }
        }
    }
}

void kf_train_rope_forward(float *x, const float *cos_t, const float *sin_t, int B, int T, int n_head, int Dh) {
    rope_rotate(x, cos_t, sin_t, B, T, n_head, Dh, 1.0f);
}

void kf_train_rope_backward(float *dx, const float *cos_t, const float *sin_t, int B, int T, int n_head, int Dh) {
    rope_rotate(dx, cos_t, sin_t, B, T, n_head, Dh, -1.0f);
}

// ---- causal grouped-query attention -------------------------------------------------

// Softmax over keys 0..t of row t of a (T, T) score block, zeros after.
static void causal_softmax_rows(float *P, int T) {
    for (int t = 0; t < T; t++) {
        float *p = P + (int64_t)t * T;
        float m = p[0];
        for (int j = 1; j <= t; j++) m = p[j] > m ? p[j] : m;
        float s = 0.0f;
        for (int j = 0; j <= t; j++) s += (p[j] = expf(p[j] - m));
        const float inv = 1.0f / s;
        for (int j = 0; j <= t; j++) p[j] *= inv;
        for (int j = t + 1; j < T; j++) p[j] = 0.0f;
    }
}

void kf_train_ref_attention_forward(float *out, float *probs, const float *q, const float *k, const float *v,
                                    int B, int T, int H, int Hkv, int Dh) {
    const int Q = H * Dh, KV = Hkv * Dh, group = H / Hkv;
    const float scale = 1.0f / sqrtf((float)Dh);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            float *P = probs + ((int64_t)b * H + h) * T * T;
            const int kvh = h / group;
            for (int t = 0; t < T; t++)
                for (int j = 0; j < T; j++) {
                    float s = 0.0f;
                    if (j <= t)
                        for (int d = 0; d < Dh; d++)
                            s += q[((int64_t)b * T + t) * Q + h * Dh + d] * k[((int64_t)b * T + j) * KV + kvh * Dh + d];
                    P[(int64_t)t * T + j] = s * scale;
                }
            causal_softmax_rows(P, T);
            for (int t = 0; t < T; t++)
                for (int d = 0; d < Dh; d++) {
                    float s = 0.0f;
                    for (int j = 0; j <= t; j++)
                        s += P[(int64_t)t * T + j] * v[((int64_t)b * T + j) * KV + kvh * Dh + d];
                    out[((int64_t)b * T + t) * Q + h * Dh + d] = s;
                }
        }
}

void kf_train_attention_forward(float *out, float *probs, const float *q, const float *k, const float *v, int B,
                                int T, int H, int Hkv, int Dh) {
    const int Q = H * Dh, KV = Hkv * Dh, group = H / Hkv;
    const float scale = 1.0f / sqrtf((float)Dh);
    // One (sequence, head) per task; OpenBLAS runs single-threaded inside the region.
#pragma omp parallel for collapse(2) schedule(dynamic, 1) if (B * H > 1)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            const int kvh = h / group;
            const float *qb = q + (int64_t)b * T * Q + h * Dh;    // (T, Dh), row stride Q
            const float *kb = k + (int64_t)b * T * KV + kvh * Dh; // (T, Dh), row stride KV
            const float *vb = v + (int64_t)b * T * KV + kvh * Dh;
            float *ob = out + (int64_t)b * T * Q + h * Dh;
            float *P = probs + ((int64_t)b * H + h) * T * T; // (T, T)
            // P = scale * qb kb^T, then the causal softmax of each row; ob = P vb
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, Dh, scale, qb, Q, kb, KV, 0.0f, P, T);
            causal_softmax_rows(P, T);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, Dh, T, 1.0f, P, T, vb, KV, 0.0f, ob, Q);
        }
}

void kf_train_ref_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *probs,
                                     const float *q, const float *k, const float *v, int B, int T, int H, int Hkv,
                                     int Dh) {
    const int Q = H * Dh, KV = Hkv * Dh, group = H / Hkv;
    const float scale = 1.0f / sqrtf((float)Dh);
    memset(dq, 0, sizeof(float) * (size_t)B * T * Q);
    memset(dk, 0, sizeof(float) * (size_t)B * T * KV);
    memset(dv, 0, sizeof(float) * (size_t)B * T * KV);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            const float *P = probs + ((int64_t)b * H + h) * T * T;
            const int kvh = h / group;
            for (int t = 0; t < T; t++) {
                const float *dor = dout + ((int64_t)b * T + t) * Q + h * Dh;
                // dP_tj = dout_t . v_j;  dS_tj = P_tj (dP_tj - sum_j' P_tj' dP_tj')
                float dP[T], sum = 0.0f;
                for (int j = 0; j <= t; j++) {
                    const float *vj = v + ((int64_t)b * T + j) * KV + kvh * Dh;
                    float s = 0.0f;
                    for (int d = 0; d < Dh; d++) s += dor[d] * vj[d];
                    dP[j] = s;
                    sum += P[(int64_t)t * T + j] * s;
                }
                for (int j = 0; j <= t; j++) {
                    const float p = P[(int64_t)t * T + j], dS = p * (dP[j] - sum) * scale;
                    const int64_t qi = ((int64_t)b * T + t) * Q + h * Dh, kj = ((int64_t)b * T + j) * KV + kvh * Dh;
                    for (int d = 0; d < Dh; d++) {
                        dq[qi + d] += dS * k[kj + d];
                        dk[kj + d] += dS * q[qi + d];
                        dv[kj + d] += p * dor[d];
                    }
                }
            }
        }
}

int64_t kf_train_attention_scratch(int T) { return (int64_t)T * T; }

void kf_train_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *probs,
                                 const float *q, const float *k, const float *v, int B, int T, int H, int Hkv,
                                 int Dh, float *scratch) {
    const int Q = H * Dh, KV = Hkv * Dh, group = H / Hkv;
    const float scale = 1.0f / sqrtf((float)Dh);
    // One (sequence, kv head) per task: the query heads sharing a kv head add
    // into its dk, dv in order, so no two tasks write the same rows.
#pragma omp parallel for collapse(2) schedule(dynamic, 1) if (B * Hkv > 1)
    for (int b = 0; b < B; b++)
        for (int kvh = 0; kvh < Hkv; kvh++) {
            float *dS = scratch + (int64_t)omp_get_thread_num() * kf_train_attention_scratch(T); // (T, T)
            const float *kb = k + (int64_t)b * T * KV + kvh * Dh, *vb = v + (int64_t)b * T * KV + kvh * Dh;
            float *dkb = dk + (int64_t)b * T * KV + kvh * Dh, *dvb = dv + (int64_t)b * T * KV + kvh * Dh;
            for (int t = 0; t < T; t++) {
                memset(dkb + (int64_t)t * KV, 0, sizeof(float) * (size_t)Dh);
                memset(dvb + (int64_t)t * KV, 0, sizeof(float) * (size_t)Dh);
            }
            for (int h = kvh * group; h < (kvh + 1) * group; h++) {
                const float *P = probs + ((int64_t)b * H + h) * T * T;
                const float *qb = q + (int64_t)b * T * Q + h * Dh, *dob = dout + (int64_t)b * T * Q + h * Dh;
                float *dqb = dq + (int64_t)b * T * Q + h * Dh;
                // dv (T, Dh) += P^T dout;  dP (T, T) = dout v^T
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, Dh, T, 1.0f, P, T, dob, Q, 1.0f, dvb, KV);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, Dh, 1.0f, dob, Q, vb, KV, 0.0f, dS, T);
                // dS = P (dP - rowsum(P dP)), causal part only
                for (int t = 0; t < T; t++) {
                    const float *p = P + (int64_t)t * T;
                    float *d = dS + (int64_t)t * T, sum = 0.0f;
                    for (int j = 0; j <= t; j++) sum += p[j] * d[j];
                    for (int j = 0; j <= t; j++) d[j] = p[j] * (d[j] - sum);
                    for (int j = t + 1; j < T; j++) d[j] = 0.0f;
                }
                // dq (T, Dh) = scale dS k;  dk (T, Dh) += scale dS^T q
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, Dh, T, scale, dS, T, kb, KV, 0.0f, dqb, Q);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, Dh, T, scale, dS, T, qb, Q, 1.0f, dkb, KV);
            }
        }
}

// ---- FFN activations ----------------------------------------------------------------

void kf_train_swiglu_forward(float *act, const float *gate, const float *up, int64_t n) {
    // The order runtime's activate() multiplies in: silu(gate) * up.
#pragma omp parallel for if (n >= KF_TRAIN_PAR)
    for (int64_t i = 0; i < n; i++) act[i] = kf_silu(gate[i]) * up[i];
}

void kf_train_swiglu_backward(float *dgate, float *dup, const float *dact, const float *gate, const float *up,
                              int64_t n) {
    // silu(g) = g s(g), s the sigmoid; silu'(g) = s(g) (1 + g (1 - s(g)))
#pragma omp parallel for if (n >= KF_TRAIN_PAR)
    for (int64_t i = 0; i < n; i++) {
        const float g = gate[i], s = 1.0f / (1.0f + expf(-g));
        dup[i] = dact[i] * g * s;
        dgate[i] = dact[i] * up[i] * s * (1.0f + g * (1.0f - s));
    }
}

void kf_train_gelu_forward(float *act, const float *pre, int64_t n) {
#pragma omp parallel for if (n >= KF_TRAIN_PAR)
    for (int64_t i = 0; i < n; i++) act[i] = kf_gelu_tanh(pre[i]);
}

void kf_train_gelu_backward(float *dpre, const float *dact, const float *pre, int64_t n) {
    // gelu(x) = 0.5 x (1 + tanh u), u = k (x + 0.044715 x^3):
    //   gelu'(x) = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) k (1 + 3 * 0.044715 x^2)
    const float k = 0.7978845608028654f;
#pragma omp parallel for if (n >= KF_TRAIN_PAR)
    for (int64_t i = 0; i < n; i++) {
        const float x = pre[i], th = tanhf(k * (x + 0.044715f * x * x * x));
        dpre[i] = dact[i] * (0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * k * (1.0f + 0.134145f * x * x));
    }
}

void kf_train_relu_forward(float *act, const float *pre, int64_t n) {
#pragma omp parallel for if (n >= KF_TRAIN_PAR)
    for (int64_t i = 0; i < n; i++) act[i] = pre[i] > 0 ? pre[i] : 0;
}

void kf_train_relu_backward(float *d, const float *act, int64_t n) {
#pragma omp parallel for if (n >= KF_TRAIN_PAR)
    for (int64_t i = 0; i < n; i++)
        if (!(act[i] > 0)) d[i] = 0;
}

// ---- mixture-of-experts gate ------------------------------------------------------------

void kf_train_moe_select(float *mask, const float *scores, int N, int E, int top_k, float coverage, int *scratch) {
    int *sel = scratch, *order = scratch + E;
    for (int r = 0; r < N; r++) {
        float *mr = mask + (int64_t)r * E;
        memset(mr, 0, sizeof(float) * (size_t)E);
        const int k = kf_moe_select(scores + (int64_t)r * E, E, top_k, coverage, sel, order);
        for (int i = 0; i < k; i++) mr[sel[i]] = 1.0f;
    }
}

void kf_train_ref_moe_gate_forward(float *act_sel, const float *act, const float *mask, int N, int F, int E) {
    const int S = F / E;
    for (int r = 0; r < N; r++)
        for (int j = 0; j < F; j++)
            act_sel[(int64_t)r * F + j] = mask[(int64_t)r * E + j / S] * act[(int64_t)r * F + j];
}

void kf_train_moe_gate_forward(float *act_sel, const float *act, const float *mask, int N, int F, int E) {
    const int S = F / E;
    // Whole experts: a copy or a clear of S contiguous floats.
#pragma omp parallel for if ((int64_t)N * F >= KF_TRAIN_PAR)
    for (int r = 0; r < N; r++)
        for (int e = 0; e < E; e++) {
            const int64_t o = (int64_t)r * F + (int64_t)e * S;
            if (mask[(int64_t)r * E + e] != 0.0f) memcpy(act_sel + o, act + o, sizeof(float) * (size_t)S);
            else memset(act_sel + o, 0, sizeof(float) * (size_t)S);
        }
}

// g (E) = softmax(s (E)), in double.
static void softmax_row(double *g, const float *s, int E) {
    float mx = s[0];
    for (int e = 1; e < E; e++) mx = s[e] > mx ? s[e] : mx;
    double z = 0;
    for (int e = 0; e < E; e++) z += (g[e] = exp((double)s[e] - mx));
    for (int e = 0; e < E; e++) g[e] /= z;
}

void kf_train_ref_moe_gate_backward(float *d, float *dscores, const float *act, const float *mask,
                                    const float *scores, int N, int F, int E) {
    const int S = F / E;
    for (int r = 0; r < N; r++) {
        float *dr = d + (int64_t)r * F;
        const float *ar = act + (int64_t)r * F, *mr = mask + (int64_t)r * E;
        if (scores) {
            double delta[E], g[E], mean = 0;
            for (int e = 0; e < E; e++) delta[e] = 0;
            for (int j = 0; j < F; j++) delta[j / S] += (double)dr[j] * ar[j];
            softmax_row(g, scores + (int64_t)r * E, E);
            for (int e = 0; e < E; e++) mean += g[e] * delta[e];
            for (int i = 0; i < E; i++) dscores[(int64_t)r * E + i] = (float)(g[i] * (delta[i] - mean));
        }
        for (int j = 0; j < F; j++) dr[j] *= mr[j / S];
    }
}

void kf_train_moe_gate_backward(float *d, float *dscores, const float *act, const float *mask, const float *scores,
                                int N, int F, int E) {
    const int S = F / E;
#pragma omp parallel for if ((int64_t)N * F >= KF_TRAIN_PAR)
    for (int r = 0; r < N; r++) {
        float *dr = d + (int64_t)r * F;
        const float *ar = act + (int64_t)r * F, *mr = mask + (int64_t)r * E;
        double g[E > 0 ? E : 1], mean = 0;
        if (scores) softmax_row(g, scores + (int64_t)r * E, E);
        for (int e = 0; e < E; e++) {
            float *de = dr + (int64_t)e * S;
            if (scores) { // delta_e: one dot product of the expert's S contiguous neurons
                const float *ae = ar + (int64_t)e * S;
                float dot = 0.0f;
                for (int j = 0; j < S; j++) dot += de[j] * ae[j];
                dscores[(int64_t)r * E + e] = dot;
                mean += g[e] * dot;
            }
            if (mr[e] == 0.0f) memset(de, 0, sizeof(float) * (size_t)S);
        }
        if (scores)
            for (int i = 0; i < E; i++) {
                float *ds = dscores + (int64_t)r * E + i;
                *ds = (float)(g[i] * (*ds - mean));
            }
    }
}

// ---- embeddings --------------------------------------------------------------------

void kf_train_embed_forward(float *out, const int32_t *tokens, const float *tok, const float *pos, int N, int T,
                            int C) {
    for (int r = 0; r < N; r++) {
        float *o = out + (int64_t)r * C;
        memcpy(o, tok + (int64_t)tokens[r] * C, sizeof(float) * (size_t)C);
        if (pos)
            for (int i = 0; i < C; i++) o[i] += pos[(int64_t)(r % T) * C + i];
    }
}

void kf_train_embed_backward(float *dtok, float *dpos, const float *dout, const int32_t *tokens, int N, int T,
                             int C) {
    // Rows in order (a token may repeat): the same sums at any thread count.
    for (int r = 0; r < N; r++) {
        const float *d = dout + (int64_t)r * C;
        if (dtok)
            for (int i = 0; i < C; i++) dtok[(int64_t)tokens[r] * C + i] += d[i];
        if (dpos)
            for (int i = 0; i < C; i++) dpos[(int64_t)(r % T) * C + i] += d[i];
    }
}

// ---- objective -----------------------------------------------------------------------

double kf_train_distill_loss(float *dlogits, const float *logits, const float *teacher, const int32_t *targets,
                             float kl_weight, float ce_weight, double n_div, int N, int V, double *kl_sum,
                             double *ce_sum) {
    double kl_all = 0.0, ce_all = 0.0;
#pragma omp parallel for reduction(+ : kl_all, ce_all) if ((int64_t)N * V >= KF_TRAIN_PAR)
    for (int r = 0; r < N; r++) {
        const float *z = logits + (int64_t)r * V;
        float *dz = dlogits + (int64_t)r * V;
        // log-sum-exp of the student's row: p_i = exp(z_i - lse)
        float m = z[0];
        for (int i = 1; i < V; i++) m = z[i] > m ? z[i] : m;
        double s = 0.0;
        for (int i = 0; i < V; i++) s += expf(z[i] - m);
        const double lse = m + log(s);
        for (int i = 0; i < V; i++) dz[i] = (float)exp(z[i] - lse);
        const int y = targets ? targets[r] : -1;
        const float w_ce = y >= 0 ? ce_weight : 0.0f;
        if (y >= 0) ce_all += lse - z[y];
        if (!teacher) {
            // d/dz of w_ce (-log p_y) = w_ce (p - onehot(y))
            for (int i = 0; i < V; i++) dz[i] *= (float)(w_ce / n_div);
            if (y >= 0) dz[y] -= (float)(w_ce / n_div);
            continue;
        }
        const float *zt = teacher + (int64_t)r * V;
        float mt = zt[0];
        for (int i = 1; i < V; i++) mt = zt[i] > mt ? zt[i] : mt;
        double st = 0.0;
        for (int i = 0; i < V; i++) st += expf(zt[i] - mt);
        const double lset = mt + log(st);
        // KL(pt || p) = sum pt (log pt - log p); d/dz = p - pt
        double kl = 0.0;
        for (int i = 0; i < V; i++) {
            const double lpt = zt[i] - lset, pt = exp(lpt), p = dz[i];
            kl += pt * (lpt - (z[i] - lse));
            dz[i] = (float)(((kl_weight + w_ce) * p - kl_weight * pt) / n_div);
        }
        if (y >= 0) dz[y] -= (float)(w_ce / n_div);
        kl_all += kl;
    }
    if (kl_sum) *kl_sum = kl_all;
    if (ce_sum) *ce_sum = ce_all;
    return (kl_weight * kl_all + ce_weight * ce_all) / n_div;
}
