// Mixture-of-experts FFN: router, selection, and the decode / grouped-prefill /
// masked-dense paths (see moe.h for the layout and why).
//
// Notation: N rows, C = n_embd, F = n_ff, E experts of S = F / E neurons,
// Hr = hidden width of an MLP router.
#include "runtime/moe.h"

#include <cblas.h>
#include <omp.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "runtime/kernels.h"

// The sliced down projection runs in parallel from this many multiply-adds on.
#define KF_MOE_PAR_MIN (1 << 15)

struct kf_moe_ws {
    int max_tokens;
    int n_layer;
    float **wdt;   // (n_layer) per MoE layer: w_down transposed to (F, C), so expert e's
                   // down projection is the contiguous (S, C) block of rows [eS, (e+1)S)
    float *scores; // (N, E) router scores or true expert norms
    float *hidden; // (N, Hr) MLP router hidden layer
    int *sel;      // (N, E) selected experts of each row, increasing
    int *n_sel;    // (N)
    int *order;    // (E) selection scratch
    int *rows;     // (E, N) rows routed to each expert
    int *n_rows;   // (E)
    float *gx;     // (N, C) rows gathered for one expert
    float *g, *u;  // (N, S) gate and up outputs of one expert
    float *y;      // (N, C) one expert's output
    float *part;   // (n_part, C) per-thread partial outputs of decode
    int n_part;
};

static void *alloc_zero(int64_t a, int64_t b, size_t elem) {
    int64_t n;
    if (a < 1) a = 1;
    if (b < 1) b = 1;
    if (__builtin_mul_overflow(a, b, &n) || n > ((int64_t)1 << 40)) return NULL;
    return calloc((size_t)n, elem);
}

// dst (cols, rows) = src (rows, cols) transposed, in 32x32 tiles.
static void transpose(float *dst, const float *src, int rows, int cols) {
#pragma omp parallel for schedule(static)
    for (int r0 = 0; r0 < rows; r0 += 32)
        for (int c0 = 0; c0 < cols; c0 += 32)
            for (int r = r0; r < r0 + 32 && r < rows; r++)
                for (int c = c0; c < c0 + 32 && c < cols; c++) dst[(int64_t)c * rows + r] = src[(int64_t)r * cols + c];
}

kf_status kf_moe_ws_init(kf_moe_ws **out, const kf_model *m, int max_tokens, kf_error *err) {
    *out = NULL;
    int E = 1, S = 1, Hr = 1;
    for (int l = 0; l < m->n_layer; l++) {
        const kf_layer *L = &m->layers[l];
        if (L->n_expert <= 0) continue;
        if (L->n_expert > E) E = L->n_expert;
        if (L->n_ff / L->n_expert > S) S = L->n_ff / L->n_expert;
        if (L->router == KF_ROUTER_MLP && L->router_w.ne[0] > Hr) Hr = (int)L->router_w.ne[0];
    }
    kf_moe_ws *w = calloc(1, sizeof *w);
    if (!w) return kf_error_set(err, KF_ERR_NOMEM, "moe: out of memory");
    const int N = max_tokens, C = m->n_embd;
    w->max_tokens = N;
    w->scores = alloc_zero(N, E, sizeof(float));
    w->hidden = alloc_zero(N, Hr, sizeof(float));
    w->sel = alloc_zero(N, E, sizeof(int));
    w->n_sel = alloc_zero(N, 1, sizeof(int));
    w->order = alloc_zero(E, 1, sizeof(int));
    w->rows = alloc_zero(E, N, sizeof(int));
    w->n_rows = alloc_zero(E, 1, sizeof(int));
    w->gx = alloc_zero(N, C, sizeof(float));
    w->g = alloc_zero(N, S, sizeof(float));
    w->u = alloc_zero(N, S, sizeof(float));
    w->y = alloc_zero(N, C, sizeof(float));
    w->n_part = omp_get_max_threads();
    w->part = alloc_zero(w->n_part, C, sizeof(float));
    w->n_layer = m->n_layer;
    w->wdt = alloc_zero(m->n_layer, 1, sizeof(float *));
    bool ok = w->scores && w->hidden && w->sel && w->n_sel && w->order && w->rows && w->n_rows && w->gx && w->g &&
              w->u && w->y && w->part && w->wdt;
    for (int l = 0; ok && l < m->n_layer; l++) {
        const kf_layer *L = &m->layers[l];
        if (L->n_expert <= 0) continue;
        const int F = L->n_ff;
        if (!(w->wdt[l] = kf_alloc_large((size_t)F * (size_t)C * sizeof(float)))) ok = false;
        else transpose(w->wdt[l], L->w_down.data, C, F);
    }
    if (!ok) {
        kf_moe_ws_free(w);
        return kf_error_set(err, KF_ERR_NOMEM, "moe: out of memory for a workspace of %d tokens", max_tokens);
    }
    *out = w;
    return KF_OK;
}

void kf_moe_ws_free(kf_moe_ws *w) {
    if (!w) return;
    void *bufs[] = {w->scores, w->hidden, w->sel,   w->n_sel, w->order, w->rows,
                    w->n_rows, w->gx,     w->g,     w->u,     w->y,     w->part};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    if (w->wdt)
        for (int l = 0; l < w->n_layer; l++) free(w->wdt[l]);
    free(w->wdt);
    free(w);
}

// ---- small helpers ---------------------------------------------------------------

// Y (N, OC) = X (N, IC) W^T + b (b may be absent).
static void dense(float *Y, const float *X, const kf_tensor *W, const kf_tensor *b, int N) {
    const int OC = (int)W->ne[0], IC = (int)W->ne[1];
    if (N == 1)
        kf_matvec(Y, W->data, X, OC, IC);
    else
        kf_matmul(Y, X, W->data, N, IC, OC);
    if (!b || !kf_tensor_present(b)) return;
    for (int r = 0; r < N; r++)
        for (int i = 0; i < OC; i++) Y[(int64_t)r * OC + i] += b->data[i];
}

// u (n) = f(g) * u when gated (g non-NULL), else f(u).
static void activate(const kf_model *m, float *u, const float *g, int64_t n) {
    kf_activate(u, g, n, m->act != KF_ACT_SILU);
}

// ---- router and selection ----------------------------------------------------------

void kf_moe_router_scores(const kf_layer *L, const float *xn, int N, float *scores, float *hidden) {
    if (L->router == KF_ROUTER_MLP) {
        const int Hr = (int)L->router_w.ne[0];
        dense(hidden, xn, &L->router_w, &L->router_b, N); // hidden (N, Hr)
        for (int64_t i = 0; i < (int64_t)N * Hr; i++) hidden[i] = hidden[i] > 0 ? hidden[i] : 0;
        dense(scores, hidden, &L->router_w2, &L->router_b2, N); // scores (N, E)
    } else {
        dense(scores, xn, &L->router_w, &L->router_b, N); // scores (N, E)
    }
}

int kf_moe_select(const float *s, int E, int top_k, float coverage, int *sel, int *order) {
    // order: experts by decreasing score, ties to the lower index (insertion sort: E is small)
    for (int i = 0; i < E; i++) {
        int j = i;
        while (j > 0 && s[order[j - 1]] < s[i]) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = i;
    }
    int k = top_k;
    if (k <= 0 || k > E) {
        double total = 0, acc = 0;
        for (int i = 0; i < E; i++) total += s[i] > 0 ? s[i] : 0;
        k = 0;
        while (k < E) {
            float v = s[order[k++]];
            acc += v > 0 ? v : 0;
            if (acc >= coverage * total) break;
        }
    }
    for (int i = 0; i < k; i++) { // increasing expert index
        int j = i, e = order[i];
        while (j > 0 && sel[j - 1] > e) {
            sel[j] = sel[j - 1];
            j--;
        }
        sel[j] = e;
    }
    return k;
}

void kf_moe_expert_norms(const float *w_down, int C, int F, int E, const float *act, int N, float *contrib, float *y) {
    const int S = F / E;
    for (int e = 0; e < E; e++) {
        // y (N, C) = act[:, eS:(e+1)S] w_down[:, eS:(e+1)S]^T
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, C, S, 1.0f, act + (int64_t)e * S, F,
                    w_down + (int64_t)e * S, F, 0.0f, y, C);
        for (int r = 0; r < N; r++) {
            double ss = 0;
            for (int c = 0; c < C; c++) ss += (double)y[(int64_t)r * C + c] * y[(int64_t)r * C + c];
            contrib[(int64_t)r * E + e] = (float)sqrt(ss);
        }
    }
}

// Routes rows with precomputed scores (N, E) into ws->sel / ws->n_sel.
// Returns the number of selected neurons over all rows.
static int64_t select_rows(kf_moe_ws *ws, const kf_layer *L, int N) {
    const int E = L->n_expert;
    int64_t n = 0;
    for (int r = 0; r < N; r++) {
        ws->n_sel[r] = kf_moe_select(ws->scores + (int64_t)r * E, E, L->top_k, L->coverage, ws->sel + (int64_t)r * E,
                                     ws->order);
        n += ws->n_sel[r];
    }
    return n * (L->n_ff / E);
}

static void add_bias(float *Y, const kf_tensor *b, int N, int OC) {
    if (!kf_tensor_present(b)) return;
    for (int r = 0; r < N; r++)
        for (int i = 0; i < OC; i++) Y[(int64_t)r * OC + i] += b->data[i];
}

// ---- the three paths ----------------------------------------------------------------

// Decode, one row, in one parallel region. The selected experts' neurons are
// cut into blocks of KF_MOE_BLK; each thread takes whole blocks and, for each,
// computes the gate/up rows (contiguous in w_gate/w_up) and at once adds the
// block's down projection, the matching contiguous rows of wdt, into its own
// partial output (C, in L1). Every weight is thus read in long contiguous
// runs. After the barrier the partial outputs are summed, threads splitting
// the columns.
#define KF_MOE_BLK 176
static int64_t ffn_decode(kf_moe_ws *ws, const kf_model *m, const kf_layer *L, const float *xn, float *act, float *gate,
                          float *out) {
    const int C = m->n_embd, F = L->n_ff, S = F / L->n_expert;
    const float *wdt = ws->wdt[L - m->layers];
    kf_moe_router_scores(L, xn, 1, ws->scores, ws->hidden);
    const int64_t used = select_rows(ws, L, 1);
    const int n = ws->n_sel[0], nblk = (S + KF_MOE_BLK - 1) / KF_MOE_BLK;
    const int *sel = ws->sel;
    memset(act, 0, sizeof(float) * (size_t)F); // unselected experts stay zero
    int nt = (int64_t)C * S * n >= KF_MOE_PAR_MIN ? omp_get_max_threads() : 1;
    if (nt > ws->n_part) nt = ws->n_part;
#pragma omp parallel num_threads(nt)
    {
        const int th = omp_get_thread_num(), T = omp_get_num_threads();
        float *part = ws->part + (int64_t)th * C; // this thread's share of out (C)
        memset(part, 0, sizeof(float) * (size_t)C);
#pragma omp for schedule(static)
        for (int t = 0; t < n * nblk; t++) {
            const int j0 = (t % nblk) * KF_MOE_BLK, rows = S - j0 < KF_MOE_BLK ? S - j0 : KF_MOE_BLK;
            const int64_t off = (int64_t)sel[t / nblk] * S + j0; // first neuron of the block
            float *a = act + off;
            kf_matvec(a, L->w_up.data + off * C, xn, rows, C); // a (rows) = w_up[off:off+rows] xn
            if (kf_tensor_present(&L->b_up))
                for (int j = 0; j < rows; j++) a[j] += L->b_up.data[off + j];
            if (m->gated_ffn) kf_matvec(gate + off, L->w_gate.data + off * C, xn, rows, C);
            activate(m, a, m->gated_ffn ? gate + off : NULL, rows);
            kf_matvec_t(part, wdt + off * C, a, rows, C, C); // part (C) += wdt[off:off+rows]^T a
        }
        const int c0 = (int)((int64_t)C * th / T), c1 = (int)((int64_t)C * (th + 1) / T);
        for (int c = c0; c < c1; c++) {
            float v = 0;
            for (int p = 0; p < T; p++) v += ws->part[(int64_t)p * C + c];
            out[c] = v;
        }
    }
    add_bias(out, &L->b_down, 1, C);
    return used;
}

int64_t kf_moe_ffn_grouped(kf_moe_ws *ws, const kf_model *m, const kf_layer *L, const float *xn, int N, float *act,
                           float *gate, float *out) {
    (void)gate;
    const int C = m->n_embd, F = L->n_ff, E = L->n_expert, S = F / E;
    const float *wdt = ws->wdt[L - m->layers];
    kf_moe_router_scores(L, xn, N, ws->scores, ws->hidden);
    const int64_t used = select_rows(ws, L, N);
    memset(ws->n_rows, 0, sizeof(int) * (size_t)E);
    for (int r = 0; r < N; r++)
        for (int i = 0; i < ws->n_sel[r]; i++) {
            int e = ws->sel[(int64_t)r * E + i];
            ws->rows[(int64_t)e * N + ws->n_rows[e]++] = r;
        }
    memset(act, 0, sizeof(float) * (size_t)N * F);
    memset(out, 0, sizeof(float) * (size_t)N * C);
    for (int e = 0; e < E; e++) {
        const int n = ws->n_rows[e];
        const int *rows = ws->rows + (int64_t)e * N;
        const int64_t off = (int64_t)e * S;
        if (n == 0) continue;
        for (int i = 0; i < n; i++) // gx (n, C) = xn[rows]
            memcpy(ws->gx + (int64_t)i * C, xn + (int64_t)rows[i] * C, sizeof(float) * (size_t)C);
        // u (n, S) = gx w_up[off:off+S]^T, g likewise
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, S, C, 1.0f, ws->gx, C, L->w_up.data + off * C, C, 0.0f,
                    ws->u, S);
        if (kf_tensor_present(&L->b_up))
            for (int i = 0; i < n; i++)
                for (int j = 0; j < S; j++) ws->u[(int64_t)i * S + j] += L->b_up.data[off + j];
        if (m->gated_ffn)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, S, C, 1.0f, ws->gx, C, L->w_gate.data + off * C, C,
                        0.0f, ws->g, S);
        activate(m, ws->u, m->gated_ffn ? ws->g : NULL, (int64_t)n * S);
        // y (n, C) = u wdt[off:off+S]: the expert's contiguous (S, C) block
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, C, S, 1.0f, ws->u, S, wdt + off * C, C, 0.0f, ws->y,
                    C);
        for (int i = 0; i < n; i++) {
            float *o = out + (int64_t)rows[i] * C;
            const float *y = ws->y + (int64_t)i * C;
            for (int c = 0; c < C; c++) o[c] += y[c];
            memcpy(act + (int64_t)rows[i] * F + off, ws->u + (int64_t)i * S, sizeof(float) * (size_t)S);
        }
    }
    add_bias(out, &L->b_down, N, C);
    return used;
}

int64_t kf_moe_ffn_masked(kf_moe_ws *ws, const kf_model *m, const kf_layer *L, const float *xn, int N, float *act,
                          float *gate, float *out) {
    const int C = m->n_embd, F = L->n_ff, E = L->n_expert, S = F / E;
    dense(act, xn, &L->w_up, &L->b_up, N); // act (N, F)
    if (m->gated_ffn) dense(gate, xn, &L->w_gate, NULL, N);
    activate(m, act, m->gated_ffn ? gate : NULL, (int64_t)N * F);
    if (L->router == KF_ROUTER_ORACLE)
        kf_moe_expert_norms(L->w_down.data, C, F, E, act, N, ws->scores, ws->y);
    else
        kf_moe_router_scores(L, xn, N, ws->scores, ws->hidden);
    const int64_t used = select_rows(ws, L, N);
    for (int r = 0; r < N; r++) { // zero the unselected experts' activations
        const int *sel = ws->sel + (int64_t)r * E;
        for (int e = 0, i = 0; e < E; e++) {
            if (i < ws->n_sel[r] && sel[i] == e) {
                i++;
                continue;
            }
            memset(act + (int64_t)r * F + (int64_t)e * S, 0, sizeof(float) * (size_t)S);
        }
    }
    // out (N, C) = act wdt, the transposed down projection
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, C, F, 1.0f, act, F, ws->wdt[L - m->layers], C, 0.0f, out,
                C);
    add_bias(out, &L->b_down, N, C);
    return used;
}

int64_t kf_moe_ffn(kf_moe_ws *ws, const kf_model *m, const kf_layer *L, const float *xn, int N, float *act,
                   float *gate, float *out) {
    if (L->router == KF_ROUTER_ORACLE) return kf_moe_ffn_masked(ws, m, L, xn, N, act, gate, out);
    if (N == 1) return ffn_decode(ws, m, L, xn, act, gate, out);
    return kf_moe_ffn_grouped(ws, m, L, xn, N, act, gate, out);
}
