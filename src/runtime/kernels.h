// Compute kernels of the forward pass.
//
// Each operation has a plain reference version (kf_ref_*: loops that define
// what it computes, used by tests) and, where it matters for speed, an
// optimised version beside it (BLAS sgemm for prefill matmuls, AVX2/AVX-512 +
// OpenMP matvec for decode, parallel online-softmax attention). The cheap
// row-wise operations (norms, RoPE, activations) have one version only.
//
// Layout conventions: weights W (OC, C) row-major, activations X (N, C)
// row-major (one token per row), y = W x.
#ifndef KF_RUNTIME_KERNELS_H
#define KF_RUNTIME_KERNELS_H

#include <stdbool.h>
#include <stdint.h>

// ---- reference kernels --------------------------------------------------------

// y (OC) = W (OC, C) x (C)
void kf_ref_matvec(float *y, const float *W, const float *x, int OC, int C);
// Y (N, OC) = X (N, C) W^T, W (OC, C)
void kf_ref_matmul(float *Y, const float *X, const float *W, int N, int C, int OC);
// y (n) += W^T a: y[c] += sum over r < R of a[r] W[r * ldw + c], W holding R
// rows of at least n floats (row stride ldw).
void kf_ref_matvec_t(float *y, const float *W, const float *a, int R, int n, int64_t ldw);
// Causal attention, reference: see kf_attention for the layout. scores must
// hold pos0 + T floats.
void kf_ref_attention(float *out, const float *q, const float *k, const float *v, int B, int T, int pos0, int H,
                      int Hkv, int Dh, int64_t kv_seq_rows, float *scores);
// Rotate-half RoPE on x (n_head * Dh) at position pos, angles computed directly.
void kf_ref_rope(float *x, int n_head, int Dh, int pos, float theta);
// In place: x (n) = softmax(x)
void kf_ref_softmax(float *x, int n);

// ---- row-wise kernels (single version) -------------------------------------------

// y (C) = x / rms(x) * w; y may alias x.
void kf_rmsnorm(float *y, const float *x, const float *w, int C, float eps);
// y (C) = (x - mean) / std * w + b; y may alias x; b may be NULL.
void kf_layernorm(float *y, const float *x, const float *w, const float *b, int C, float eps);
// cos/sin tables (n_pos, Dh/2): angle(p, i) = p * theta^(-2i/Dh), in double.
void kf_rope_table(float *cos_t, float *sin_t, int n_pos, int Dh, float theta);
// Rotate-half RoPE on x (n_head * Dh) with the table rows of one position:
// x[i], x[i + Dh/2] = x[i] c - x[i + Dh/2] s, x[i + Dh/2] c + x[i] s.
void kf_rope(float *x, int n_head, int Dh, const float *cos_p, const float *sin_p);
float kf_silu(float x);      // x * sigmoid(x)
float kf_gelu_tanh(float x); // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))

// ---- optimised kernels -------------------------------------------------------

// FFN activation in place, one thread: act (n) = f(gate) * act when gate is
// non-NULL, else f(act); f = SiLU, or tanh-GELU when gelu. AVX2 with a
// polynomial e^x: within a few 1e-7 relative of kf_silu / kf_gelu_tanh.
void kf_activate(float *act, const float *gate, int64_t n, bool gelu);
// Y (N, OC) = X (N, C) W^T through cblas_sgemm.
void kf_matmul(float *Y, const float *X, const float *W, int N, int C, int OC);
// y (OC) = W (OC, C) x (C), OpenMP over rows; picks AVX-512 when the CPU has it.
void kf_matvec(float *y, const float *W, const float *x, int OC, int C);
// The two SIMD variants, exposed for tests; kf_matvec_avx512 needs a CPU with
// AVX-512F (kf_cpu_has_avx512()).
void kf_matvec_avx2(float *y, const float *W, const float *x, int OC, int C);
// Dot product of n floats (AVX2/FMA, two accumulators, scalar tail).
float kf_dot(const float *a, const float *b, int n);
void kf_matvec_avx512(float *y, const float *W, const float *x, int OC, int C);
int kf_cpu_has_avx512(void);
// y (n) += W^T a as kf_ref_matvec_t (AVX2/FMA, single thread): four rows of W
// per pass over y, so y stays in L1 and W streams front to back.
void kf_matvec_t(float *y, const float *W, const float *a, int R, int n, int64_t ldw);

// Causal attention with grouped K/V heads, scale 1/sqrt(Dh).
// B sequences of T queries each; query t of sequence b sits at position
// pos0 + t and attends to keys 0..pos0+t of its own sequence.
//   q, out (B*T, H*Dh): row b*T + t
//   k, v: sequence b starts at row b*kv_seq_rows, rows of Hkv*Dh floats
// Query head h reads kv head h / (H / Hkv). Parallel over (sequence, head),
// online softmax (no scratch memory).
void kf_attention(float *out, const float *q, const float *k, const float *v, int B, int T, int pos0, int H,
                  int Hkv, int Dh, int64_t kv_seq_rows);

#endif
