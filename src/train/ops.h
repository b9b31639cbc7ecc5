// Forward and backward of each operation of the training pass, llm.c style:
// one readable pair per operation, activations passed in and out, gradients
// accumulated (+=) into the caller's buffers unless said otherwise. The
// matmul and attention have a plain reference version (kf_train_ref_*,
// loops that define the maths, used by tests) beside the optimised one
// (cblas_sgemm, OpenMP); the row-wise operations have one version.
//
// Notation: N rows (B sequences of T tokens, row = b*T + t), C input
// features, OC output features, H query heads and Hkv key/value heads of Dh,
// Q = H*Dh, KV = Hkv*Dh, F FFN width of the layer, V vocabulary.
#ifndef KF_TRAIN_OPS_H
#define KF_TRAIN_OPS_H

#include <stdint.h>

// ---- matmul ---------------------------------------------------------------------

// out (N, OC) = inp (N, C) W^T + b; W (OC, C), b (OC) or NULL.
void kf_train_matmul_forward(float *out, const float *inp, const float *W, const float *b, int N, int C, int OC);
void kf_train_ref_matmul_forward(float *out, const float *inp, const float *W, const float *b, int N, int C,
                                 int OC);
// dinp (N, C) += dout (N, OC) W;  dW (OC, C) += dout^T inp;  db (OC) += sum over rows of dout.
// Any of dinp, dW, db may be NULL (not needed).
void kf_train_matmul_backward(float *dinp, float *dW, float *db, const float *dout, const float *inp,
                              const float *W, int N, int C, int OC);
void kf_train_ref_matmul_backward(float *dinp, float *dW, float *db, const float *dout, const float *inp,
                                  const float *W, int N, int C, int OC);

// ---- norms ----------------------------------------------------------------------

// out (N, C) = inp / rms(inp) * w, the rounding of runtime's kf_rmsnorm; rstd (N) kept for backward.
void kf_train_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *w, int N, int C, float eps);
// dinp (N, C) += ..., dw (C) += ... (dw may be NULL).
void kf_train_rmsnorm_backward(float *dinp, float *dw, const float *dout, const float *inp, const float *w,
                               const float *rstd, int N, int C);
// out (N, C) = (inp - mean) * rstd * w + b, as runtime's kf_layernorm; mean, rstd (N) kept.
void kf_train_layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *w,
                                const float *b, int N, int C, float eps);
// dinp += ..., dw (C) += ..., db (C) += ... (dw, db may be NULL).
void kf_train_layernorm_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                                 const float *w, const float *mean, const float *rstd, int N, int C);

// ---- rotate-half RoPE -------------------------------------------------------------

// In place on x (B*T, n_head*Dh): row b*T + t rotated by the table row of position t
// (cos_t, sin_t (T, Dh/2), runtime's kf_rope_table). Backward rotates by the
// opposite angle (the transpose of the rotation).
void kf_train_rope_forward(float *x, const float *cos_t, const float *sin_t, int B, int T, int n_head, int Dh);
void kf_train_rope_backward(float *dx, const float *cos_t, const float *sin_t, int B, int T, int n_head, int Dh);

// ---- causal grouped-query attention -------------------------------------------------

// out (N, Q) = softmax(q k^T / sqrt(Dh), causal) v per sequence and head; query
// head h reads kv head h / (H / Hkv). q (N, Q), k, v (N, KV).
// probs (B, H, T, T) keeps the softmax (zero above the diagonal) for backward.
void kf_train_attention_forward(float *out, float *probs, const float *q, const float *k, const float *v, int B,
                                int T, int H, int Hkv, int Dh);
void kf_train_ref_attention_forward(float *out, float *probs, const float *q, const float *k, const float *v,
                                    int B, int T, int H, int Hkv, int Dh);
// dq (N, Q), dk, dv (N, KV) are written (not accumulated). scratch holds
// kf_train_attention_scratch(T) floats per OpenMP thread.
void kf_train_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *probs,
                                 const float *q, const float *k, const float *v, int B, int T, int H, int Hkv,
                                 int Dh, float *scratch);
void kf_train_ref_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *probs,
                                     const float *q, const float *k, const float *v, int B, int T, int H, int Hkv,
                                     int Dh);
int64_t kf_train_attention_scratch(int T);

// ---- FFN activations ----------------------------------------------------------------

// act (n) = silu(gate) * up (SwiGLU).
void kf_train_swiglu_forward(float *act, const float *gate, const float *up, int64_t n);
// dgate (n), dup (n) written from dact.
void kf_train_swiglu_backward(float *dgate, float *dup, const float *dact, const float *gate, const float *up,
                              int64_t n);
// act (n) = gelu_tanh(pre).
void kf_train_gelu_forward(float *act, const float *pre, int64_t n);
// dpre (n) written from dact.
void kf_train_gelu_backward(float *dpre, const float *dact, const float *pre, int64_t n);

// act (n) = max(pre, 0) (an MLP router's hidden layer).
void kf_train_relu_forward(float *act, const float *pre, int64_t n);
// In place: d (n) *= (act > 0), act the forward's output.
void kf_train_relu_backward(float *d, const float *act, int64_t n);

// ---- mixture-of-experts gate (MoE layers, runtime/moe.h) ----------------------------
//
// E experts of S = F / E consecutive neurons; e(j) = j / S. The forward is the
// function the runtime computes: the experts kf_moe_select picks from the
// router's scores keep their activations, the others are zeroed,
//   act_sel[r, j] = mask[r, e(j)] act[r, j],   mask in {0, 1}.
// The backward is that of the straight-through relaxation (docs/moe-training.md):
// the mask keeps its hard value but differentiates as the softmax of the scores,
//   m = mask + g - stopgrad(g),   g = softmax(scores[r]),
// so with delta_e = sum_{j in e} dact_sel[r, j] act[r, j] (d loss / d m_e: the
// first-order change of the loss from adding or removing expert e),
//   dscores[r, i] = g_i (delta_i - sum_e g_e delta_e),   dact[r, j] = mask[r, e(j)] dact_sel[r, j].

// mask (N, E) = 1 for the experts kf_moe_select picks from scores (N, E) (top_k > 0: the
// k best; else dynamic-k with coverage), 0 elsewhere; scratch holds 2 E ints.
void kf_train_moe_select(float *mask, const float *scores, int N, int E, int top_k, float coverage, int *scratch);
// act_sel (N, F) = act masked as above.
void kf_train_moe_gate_forward(float *act_sel, const float *act, const float *mask, int N, int F, int E);
void kf_train_ref_moe_gate_forward(float *act_sel, const float *act, const float *mask, int N, int F, int E);
// In place: d (N, F) holds d loss / d act_sel on entry and d loss / d act on
// return; dscores (N, E) is written (scores NULL: the selection has no
// gradient, as the oracle router's, and dscores is not touched).
void kf_train_moe_gate_backward(float *d, float *dscores, const float *act, const float *mask, const float *scores,
                                int N, int F, int E);
void kf_train_ref_moe_gate_backward(float *d, float *dscores, const float *act, const float *mask,
                                    const float *scores, int N, int F, int E);

// ---- embeddings --------------------------------------------------------------------

// out (N, C) = tok[tokens[r]] (+ pos[r % T] when pos is non-NULL).
void kf_train_embed_forward(float *out, const int32_t *tokens, const float *tok, const float *pos, int N, int T,
                            int C);
// dtok (V, C) += scatter of dout rows (dtok may be NULL); dpos (T, C) += ... (may be NULL).
void kf_train_embed_backward(float *dtok, float *dpos, const float *dout, const int32_t *tokens, int N, int T,
                             int C);

// ---- objective -----------------------------------------------------------------------

// Per row r of logits (N, V): the student distribution p = softmax(logits[r]);
//   kl_weight * KL(softmax(teacher[r]) || p)   when teacher is non-NULL,
//   ce_weight * -log p[targets[r]]            when targets[r] >= 0 (targets may be NULL).
// Returns the sum over rows of the weighted terms, divided by n_div (the
// caller's normaliser, > 0); writes dlogits (N, V) = its gradient. Sums in
// double. kl_sum / ce_sum (may be NULL) receive the unweighted sums.
double kf_train_distill_loss(float *dlogits, const float *logits, const float *teacher, const int32_t *targets,
                             float kl_weight, float ce_weight, double n_div, int N, int V, double *kl_sum,
                             double *ce_sum);

#endif
