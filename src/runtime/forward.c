// The forward pass of a decoder-only transformer, for both families kfuse
// knows (see model.h):
//
//   Llama:  x = tok_embd[token]
//           per layer:  h = rmsnorm(x) * w
//                       q, k, v = wq h, wk h, wv h (+ biases);  rope(q), rope(k)
//                       x += wo attention(q, k, v)
//                       h = rmsnorm(x) * w2
//                       x += w_down (silu(w_gate h) * (w_up h))
//           logits = lm_head rmsnorm(x)
//   GPT-2:  x = tok_embd[token] + pos_embd[pos]; LayerNorm with bias instead
//           of RMSNorm; no RoPE; FFN w_down gelu_tanh(w_up h + b_up) + b_down.
//
// Notation in comments: N rows = tokens of this call (B sequences of T),
// C = n_embd, H/Hkv heads of Dh, Q = H*Dh, KV = Hkv*Dh, F = n_ff of the layer.
#include "runtime/forward.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/kernels.h"
#include "runtime/matvec_dtype.h"
#include "runtime/moe.h"

// Cheap element-wise loops (norms, RoPE, residual adds, biases) are memory
// bound: they run in parallel only from this many elements on, since every
// parallel region ends in a barrier that costs more than a small loop.
#define KF_PAR_ELEMS (1 << 20)
// The FFN activation (one exp or tanh per element) pays off sooner.
#define KF_PAR_ACT (1 << 15)
// Prefill with weights kept in F16/BF16/Q8_0 decodes up to this many floats
// of a weight at a time for sgemm (64 MB). Fewer, larger sgemm calls pack the
// activations fewer times: on 11008 x 4096 BF16 with 256 rows, tiles of 2^20
// floats reached a third of fp32 sgemm's rate, 2^24 about the same
// (bench/bench_dtype_kernels.c, bench/RESULTS.md).
#define KF_TILE_FLOATS (1 << 24)

struct kf_ctx {
    const kf_model *m;
    int max_tokens; // rows per call
    int kv_len;     // positions in the KV cache (0: none)
    int max_ff;     // widest FFN over layers: the FFN buffers fit every layer

    // activations, max_tokens rows each
    float *x;        // (N, C) residual stream
    float *xn;       // (N, C) normalised input of attention or FFN
    float *q;        // (N, Q)
    float *k, *v;    // (N, KV)
    float *att;      // (N, Q) attention output, before wo
    float *proj;     // (N, C) output of wo or w_down
    float *gate;     // (N, F) w_gate h
    float *act;      // (N, F) w_up h, then the activations entering w_down

    float *k_cache, *v_cache;   // (n_layer, kv_len, KV)
    float *rope_cos, *rope_sin; // (n_pos, Dh/2), RoPE models only
    kf_moe_ws *moe;             // mixture-of-experts layers only (runtime/moe.h)
    // weights kept in F16/BF16/Q8_0 only (matvec_dtype.h)
    void *xs;                   // the activation as a decode kernel wants it (kf_matvec_dt_scratch)
    float *tile;                // (tile_floats) fp32 rows of a weight for prefill
    int64_t tile_floats;
    int64_t ffn_used, ffn_all;  // FFN neurons computed / present, summed over rows and layers

    kf_hook_fn hook;
    void *hook_user;
    unsigned hook_points;
    int layer_first, layer_end; // blocks a prefill runs: [layer_first, layer_end)
};

// n = a * b * c floats, false on overflow or beyond 2^40 floats.
static bool size3(int64_t a, int64_t b, int64_t c, int64_t *n) {
    int64_t ab;
    if (a < 0 || b < 0 || c < 0 || __builtin_mul_overflow(a, b, &ab) || __builtin_mul_overflow(ab, c, n)) return false;
    return *n <= ((int64_t)1 << 40);
}

static float *alloc_floats(int64_t n) {
    size_t bytes = ((size_t)(n > 0 ? n : 1) * sizeof(float) + 63) & ~(size_t)63;
    float *p = aligned_alloc(64, bytes);
    if (p) memset(p, 0, bytes);
    return p;
}

// Weights may be F16/BF16/Q8_0 only where the forward pass dispatches on
// dtype: 2-D weights of dense layers and the embeddings/head (model.h).
static kf_status check_dtypes(const kf_model *m, bool *kept, kf_error *err) {
    int n = kf_model_list_tensors(m, NULL, 0);
    kf_named_tensor *ts = malloc(sizeof *ts * (size_t)(n > 0 ? n : 1));
    if (!ts) return kf_error_set(err, KF_ERR_NOMEM, "forward: out of memory");
    kf_model_list_tensors(m, ts, n);
    kf_status s = KF_OK;
    *kept = false;
    for (int i = 0; i < n && s == KF_OK; i++) {
        const kf_tensor *t = ts[i].t;
        if (t->dtype == KF_DTYPE_F32) continue;
        *kept = true;
        bool ok = t->ndim == 2 && t->dtype < KF_DTYPE_COUNT && (ts[i].layer < 0 || m->layers[ts[i].layer].n_expert == 0) &&
                  (t->dtype != KF_DTYPE_Q8_0 || kf_tensor_row_len(t) % 32 == 0);
        if (!ok)
            s = kf_error_set(err, KF_ERR_ARG, "forward: tensor %s is stored as %s, which the forward pass reads only for "
                             "2-D weights of dense layers", ts[i].name, kf_dtype_name(t->dtype));
    }
    free(ts);
    return s;
}

kf_status kf_ctx_init(kf_ctx **out, const kf_model *m, int max_tokens, int kv_len, kf_error *err) {
    *out = NULL;
    if (!m) return kf_error_set(err, KF_ERR_ARG, "forward: no model");
    if (max_tokens < 1 || kv_len < 0)
        return kf_error_set(err, KF_ERR_ARG, "forward: bad context size (max_tokens %d, kv_len %d)", max_tokens,
                            kv_len);
    kf_status s = kf_model_validate(m, m->path[0] ? m->path : "model", err);
    if (s != KF_OK) return s;
    bool kept = false;
    if ((s = check_dtypes(m, &kept, err)) != KF_OK) return s;

    kf_ctx *c = calloc(1, sizeof *c);
    if (!c) return kf_error_set(err, KF_ERR_NOMEM, "forward: out of memory");
    c->m = m;
    c->layer_end = m->n_layer;
    c->max_tokens = max_tokens;
    c->kv_len = kv_len;
    for (int l = 0; l < m->n_layer; l++)
        if (m->layers[l].n_ff > c->max_ff) c->max_ff = m->layers[l].n_ff;

    const int64_t C = m->n_embd, Q = (int64_t)m->n_head * m->head_dim, KV = (int64_t)m->n_head_kv * m->head_dim;
    const int n_pos = max_tokens > kv_len ? max_tokens : kv_len;
    int64_t n_x, n_q, n_kv, n_ff, n_cache, n_rope = 0;
    bool ok = size3(max_tokens, C, 1, &n_x) && size3(max_tokens, Q, 1, &n_q) && size3(max_tokens, KV, 1, &n_kv) &&
              size3(max_tokens, c->max_ff, 1, &n_ff) && size3(m->n_layer, kv_len, KV, &n_cache) &&
              (m->pos != KF_POS_ROPE || size3(n_pos, m->head_dim / 2, 1, &n_rope));
    if (!ok) {
        kf_ctx_free(c);
        return kf_error_set(err, KF_ERR_ARG, "forward: context too large (max_tokens %d, kv_len %d)", max_tokens,
                            kv_len);
    }
    c->x = alloc_floats(n_x);
    c->xn = alloc_floats(n_x);
    c->proj = alloc_floats(n_x);
    c->q = alloc_floats(n_q);
    c->att = alloc_floats(n_q);
    c->k = alloc_floats(n_kv);
    c->v = alloc_floats(n_kv);
    c->gate = alloc_floats(n_ff);
    c->act = alloc_floats(n_ff);
    c->k_cache = alloc_floats(n_cache);
    c->v_cache = alloc_floats(n_cache);
    c->rope_cos = alloc_floats(n_rope);
    c->rope_sin = alloc_floats(n_rope);
    if (!c->x || !c->xn || !c->proj || !c->q || !c->att || !c->k || !c->v || !c->gate || !c->act || !c->k_cache ||
        !c->v_cache || !c->rope_cos || !c->rope_sin) {
        kf_ctx_free(c);
        return kf_error_set(err, KF_ERR_NOMEM, "forward: out of memory for a context of %d tokens", max_tokens);
    }
    if (kept) { // rows of every weight: C, Q (wo) or F (w_down) values
        int64_t max_in = C > Q ? C : Q;
        if (c->max_ff > max_in) max_in = c->max_ff;
        int64_t largest = 0; // no tile larger than the largest weight
        for (int l = 0; l < m->n_layer; l++) {
            const kf_layer *L = &m->layers[l];
            const kf_tensor *ws[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
            for (size_t k = 0; k < sizeof ws / sizeof ws[0]; k++)
                if (kf_tensor_present(ws[k]) && kf_tensor_nelem(ws[k]) > largest) largest = kf_tensor_nelem(ws[k]);
        }
        if (kf_tensor_nelem(&m->lm_head) > largest) largest = kf_tensor_nelem(&m->lm_head);
        c->tile_floats = largest < KF_TILE_FLOATS ? largest : KF_TILE_FLOATS;
        if (c->tile_floats < max_in) c->tile_floats = max_in;
        c->tile = alloc_floats(c->tile_floats);
        c->xs = alloc_floats((int64_t)(kf_matvec_dt_scratch((int)max_in) + 3) / 4);
        if (!c->tile || !c->xs) {
            kf_ctx_free(c);
            return kf_error_set(err, KF_ERR_NOMEM, "forward: out of memory for the weight tiles");
        }
    }
    if (m->pos == KF_POS_ROPE) kf_rope_table(c->rope_cos, c->rope_sin, n_pos, m->head_dim, m->rope_theta);
    for (int l = 0; l < m->n_layer; l++)
        if (m->layers[l].n_expert > 0) {
            if ((s = kf_moe_ws_init(&c->moe, m, max_tokens, err)) != KF_OK) {
                kf_ctx_free(c);
                return s;
            }
            break;
        }
    *out = c;
    return KF_OK;
}

void kf_ctx_free(kf_ctx *c) {
    if (!c) return;
    float *bufs[] = {c->x, c->xn, c->proj, c->q, c->att, c->k, c->v, c->gate,
                     c->act, c->k_cache, c->v_cache, c->rope_cos, c->rope_sin};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    free(c->tile);
    free(c->xs);
    kf_moe_ws_free(c->moe);
    free(c);
}

kf_status kf_ctx_set_layers(kf_ctx *c, int first, int end, kf_error *err) {
    if (first < 0 || end > c->m->n_layer || first >= end)
        return kf_error_set(err, KF_ERR_ARG, "forward: layer range [%d, %d) not within the model's %d layers", first,
                            end, c->m->n_layer);
    c->layer_first = first;
    c->layer_end = end;
    return KF_OK;
}

void kf_ctx_set_hook(kf_ctx *c, kf_hook_fn fn, void *user, unsigned points) {
    c->hook = fn;
    c->hook_user = user;
    c->hook_points = fn ? points : 0;
}

static inline void run_hook(kf_ctx *c, int layer, kf_hook_point p, float *x, int n, int dim) {
    if (c->hook_points & (1u << p)) c->hook(c->hook_user, layer, p, x, n, dim);
}

// ---- building blocks on N rows -------------------------------------------------

// Y (N, OC) = X (N, C) W^T (+ b, may be NULL or absent): one row goes through the SIMD matvec, more
// through sgemm; weights kept in F16/BF16/Q8_0 through their decode kernels and fp32 tiles.
static void linear(kf_ctx *c, float *Y, const float *X, const kf_tensor *W, const kf_tensor *b, int N) {
    const int OC = (int)W->ne[0], C = (int)W->ne[1];
    if (W->dtype != KF_DTYPE_F32) {
        if (N == 1)
            kf_matvec_dt(Y, W->dtype, W->data, X, OC, C, c->xs);
        else
            kf_matmul_dt(Y, X, W->dtype, W->data, N, C, OC, c->tile, kf_matmul_dt_tile_rows(C, c->tile_floats));
    } else if (N == 1) {
        kf_matvec(Y, W->data, X, OC, C);
    } else {
        kf_matmul(Y, X, W->data, N, C, OC);
    }
    if (!b || !kf_tensor_present(b)) return;
#pragma omp parallel for if ((int64_t)N * OC >= KF_PAR_ELEMS)
    for (int r = 0; r < N; r++)
        for (int i = 0; i < OC; i++) Y[(int64_t)r * OC + i] += b->data[i];
}

// y (N, C) = norm(x) per row, RMSNorm or LayerNorm as the model says.
static void norm_rows(const kf_model *m, float *y, const float *x, const kf_tensor *w, const kf_tensor *b, int N) {
    const int C = m->n_embd;
#pragma omp parallel for if ((int64_t)N * C >= KF_PAR_ELEMS)
    for (int r = 0; r < N; r++) {
        if (m->norm == KF_NORM_RMS)
            kf_rmsnorm(y + (int64_t)r * C, x + (int64_t)r * C, w->data, C, m->norm_eps);
        else
            kf_layernorm(y + (int64_t)r * C, x + (int64_t)r * C, w->data, b->data, C, m->norm_eps);
    }
}

// x (n) += y (n)
static void add_rows(float *x, const float *y, int64_t n) {
#pragma omp parallel for if (n >= KF_PAR_ELEMS)
    for (int64_t i = 0; i < n; i++) x[i] += y[i];
}

// FFN activations in place: act (n) = f(gate) * act when gated, else f(act);
// chunks of KF_ACT_CHUNK values per thread through kf_activate.
#define KF_ACT_CHUNK 4096
static void activate(const kf_model *m, float *act, const float *gate, int64_t n) {
    const bool gelu = m->act != KF_ACT_SILU;
    const int64_t n_chunks = (n + KF_ACT_CHUNK - 1) / KF_ACT_CHUNK;
#pragma omp parallel for if (n >= KF_PAR_ACT)
    for (int64_t c = 0; c < n_chunks; c++) {
        const int64_t i = c * KF_ACT_CHUNK, len = n - i < KF_ACT_CHUNK ? n - i : KF_ACT_CHUNK;
        kf_activate(act + i, gate ? gate + i : NULL, len, gelu);
    }
}

// ---- the pass ------------------------------------------------------------------

// Runs the model on N = B*T rows: sequence b's tokens at positions
// pos0 .. pos0+T-1. Decode (B = T = 1) attends over the KV cache; prefill
// (pos0 = 0) attends over this call's keys and copies them into the cache
// when fill_cache is set. Writes logits (N, V) when logits is non-NULL.
static void forward(kf_ctx *c, const int32_t *tokens, int B, int T, int pos0, bool decode, bool fill_cache,
                    float *logits) {
    const kf_model *m = c->m;
    const int N = B * T, C = m->n_embd, H = m->n_head, Hkv = m->n_head_kv, Dh = m->head_dim;
    const int Q = H * Dh, KV = Hkv * Dh, half = Dh / 2;

    // x (N, C) = tok_embd[token] (+ pos_embd[pos]), rows decoded from the weights' dtype
    for (int r = 0; r < N; r++) {
        float *xr = c->x + (int64_t)r * C;
        kf_tensor_row_f32(&m->tok_embd, tokens[r], xr);
        if (m->pos == KF_POS_LEARNED) {
            float *p = c->proj + (int64_t)r * C; // scratch until the first block writes it
            kf_tensor_row_f32(&m->pos_embd, pos0 + r % T, p);
            for (int i = 0; i < C; i++) xr[i] += p[i];
        }
    }

    const bool part = c->layer_first > 0 || c->layer_end < m->n_layer;
    for (int l = decode ? 0 : c->layer_first; l < (decode ? m->n_layer : c->layer_end); l++) {
        const kf_layer *L = &m->layers[l];
        const int F = L->n_ff;
        float *kc = c->k_cache + (int64_t)l * c->kv_len * KV; // (kv_len, KV) of this layer
        float *vc = c->v_cache + (int64_t)l * c->kv_len * KV;
        run_hook(c, l, KF_HOOK_BLOCK_IN, c->x, N, C);

        // --- attention ---
        norm_rows(m, c->xn, c->x, &L->attn_norm_w, &L->attn_norm_b, N); // xn (N, C)
        linear(c, c->q, c->xn, &L->wq, &L->bq, N);                         // q (N, Q)
        linear(c, c->k, c->xn, &L->wk, &L->bk, N);                         // k (N, KV)
        linear(c, c->v, c->xn, &L->wv, &L->bv, N);                         // v (N, KV)
        if (m->pos == KF_POS_ROPE) {
#pragma omp parallel for if ((int64_t)N * Q >= KF_PAR_ELEMS)
            for (int r = 0; r < N; r++) {
                const int64_t p = (int64_t)(pos0 + r % T) * half; // table row of this position
                kf_rope(c->q + (int64_t)r * Q, H, Dh, c->rope_cos + p, c->rope_sin + p);
                kf_rope(c->k + (int64_t)r * KV, Hkv, Dh, c->rope_cos + p, c->rope_sin + p);
            }
        }
        if (decode) {
            // Append this position's k, v and attend over cache rows 0..pos0.
            memcpy(kc + (int64_t)pos0 * KV, c->k, sizeof(float) * (size_t)KV);
            memcpy(vc + (int64_t)pos0 * KV, c->v, sizeof(float) * (size_t)KV);
            kf_attention(c->att, c->q, kc, vc, 1, 1, pos0, H, Hkv, Dh, c->kv_len); // att (1, Q)
        } else {
            kf_attention(c->att, c->q, c->k, c->v, B, T, 0, H, Hkv, Dh, T); // att (N, Q)
            if (fill_cache) {
                memcpy(kc, c->k, sizeof(float) * (size_t)T * KV);
                memcpy(vc, c->v, sizeof(float) * (size_t)T * KV);
            }
        }
        linear(c, c->proj, c->att, &L->wo, &L->bo, N); // proj (N, C)
        run_hook(c, l, KF_HOOK_ATTN_OUT, c->proj, N, C);
        add_rows(c->x, c->proj, (int64_t)N * C);

        // --- feed-forward ---
        norm_rows(m, c->xn, c->x, &L->ffn_norm_w, &L->ffn_norm_b, N); // xn (N, C)
        run_hook(c, l, KF_HOOK_FFN_IN, c->xn, N, C);
        if (L->n_expert > 0) { // mixture of experts: only the routed experts' neurons
            c->ffn_used += kf_moe_ffn(c->moe, m, L, c->xn, N, c->act, c->gate, c->proj); // act (N, F), proj (N, C)
            run_hook(c, l, KF_HOOK_FFN_ACT, c->act, N, F);
        } else {
            linear(c, c->act, c->xn, &L->w_up, &L->b_up, N); // act (N, F)
            if (m->gated_ffn) {
                linear(c, c->gate, c->xn, &L->w_gate, NULL, N); // gate (N, F)
                activate(m, c->act, c->gate, (int64_t)N * F);
            } else {
                activate(m, c->act, NULL, (int64_t)N * F);
            }
            run_hook(c, l, KF_HOOK_FFN_ACT, c->act, N, F);
            linear(c, c->proj, c->act, &L->w_down, &L->b_down, N); // proj (N, C)
            c->ffn_used += (int64_t)N * F;
        }
        c->ffn_all += (int64_t)N * F;
        run_hook(c, l, KF_HOOK_FFN_OUT, c->proj, N, C);
        add_rows(c->x, c->proj, (int64_t)N * C);
        run_hook(c, l, KF_HOOK_BLOCK_OUT, c->x, N, C);
    }

    if (!logits || (part && !decode)) return;
    norm_rows(m, c->xn, c->x, &m->out_norm_w, &m->out_norm_b, N); // xn (N, C)
    linear(c, logits, c->xn, &m->lm_head, NULL, N);                  // logits (N, V)
}

static kf_status check_tokens(const kf_model *m, const int32_t *tokens, int64_t n, kf_error *err) {
    for (int64_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= m->n_vocab)
            return kf_error_set(err, KF_ERR_ARG, "forward: token %d at index %lld is outside the vocabulary (%d)",
                                tokens[i], (long long)i, m->n_vocab);
    return KF_OK;
}

kf_status kf_forward_prefill(kf_ctx *c, const int32_t *tokens, int B, int T, float *logits, kf_error *err) {
    if (!c || !tokens) return kf_error_set(err, KF_ERR_ARG, "forward: prefill without context or tokens");
    if (B < 1 || T < 1 || (int64_t)B * T > c->max_tokens)
        return kf_error_set(err, KF_ERR_ARG, "forward: prefill of %d x %d tokens does not fit a context of %d", B, T,
                            c->max_tokens);
    const kf_model *m = c->m;
    if (m->pos == KF_POS_LEARNED && T > m->n_ctx_train)
        return kf_error_set(err, KF_ERR_ARG, "forward: %d positions exceed the model's %d", T, m->n_ctx_train);
    kf_status s = check_tokens(m, tokens, (int64_t)B * T, err);
    if (s != KF_OK) return s;
    if (logits && (c->layer_first > 0 || c->layer_end < m->n_layer))
        return kf_error_set(err, KF_ERR_ARG, "forward: logits asked of a prefill over layers [%d, %d) only",
                            c->layer_first, c->layer_end);
    forward(c, tokens, B, T, 0, false, B == 1 && T <= c->kv_len, logits);
    return KF_OK;
}

kf_status kf_forward_decode(kf_ctx *c, int32_t token, int pos, float *logits, kf_error *err) {
    if (!c || !logits) return kf_error_set(err, KF_ERR_ARG, "forward: decode without context or logits");
    if (pos < 0 || pos >= c->kv_len)
        return kf_error_set(err, KF_ERR_ARG, "forward: decode position %d outside the KV cache (%d)", pos,
                            c->kv_len);
    const kf_model *m = c->m;
    if (m->pos == KF_POS_LEARNED && pos >= m->n_ctx_train)
        return kf_error_set(err, KF_ERR_ARG, "forward: position %d exceeds the model's %d", pos, m->n_ctx_train);
    kf_status s = check_tokens(m, &token, 1, err);
    if (s != KF_OK) return s;
    forward(c, &token, 1, 1, pos, true, false, logits);
    return KF_OK;
}

double kf_ctx_ffn_share(const kf_ctx *c) { return c->ffn_all ? (double)c->ffn_used / (double)c->ffn_all : 1.0; }
