// The feed-forward step of a mixture-of-experts layer (kf_layer.n_expert > 0,
// made by `kfuse moefy`), called by the forward pass in place of the dense FFN.
//
// Expert e owns neurons [e*S, (e+1)*S) of the layer (S = F / E): rows of
// w_gate/w_up/b_up and columns of w_down, so the weights keep the standard
// dense layout on disk and in memory. Per token the router scores the E
// experts (kf_router_kind in model.h) and selects top-k, or the fewest
// experts covering a share of the positive scores; unselected experts'
// activations are zero, and the output is
//   y (C) = sum over selected e of w_down[:, e] act_e + b_down.
//
// Decode (one row): the router runs, then only the selected slices are read:
// gate/up rows of expert e are one contiguous (S, C) block, multiplied with
// the optimised kf_matvec. The down columns of an expert are not contiguous
// in the standard (C, F) w_down, and reading C runs of S floats per expert
// streamed at half the speed of the gate/up blocks (bench/RESULTS.md). So the
// workspace keeps w_down transposed to (F, C), made once from the model when
// the workspace is created: expert e's down projection is then the
// contiguous (S, C) block of rows [eS, (e+1)S), read front to back by
// kf_matvec_t. Files keep the standard layout; the model's own w_down is not
// read by the forward pass of a MoE layer, so with mmapped weights its pages
// are never loaded.
// Prefill (N rows): tokens are grouped by expert and each expert runs one
// sgemm on its gathered rows (on the transposed down block), so the work is
// the selected share of the dense work. The masked dense path
// (full sgemm, unselected activations zeroed) is kept for the oracle router,
// which needs every expert's output anyway, and is exposed for the benchmark
// that compares the two (bench/bench_moe.c).
#ifndef KF_RUNTIME_MOE_H
#define KF_RUNTIME_MOE_H

#include <stdint.h>

#include "core/status.h"
#include "model/model.h"

typedef struct kf_moe_ws kf_moe_ws;

// Workspace for N <= max_tokens rows of every MoE layer of m (NULL-safe free).
kf_status kf_moe_ws_init(kf_moe_ws **out, const kf_model *m, int max_tokens, kf_error *err);
void kf_moe_ws_free(kf_moe_ws *ws);

// FFN of MoE layer L on N rows: xn (N, C) normalised input; act (N, F) and
// gate (N, F) scratch, act left holding the activations that entered w_down
// (zero for unselected experts); out (N, C) the FFN output (+ b_down).
// Returns the number of neurons of the selected experts, summed over rows.
int64_t kf_moe_ffn(kf_moe_ws *ws, const kf_model *m, const kf_layer *L, const float *xn, int N, float *act, float *gate,
                float *out);

// The two prefill strategies, for the benchmark; kf_moe_ffn picks grouped
// for N > 1 (masked for the oracle router).
int64_t kf_moe_ffn_grouped(kf_moe_ws *ws, const kf_model *m, const kf_layer *L, const float *xn, int N, float *act,
                           float *gate, float *out);
int64_t kf_moe_ffn_masked(kf_moe_ws *ws, const kf_model *m, const kf_layer *L, const float *xn, int N, float *act,
                          float *gate, float *out);

// Router scores (N, E) of L for xn (N, C) (linear and MLP routers only);
// hidden (N, Hr) is scratch for an MLP router.
void kf_moe_router_scores(const kf_layer *L, const float *xn, int N, float *scores, float *hidden);

// Selection from one token's scores (E): writes the chosen experts in
// increasing index order to sel and returns their count. top_k > 0: the k
// highest scores (ties to the lower index); else the fewest experts, taken by
// decreasing score, whose max(score, 0) sum reaches coverage * the total (at
// least one). order (E) is scratch.
int kf_moe_select(const float *scores, int E, int top_k, float coverage, int *sel, int *order);

// Per-expert output norms (N, E): contrib[r, e] = ||w_down[:, eS:(e+1)S] act_e(r)||
// for w_down (C, F) and activations act (N, F); y (N, C) scratch.
void kf_moe_expert_norms(const float *w_down, int C, int F, int E, const float *act, int N, float *contrib, float *y);

#endif
