// The forward pass: batched prefill (B sequences of T tokens, through BLAS
// sgemm) and single-token decode with a KV cache.
//
// Hook points let later stages (statistics, probes, ablations) read or edit
// activations per layer. With no hook set, the forward pass does no extra work.
#ifndef KF_RUNTIME_FORWARD_H
#define KF_RUNTIME_FORWARD_H

#include <stdint.h>

#include "core/status.h"
#include "model/model.h"

typedef enum {
    KF_HOOK_BLOCK_IN = 0, // residual stream entering block l      (N, C)
    KF_HOOK_ATTN_OUT,     // attention output after wo (+bo)        (N, C)
    KF_HOOK_FFN_IN,       // normalised input of the FFN            (N, C)
    KF_HOOK_FFN_ACT,      // neuron activations entering w_down     (N, n_ff of layer l)
    KF_HOOK_FFN_OUT,      // FFN output after w_down (+b_down)      (N, C)
    KF_HOOK_BLOCK_OUT,    // residual stream leaving block l        (N, C)
    KF_HOOK_COUNT,
} kf_hook_point;

// x holds n rows of dim floats (row r = token r of the batch, sequences laid
// out one after another: row = b*T + t). The hook may modify x in place.
typedef void (*kf_hook_fn)(void *user, int layer, kf_hook_point point, float *x, int n, int dim);

typedef struct kf_ctx kf_ctx;

// Workspace for one model: activation buffers for up to max_tokens rows per
// prefill call (B*T), and a KV cache of kv_len positions for one sequence
// (0 = no cache, prefill only). All memory is allocated here, none later.
kf_status kf_ctx_init(kf_ctx **out, const kf_model *m, int max_tokens, int kv_len, kf_error *err);
void kf_ctx_free(kf_ctx *ctx);

// Installs a hook for the given points (bit mask of 1u << kf_hook_point);
// fn NULL removes it.
void kf_ctx_set_hook(kf_ctx *ctx, kf_hook_fn fn, void *user, unsigned points);

// Prefill runs blocks [first, end) only (default all; decode always runs
// all). With first > 0 the residual stream entering block first is the
// embedding of the tokens until a KF_HOOK_BLOCK_IN hook of that layer writes
// the real one into x (e.g. cached from an earlier pass); with end <
// n_layer the pass stops after block end-1 and gives no logits.
kf_status kf_ctx_set_layers(kf_ctx *ctx, int first, int end, kf_error *err);

// Prefill: tokens (B, T), each sequence at positions 0..T-1. Writes logits
// (B, T, V) when logits is non-NULL. When B == 1 and the context has a KV
// cache of at least T positions, the cache is filled for positions 0..T-1 so
// decoding can continue at position T.
kf_status kf_forward_prefill(kf_ctx *ctx, const int32_t *tokens, int B, int T, float *logits, kf_error *err);

// Decode one token at position pos (0 <= pos < kv_len), attending to cached
// positions 0..pos-1; writes logits (V).
kf_status kf_forward_decode(kf_ctx *ctx, int32_t token, int pos, float *logits, kf_error *err);

// Share of FFN neurons computed per token so far, over all calls and layers:
// below 1 only for mixture-of-experts layers, whose unselected experts are
// skipped (1.0 before any call).
double kf_ctx_ffn_share(const kf_ctx *ctx);

#endif
