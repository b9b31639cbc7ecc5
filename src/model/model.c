#include "model/model.h"

#include "core/mem.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

struct kf_buffer {
    kf_buffer *next;
    int64_t n; // floats of data
    _Alignas(64) float data[];
};

kf_model *kf_model_new(void) {
    kf_model *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    m->bos_id = m->eos_id = -1;
    snprintf(m->format, sizeof m->format, "memory");
    return m;
}

float *kf_model_alloc(kf_model *m, int64_t n) {
    if (n < 0) return NULL;
    size_t bytes = sizeof(kf_buffer) + (size_t)n * sizeof(float);
    kf_buffer *b = kf_alloc_large(bytes); // weights: huge pages where possible (core/mem.h)
    if (!b) return NULL;
    memset(b->data, 0, (size_t)n * sizeof(float));
    b->n = n;
    b->next = m->buffers;
    m->buffers = b;
    return b->data;
}

void *kf_model_alloc_bytes(kf_model *m, size_t n) { return kf_model_alloc(m, (int64_t)((n + 3) / 4)); }

kf_status kf_model_tensor_to_f32(kf_model *m, kf_tensor *t, kf_error *err) {
    if (!kf_tensor_present(t) || t->dtype == KF_DTYPE_F32) return KF_OK;
    int64_t n = kf_tensor_nelem(t);
    float *dst = kf_model_alloc(m, n);
    if (!dst) return kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory converting a tensor of %lld values to fp32",
                                  m->path, (long long)n);
    kf_dtype_to_f32(t->dtype, t->data, dst, n);
    t->data = dst;
    t->dtype = KF_DTYPE_F32;
    return KF_OK;
}

void kf_model_release_tensor(kf_model *m, const kf_tensor *t) {
    if (!kf_tensor_present(t)) return;
    const size_t bytes = kf_tensor_nbytes(t);
    for (kf_buffer **pb = &m->buffers; *pb; pb = &(*pb)->next)
        if ((*pb)->data == t->data && (*pb)->n == (int64_t)((bytes + 3) / 4)) { // the tensor's own allocation
            kf_buffer *b = *pb;
            *pb = b->next;
            free(b);
            return;
        }
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE), a = (uintptr_t)t->data;
    const uintptr_t lo = (a + page - 1) / page * page, hi = (a + bytes) / page * page;
    for (int i = 0; i < m->n_maps; i++) {
        const uintptr_t b = (uintptr_t)m->maps[i].data;
        if (a >= b && a + bytes <= b + m->maps[i].size && hi > lo) madvise((void *)lo, hi - lo, MADV_DONTNEED);
    }
}

kf_status kf_model_tensor_store(kf_model *m, kf_tensor *t, kf_dtype d, kf_error *err) {
    if (!kf_tensor_present(t) || d == KF_DTYPE_F32) return KF_OK;
    if (t->dtype != KF_DTYPE_F32)
        return kf_error_set(err, KF_ERR_INTERNAL, "%s: only fp32 tensors are stored in another dtype", m->path);
    const int64_t n = kf_tensor_nelem(t);
    if (d == KF_DTYPE_Q8_0 && kf_tensor_row_len(t) % 32)
        return kf_error_set(err, KF_ERR_UNSUPPORTED, "%s: rows of %lld values cannot be stored as Q8_0 (blocks of 32)",
                            m->path, (long long)kf_tensor_row_len(t));
    void *dst = kf_model_alloc_bytes(m, kf_dtype_size(d, n));
    if (!dst) return kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory storing a tensor of %lld values as %s", m->path,
                                  (long long)n, kf_dtype_name(d));
    kf_f32_to_dtype(d, t->data, dst, n);
    kf_tensor old = *t;
    t->data = dst;
    t->dtype = d;
    kf_model_release_tensor(m, &old);
    return KF_OK;
}

kf_status kf_model_alloc_tensor(kf_model *m, kf_tensor *t, int ndim, const int64_t *ne, kf_error *err) {
    kf_tensor_set_shape(t, ndim, ne);
    t->src_dtype = t->dtype = KF_DTYPE_F32;
    t->data = kf_model_alloc(m, kf_tensor_nelem(t));
    if (!t->data) return kf_error_set(err, KF_ERR_NOMEM, "out of memory allocating a tensor of %lld floats",
                                      (long long)kf_tensor_nelem(t));
    return KF_OK;
}

kf_status kf_model_add_map(kf_model *m, kf_mmap map, kf_error *err) {
    kf_mmap *maps = realloc(m->maps, sizeof *maps * (size_t)(m->n_maps + 1));
    if (!maps) {
        kf_mmap_close(&map);
        return kf_error_set(err, KF_ERR_NOMEM, "out of memory");
    }
    m->maps = maps;
    m->maps[m->n_maps++] = map;
    return KF_OK;
}

void kf_model_free(kf_model *m) {
    if (!m) return;
    for (kf_buffer *b = m->buffers, *next; b; b = next) {
        next = b->next;
        free(b);
    }
    for (int i = 0; i < m->n_maps; i++) kf_mmap_close(&m->maps[i]);
    free(m->maps);
    free(m->layers);
    free(m);
}

const char *kf_arch_name(kf_arch a) {
    switch (a) {
    case KF_ARCH_LLAMA: return "llama";
    case KF_ARCH_GPT2: return "gpt2";
    }
    return "?";
}

// Checks one tensor: present iff required, and of shape (d0) or (d0, d1).
static kf_status check(const kf_tensor *t, const char *name, int layer, int ndim, int64_t d0, int64_t d1,
                       bool required, const char *what, kf_error *err) {
    char where[48] = "";
    if (layer >= 0) snprintf(where, sizeof where, "layer %d ", layer);
    if (!kf_tensor_present(t)) {
        if (required) return kf_error_set(err, KF_ERR_FORMAT, "%s: missing tensor %s%s", what, where, name);
        return KF_OK;
    }
    bool ok = t->ndim == ndim && t->ne[0] == d0 && (ndim == 1 || t->ne[1] == d1);
    if (!ok) {
        char got[64];
        kf_tensor_shape_str(t, got, sizeof got);
        if (ndim == 1)
            return kf_error_set(err, KF_ERR_FORMAT, "%s: tensor %s%s has shape %s, expected (%lld)", what, where,
                                name, got, (long long)d0);
        return kf_error_set(err, KF_ERR_FORMAT, "%s: tensor %s%s has shape %s, expected (%lld, %lld)", what, where,
                            name, got, (long long)d0, (long long)d1);
    }
    return KF_OK;
}

kf_status kf_model_validate(const kf_model *m, const char *what, kf_error *err) {
    if (m->n_vocab <= 0 || m->n_embd <= 0 || m->n_layer <= 0 || m->n_head <= 0 || m->n_head_kv <= 0 ||
        m->head_dim <= 0 || m->n_head % m->n_head_kv != 0)
        return kf_error_set(err, KF_ERR_FORMAT,
                            "%s: bad hyper-parameters (vocab %d, embd %d, layers %d, heads %d/%d, head_dim %d)", what,
                            m->n_vocab, m->n_embd, m->n_layer, m->n_head, m->n_head_kv, m->head_dim);
    if (m->n_vocab > KF_MAX_VOCAB || m->n_embd > KF_MAX_EMBD || m->n_layer > KF_MAX_LAYERS ||
        m->n_head > KF_MAX_HEADS || m->head_dim > KF_MAX_HEAD_DIM || m->n_ctx_train > KF_MAX_CTX)
        return kf_error_set(err, KF_ERR_FORMAT,
                            "%s: hyper-parameters beyond kfuse's limits (vocab %d, embd %d, layers %d, heads %d, "
                            "head_dim %d, context %d)", what, m->n_vocab, m->n_embd, m->n_layer, m->n_head,
                            m->head_dim, m->n_ctx_train);
    if (m->pos == KF_POS_ROPE && m->head_dim % 2 != 0)
        return kf_error_set(err, KF_ERR_FORMAT, "%s: RoPE needs an even head dimension, got %d", what, m->head_dim);
    int64_t C = m->n_embd, V = m->n_vocab, Q = (int64_t)m->n_head * m->head_dim,
            KV = (int64_t)m->n_head_kv * m->head_dim;
    bool ln = m->norm == KF_NORM_LAYER;
    kf_status s;
#define CHECK(t, name, l, nd, a, b, req) \
    if ((s = check(t, name, l, nd, a, b, req, what, err)) != KF_OK) return s
    CHECK(&m->tok_embd, "tok_embd", -1, 2, V, C, true);
    CHECK(&m->lm_head, "lm_head", -1, 2, V, C, true);
    CHECK(&m->out_norm_w, "out_norm", -1, 1, C, 0, true);
    CHECK(&m->out_norm_b, "out_norm_bias", -1, 1, C, 0, ln);
    if (m->pos == KF_POS_LEARNED) {
        if (m->n_ctx_train <= 0) return kf_error_set(err, KF_ERR_FORMAT, "%s: learned positions need n_ctx > 0", what);
        CHECK(&m->pos_embd, "pos_embd", -1, 2, m->n_ctx_train, C, true);
    }
    for (int l = 0; l < m->n_layer; l++) {
        const kf_layer *L = &m->layers[l];
        int64_t F = L->n_ff;
        if (F <= 0 || F > KF_MAX_FFN)
            return kf_error_set(err, KF_ERR_FORMAT, "%s: layer %d has FFN width %lld", what, l, (long long)F);
        CHECK(&L->attn_norm_w, "attn_norm", l, 1, C, 0, true);
        CHECK(&L->attn_norm_b, "attn_norm_bias", l, 1, C, 0, ln);
        CHECK(&L->wq, "wq", l, 2, Q, C, true);
        CHECK(&L->wk, "wk", l, 2, KV, C, true);
        CHECK(&L->wv, "wv", l, 2, KV, C, true);
        CHECK(&L->bq, "bq", l, 1, Q, 0, false);
        CHECK(&L->bk, "bk", l, 1, KV, 0, false);
        CHECK(&L->bv, "bv", l, 1, KV, 0, false);
        CHECK(&L->wo, "wo", l, 2, C, Q, true);
        CHECK(&L->bo, "bo", l, 1, C, 0, false);
        CHECK(&L->ffn_norm_w, "ffn_norm", l, 1, C, 0, true);
        CHECK(&L->ffn_norm_b, "ffn_norm_bias", l, 1, C, 0, ln);
        CHECK(&L->w_gate, "w_gate", l, 2, F, C, m->gated_ffn);
        CHECK(&L->w_up, "w_up", l, 2, F, C, true);
        CHECK(&L->b_up, "b_up", l, 1, F, 0, false);
        CHECK(&L->w_down, "w_down", l, 2, C, F, true);
        CHECK(&L->b_down, "b_down", l, 1, C, 0, false);
        if (!m->gated_ffn && kf_tensor_present(&L->w_gate))
            return kf_error_set(err, KF_ERR_FORMAT, "%s: layer %d has a gate but the FFN is not gated", what, l);
        if (L->n_expert == 0) {
            // writers drop the routers of a dense layer, so a reader must not take them
            if (kf_tensor_present(&L->router_w) || kf_tensor_present(&L->router_b) ||
                kf_tensor_present(&L->router_w2) || kf_tensor_present(&L->router_b2))
                return kf_error_set(err, KF_ERR_FORMAT, "%s: layer %d has router tensors but no experts", what, l);
            continue;
        }
        // mixture of experts: equal experts, a router of the declared kind, a selection rule
        int64_t E = L->n_expert;
        // coverage is kept (and written) for fixed top-k layers too, so it is always a share
        if (E < 0 || F % E != 0 || L->top_k < 0 || L->top_k > E || !(L->coverage >= 0 && L->coverage <= 1) ||
            (L->top_k == 0 && !(L->coverage > 0)))
            return kf_error_set(err, KF_ERR_FORMAT,
                                "%s: layer %d has a bad expert layout (%lld experts of %lld neurons, top-k %d, "
                                "coverage %g)", what, l, (long long)E, (long long)F, L->top_k, (double)L->coverage);
        bool lin = L->router == KF_ROUTER_LINEAR, mlp = L->router == KF_ROUTER_MLP;
        if (!lin && !mlp && L->router != KF_ROUTER_ORACLE)
            return kf_error_set(err, KF_ERR_FORMAT, "%s: layer %d has an unknown router kind %d", what, l, (int)L->router);
        int64_t Hr = mlp && kf_tensor_present(&L->router_w) ? L->router_w.ne[0] : E;
        CHECK(&L->router_w, "router_w", l, 2, Hr, C, lin || mlp);
        CHECK(&L->router_b, "router_b", l, 1, Hr, 0, false);
        CHECK(&L->router_w2, "router_w2", l, 2, E, Hr, mlp);
        CHECK(&L->router_b2, "router_b2", l, 1, E, 0, false);
        if (!mlp && (kf_tensor_present(&L->router_w2) || kf_tensor_present(&L->router_b2)))
            return kf_error_set(err, KF_ERR_FORMAT, "%s: layer %d has a second router layer but no MLP router", what, l);
    }
#undef CHECK
    return KF_OK;
}

int kf_model_list_tensors(const kf_model *m, kf_named_tensor *out, int cap) {
    int n = 0;
#define ADD(tp, nm, l)                                                   \
    if (kf_tensor_present(tp)) {                                         \
        if (out && n < cap) {                                            \
            if ((l) < 0) snprintf(out[n].name, sizeof out[n].name, "%s", nm); \
            else snprintf(out[n].name, sizeof out[n].name, "layers.%d.%s", l, nm); \
            out[n].layer = l;                                            \
            out[n].t = tp;                                               \
        }                                                                \
        n++;                                                             \
    }
    ADD(&m->tok_embd, "tok_embd", -1);
    ADD(&m->pos_embd, "pos_embd", -1);
    for (int l = 0; l < m->n_layer; l++) {
        const kf_layer *L = &m->layers[l];
        ADD(&L->attn_norm_w, "attn_norm_w", l);
        ADD(&L->attn_norm_b, "attn_norm_b", l);
        ADD(&L->wq, "wq", l);
        ADD(&L->bq, "bq", l);
        ADD(&L->wk, "wk", l);
        ADD(&L->bk, "bk", l);
        ADD(&L->wv, "wv", l);
        ADD(&L->bv, "bv", l);
        ADD(&L->wo, "wo", l);
        ADD(&L->bo, "bo", l);
        ADD(&L->ffn_norm_w, "ffn_norm_w", l);
        ADD(&L->ffn_norm_b, "ffn_norm_b", l);
        ADD(&L->w_gate, "w_gate", l);
        ADD(&L->w_up, "w_up", l);
        ADD(&L->b_up, "b_up", l);
        ADD(&L->w_down, "w_down", l);
        ADD(&L->b_down, "b_down", l);
        ADD(&L->router_w, "router_w", l);
        ADD(&L->router_b, "router_b", l);
        ADD(&L->router_w2, "router_w2", l);
        ADD(&L->router_b2, "router_b2", l);
    }
    ADD(&m->out_norm_w, "out_norm_w", -1);
    ADD(&m->out_norm_b, "out_norm_b", -1);
    if (!m->tied_head) ADD(&m->lm_head, "lm_head", -1);
#undef ADD
    return n;
}

static bool in_maps(const kf_model *m, const float *p) {
    for (int i = 0; i < m->n_maps; i++) {
        const char *b = m->maps[i].data;
        if ((const char *)p >= b && (const char *)p < b + m->maps[i].size) return true;
    }
    return false;
}

kf_status kf_model_load_to_memory(kf_model *m, kf_error *err) {
    int n = kf_model_list_tensors(m, NULL, 0);
    kf_named_tensor *ts = malloc(sizeof *ts * (size_t)(n > 0 ? n : 1));
    if (!ts) return kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory", m->path);
    kf_model_list_tensors(m, ts, n);
    // The list is in forward order (embeddings, layers, head); each tensor
    // starts on a 64-byte boundary; bytes as the tensor's dtype stores them.
    size_t total = 0;
    for (int i = 0; i < n; i++)
        if (in_maps(m, ts[i].t->data)) total += (kf_tensor_nbytes(ts[i].t) + 63) & ~(size_t)63;
    char *buf = total ? kf_model_alloc_bytes(m, total) : NULL;
    if (total && !buf) {
        free(ts);
        return kf_error_set(err, KF_ERR_NOMEM, "%s: cannot hold %zu bytes of weights in memory", m->path, total);
    }
    const float *tok_embd_old = m->tok_embd.data;
    for (int i = 0; i < n; i++) {
        kf_tensor *t = (kf_tensor *)ts[i].t; // the model is ours to change; the list is read-only by design
        if (!in_maps(m, t->data)) continue;
        size_t e = kf_tensor_nbytes(t);
        memcpy(buf, t->data, e);
        t->data = (float *)buf;
        buf += (e + 63) & ~(size_t)63;
    }
    if (m->tied_head && m->lm_head.data == tok_embd_old) m->lm_head.data = m->tok_embd.data;
    free(ts);
    for (int i = 0; i < m->n_maps; i++) kf_mmap_close(&m->maps[i]);
    free(m->maps);
    m->maps = NULL;
    m->n_maps = 0;
    return KF_OK;
}

static int64_t bytes_or_zero(const kf_tensor *t) { return kf_tensor_present(t) ? (int64_t)kf_tensor_nbytes(t) : 0; }

int64_t kf_model_n_params(const kf_model *m) {
    int n = kf_model_list_tensors(m, NULL, 0);
    kf_named_tensor *ts = malloc(sizeof *ts * (size_t)(n > 0 ? n : 1));
    if (!ts) return -1;
    kf_model_list_tensors(m, ts, n);
    int64_t total = 0;
    for (int i = 0; i < n; i++) total += kf_tensor_nelem(ts[i].t);
    free(ts);
    return total;
}

kf_dtype kf_model_weight_dtype(const kf_model *m) {
    int n = kf_model_list_tensors(m, NULL, 0);
    kf_named_tensor *ts = malloc(sizeof *ts * (size_t)(n > 0 ? n : 1));
    if (!ts) return KF_DTYPE_F32;
    kf_model_list_tensors(m, ts, n);
    int count[KF_DTYPE_COUNT] = {0};
    for (int i = 0; i < n; i++)
        if (ts[i].t->ndim == 2 && ts[i].t->src_dtype < KF_DTYPE_COUNT) count[ts[i].t->src_dtype]++;
    free(ts);
    int best = KF_DTYPE_F32;
    for (int d = 0; d < KF_DTYPE_COUNT; d++)
        if (count[d] > count[best]) best = d;
    return (kf_dtype)best;
}

int64_t kf_model_weight_bytes(const kf_model *m) {
    // Decode reads every weight once, in its in-memory dtype, except the
    // embedding table (one row) and learned positions (one row); a tied head
    // is read as the head.
    int n = kf_model_list_tensors(m, NULL, 0);
    kf_named_tensor *ts = malloc(sizeof *ts * (size_t)(n > 0 ? n : 1));
    if (!ts) return -1;
    kf_model_list_tensors(m, ts, n);
    int64_t total = 0;
    for (int i = 0; i < n; i++) total += bytes_or_zero(ts[i].t);
    free(ts);
    total -= bytes_or_zero(&m->pos_embd);
    if (!m->tied_head) total -= bytes_or_zero(&m->tok_embd);
    return total;
}

kf_status kf_model_set_expert_selection(kf_model *m, int top_k, float coverage, kf_error *err) {
    int n_moe = 0;
    for (int l = 0; l < m->n_layer; l++) {
        const kf_layer *L = &m->layers[l];
        if (L->n_expert == 0) continue;
        n_moe++;
        if (top_k > L->n_expert)
            return kf_error_set(err, KF_ERR_ARG, "%s: top-k %d exceeds the %d experts of layer %d", m->path, top_k,
                                L->n_expert, l);
    }
    if (n_moe == 0) return kf_error_set(err, KF_ERR_ARG, "%s: no mixture-of-experts layer to select experts in", m->path);
    if (top_k <= 0 && !(coverage > 0 && coverage <= 1))
        return kf_error_set(err, KF_ERR_ARG, "%s: coverage must be in (0, 1], got %g", m->path, (double)coverage);
    for (int l = 0; l < m->n_layer; l++) {
        kf_layer *L = &m->layers[l];
        if (L->n_expert == 0) continue;
        L->top_k = top_k > 0 ? top_k : 0;
        L->coverage = top_k > 0 ? L->coverage : coverage;
    }
    return KF_OK;
}

static uint64_t fnv1a(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001B3ull;
    return h;
}

uint64_t kf_model_fingerprint(const kf_model *m) {
    uint64_t h = 0xCBF29CE484222325ull;
    int hp[] = {(int)m->arch, m->n_vocab, m->n_embd, m->n_layer, m->n_head, m->n_head_kv, m->head_dim};
    h = fnv1a(h, hp, sizeof hp);
    for (int l = 0; l < m->n_layer; l++) h = fnv1a(h, &m->layers[l].n_ff, sizeof(int));
    int n = kf_model_list_tensors(m, NULL, 0);
    kf_named_tensor *ts = malloc((size_t)(n > 0 ? n : 1) * sizeof *ts);
    if (!ts) return h;
    n = kf_model_list_tensors(m, ts, n);
    for (int i = 0; i < n; i++) {
        const kf_tensor *t = ts[i].t;
        h = fnv1a(h, ts[i].name, strlen(ts[i].name));
        h = fnv1a(h, t->ne, sizeof t->ne);
        int64_t ne = kf_tensor_nelem(t), step = ne > 4096 ? ne / 4096 : 1;
        for (int64_t k = 0; k < ne; k += step) { // the decoded value: one fingerprint whatever the load kept
            float v = kf_tensor_get_f32(t, k);
            h = fnv1a(h, &v, sizeof v);
        }
    }
    free(ts);
    return h;
}
