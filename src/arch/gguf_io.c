// The GGUF toolkit of the architecture files (gguf_io.h).
#include "arch/gguf_io.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arch/rope.h"

// Per-layer tensors under blk.N.<name>. rope: 'q' or 'k' marks rows that
// llama.cpp stores in the interleaved RoPE layout (llama architecture only);
// qkv: one of the parts GPT-2 stores fused as attn_qkv.
typedef struct {
    const char *name;
    size_t field; // offsetof(kf_layer, ...)
    char rope;
    bool qkv;
} layer_tensor;

static const layer_tensor LAYER_TENSORS[] = {
    {"attn_norm.weight", offsetof(kf_layer, attn_norm_w), 0, false},
    {"attn_norm.bias", offsetof(kf_layer, attn_norm_b), 0, false},
    {"attn_q.weight", offsetof(kf_layer, wq), 'q', true},
    {"attn_q.bias", offsetof(kf_layer, bq), 'q', true},
    {"attn_k.weight", offsetof(kf_layer, wk), 'k', true},
    {"attn_k.bias", offsetof(kf_layer, bk), 'k', true},
    {"attn_v.weight", offsetof(kf_layer, wv), 0, true},
    {"attn_v.bias", offsetof(kf_layer, bv), 0, true},
    {"attn_output.weight", offsetof(kf_layer, wo), 0, false},
    {"attn_output.bias", offsetof(kf_layer, bo), 0, false},
    {"ffn_norm.weight", offsetof(kf_layer, ffn_norm_w), 0, false},
    {"ffn_norm.bias", offsetof(kf_layer, ffn_norm_b), 0, false},
    {"ffn_gate.weight", offsetof(kf_layer, w_gate), 0, false},
    {"ffn_up.weight", offsetof(kf_layer, w_up), 0, false},
    {"ffn_up.bias", offsetof(kf_layer, b_up), 0, false},
    {"ffn_down.weight", offsetof(kf_layer, w_down), 0, false},
    {"ffn_down.bias", offsetof(kf_layer, b_down), 0, false},
};
#define N_LAYER_TENSORS (sizeof LAYER_TENSORS / sizeof LAYER_TENSORS[0])

static kf_tensor *layer_field(kf_layer *L, const layer_tensor *lt) { return (kf_tensor *)((char *)L + lt->field); }
static const kf_tensor *layer_field_c(const kf_layer *L, const layer_tensor *lt) {
    return (const kf_tensor *)((const char *)L + lt->field);
}

static int rope_heads(const kf_model *m, const layer_tensor *lt, bool interleaved) {
    return !interleaved ? 0 : lt->rope == 'q' ? m->n_head : lt->rope == 'k' ? m->n_head_kv : 0;
}

// ---- reading ----

const char *kf_gguf_key(kf_gguf_loader *ld, const char *suffix) {
    snprintf(ld->key, sizeof ld->key, "%s.%s", ld->arch, suffix);
    return ld->key;
}

kf_status kf_gguf_load_hparam(kf_gguf_loader *ld, const char *key, bool required, int64_t lo, int64_t hi, int *out) {
    int64_t v = *out;
    kf_status st = kf_gguf_get_int(ld->g, key, required, &v, ld->err);
    if (st != KF_OK) return st;
    if (v < lo || v > hi)
        return kf_error_set(ld->err, KF_ERR_FORMAT, "%s: key %s = %lld is out of range [%lld, %lld]", ld->g->path, key,
                            (long long)v, (long long)lo, (long long)hi);
    *out = (int)v;
    return KF_OK;
}

kf_status kf_gguf_load_hparam_layers(kf_gguf_loader *ld, const char *key, bool required, int64_t lo, int64_t hi,
                                     int *out) {
    const kf_gguf_kv *kv = kf_gguf_find_kv(ld->g, key);
    if (!kv || kv->type != KF_GGUF_ARRAY) return kf_gguf_load_hparam(ld, key, required, lo, hi, out);
    int64_t *v, n;
    kf_status st = kf_gguf_get_int_array(ld->g, key, &v, &n, ld->err);
    if (st != KF_OK) return st;
    if (n != ld->m->n_layer)
        st = kf_error_set(ld->err, KF_ERR_FORMAT, "%s: key %s has %lld entries for %d layers", ld->g->path, key,
                          (long long)n, ld->m->n_layer);
    for (int64_t l = 1; st == KF_OK && l < n; l++)
        if (v[l] != v[0])
            st = kf_error_set(ld->err, KF_ERR_UNSUPPORTED,
                              "%s: key %s differs between layers (%lld in layer 0, %lld in layer %lld); kfuse models "
                              "have one value for all layers",
                              ld->g->path, key, (long long)v[0], (long long)v[l], (long long)l);
    if (st == KF_OK && (v[0] < lo || v[0] > hi))
        st = kf_error_set(ld->err, KF_ERR_FORMAT, "%s: key %s = %lld is out of range [%lld, %lld]", ld->g->path, key,
                          (long long)v[0], (long long)lo, (long long)hi);
    if (st == KF_OK) *out = (int)v[0];
    free(v);
    return st;
}

kf_status kf_gguf_load_ffn_widths(kf_gguf_loader *ld) {
    kf_model *m = ld->m;
    const char *key = kf_gguf_key(ld, "feed_forward_length");
    const kf_gguf_kv *kv = kf_gguf_find_kv(ld->g, key);
    if (kv && kv->type == KF_GGUF_ARRAY) {
        int64_t *v, n;
        kf_status st = kf_gguf_get_int_array(ld->g, key, &v, &n, ld->err);
        if (st != KF_OK) return st;
        if (n != m->n_layer) {
            free(v);
            return kf_error_set(ld->err, KF_ERR_FORMAT, "%s: key %s has %lld entries for %d layers", ld->g->path, key,
                                (long long)n, m->n_layer);
        }
        for (int l = 0; l < m->n_layer; l++) {
            if (v[l] < 1 || v[l] > KF_MAX_FFN) {
                free(v);
                return kf_error_set(ld->err, KF_ERR_FORMAT, "%s: key %s gives layer %d a width of %lld", ld->g->path,
                                    key, l, (long long)v[l]);
            }
            m->layers[l].n_ff = (int)v[l];
        }
        free(v);
        return KF_OK;
    }
    int F = 0;
    kf_status st = kf_gguf_load_hparam(ld, key, true, 1, KF_MAX_FFN, &F);
    for (int l = 0; st == KF_OK && l < m->n_layer; l++) m->layers[l].n_ff = F;
    return st;
}

kf_status kf_gguf_load_tensor(kf_gguf_loader *ld, const char *name, kf_tensor *dst, bool required, int heads) {
    const kf_gguf_tensor *t = kf_gguf_find_tensor(ld->g, name);
    if (!t) {
        if (required) return kf_error_set(ld->err, KF_ERR_FORMAT, "%s: missing tensor %s", ld->g->path, name);
        return KF_OK;
    }
    if (t->ndim > 2)
        return kf_error_set(ld->err, KF_ERR_FORMAT, "%s: tensor %s has %d dimensions, expected at most 2", ld->g->path,
                            name, t->ndim);
    kf_tensor_set_shape(dst, t->ndim, t->ne);
    dst->src_dtype = t->dtype;
    int64_t n = kf_tensor_nelem(dst), rows = t->ne[0], cols = t->ndim == 2 ? t->ne[1] : 1;
    if (heads > 0 && (rows % heads != 0 || (rows / heads) % 2 != 0))
        return kf_error_set(ld->err, KF_ERR_FORMAT, "%s: tensor %s has %lld rows, not %d heads of even size",
                            ld->g->path, name, (long long)rows, heads);
    dst->dtype = KF_DTYPE_F32;
    if (ld->keep_dtype && t->ndim == 2 &&
        (t->dtype == KF_DTYPE_F16 || t->dtype == KF_DTYPE_BF16 || t->dtype == KF_DTYPE_Q8_0)) {
        dst->dtype = t->dtype;
        if (heads == 0) {
            dst->data = (float *)t->data; // read-only map; kernels load any alignment
            return KF_OK;
        }
        char *p = kf_model_alloc_bytes(ld->m, t->nbytes);
        if (!p) return kf_error_set(ld->err, KF_ERR_NOMEM, "%s: out of memory loading %s", ld->g->path, name);
        size_t row = kf_dtype_size(t->dtype, cols); // interleaved file row r -> rotate-half row
        for (int64_t r = 0; r < rows; r++)
            memcpy(p + (size_t)kf_rope_rotate_half_row(r, rows / heads) * row, t->data + (size_t)r * row, row);
        dst->data = (float *)p;
        return KF_OK;
    }
    if (t->dtype == KF_DTYPE_F32 && heads == 0 && (uintptr_t)t->data % _Alignof(float) == 0) {
        dst->data = (float *)t->data; // read-only map: transforms copy before editing
        return KF_OK;
    }
    dst->data = kf_model_alloc(ld->m, n);
    if (!dst->data) return kf_error_set(ld->err, KF_ERR_NOMEM, "%s: out of memory loading %s", ld->g->path, name);
    if (heads == 0) {
        kf_gguf_tensor_to_f32(t, dst->data);
        return KF_OK;
    }
    float *tmp = malloc(sizeof(float) * (size_t)n);
    if (!tmp) return kf_error_set(ld->err, KF_ERR_NOMEM, "%s: out of memory loading %s", ld->g->path, name);
    kf_gguf_tensor_to_f32(t, tmp);
    kf_rope_rows_from_interleaved(tmp, dst->data, heads, rows / heads, cols);
    free(tmp);
    return KF_OK;
}

kf_status kf_gguf_load_layer(kf_gguf_loader *ld, int l, bool interleaved) {
    for (size_t i = 0; i < N_LAYER_TENSORS; i++) {
        const layer_tensor *lt = &LAYER_TENSORS[i];
        char name[KF_GGUF_MAX_NAME];
        snprintf(name, sizeof name, "blk.%d.%s", l, lt->name);
        kf_status st = kf_gguf_load_tensor(ld, name, layer_field(&ld->m->layers[l], lt), false,
                                      rope_heads(ld->m, lt, interleaved));
        if (st != KF_OK) return st;
    }
    return KF_OK;
}

// ---- writing ----

void *kf_gguf_out_alloc(kf_gguf_out *o, size_t n) {
    if (o->n_scratch == o->cap_scratch) {
        int cap = o->cap_scratch ? 2 * o->cap_scratch : 32;
        void **s = realloc(o->scratch, sizeof *s * (size_t)cap);
        if (!s) {
            if (o->err.code == KF_OK) kf_error_set(&o->err, KF_ERR_NOMEM, "out of memory");
            return NULL;
        }
        o->scratch = s;
        o->cap_scratch = cap;
    }
    void *p = calloc(1, n ? n : 1);
    if (!p) {
        if (o->err.code == KF_OK) kf_error_set(&o->err, KF_ERR_NOMEM, "out of memory");
        return NULL;
    }
    o->scratch[o->n_scratch++] = p;
    return p;
}

void kf_gguf_out_free(kf_gguf_out *o) {
    for (int i = 0; i < o->n_scratch; i++) free(o->scratch[i]);
    free(o->scratch);
    o->scratch = NULL;
    o->n_scratch = o->cap_scratch = 0;
}

// 2-D weights take the chosen type, except that Q8_0 needs rows of whole
// 32-blocks and other rows fall back to F16; norms and biases stay F32 (all
// as llama.cpp's converter does).
static kf_dtype tensor_type(const kf_gguf_out *o, int ndim, int64_t row_len) {
    if (ndim != 2) return KF_DTYPE_F32;
    return o->wtype == KF_DTYPE_Q8_0 && row_len % 32 != 0 ? KF_DTYPE_F16 : o->wtype;
}

void kf_gguf_out_tensor(kf_gguf_out *o, const char *name, const kf_tensor *t, int heads) {
    if (!kf_tensor_present(t)) return;
    const int64_t *order = NULL;
    if (heads > 0) {
        if (t->ndim > 2 || t->ne[0] % heads != 0 || (t->ne[0] / heads) % 2 != 0) {
            if (o->err.code == KF_OK)
                kf_error_set(&o->err, KF_ERR_ARG, "tensor '%s': %lld rows do not split into %d heads of even size",
                             name, (long long)t->ne[0], heads);
            return;
        }
        int64_t *ord = kf_gguf_out_alloc(o, sizeof *ord * (size_t)t->ne[0]);
        if (!ord) return;
        kf_rope_interleaved_order(heads, t->ne[0] / heads, ord);
        order = ord;
    }
    kf_gguf_rows part = {t->data, t->ne[0], t->dtype};
    kf_gguf_writer_add_stacked(o->w, name, t->ndim, t->ne, &part, 1, order, tensor_type(o, t->ndim, t->ne[t->ndim - 1]));
}

static const char *base_name(const char *path) {
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--; // a folder given with a trailing slash
    const char *p = path + n;
    while (p > path && p[-1] != '/') p--;
    return p;
}

static uint32_t file_type(kf_dtype d) {
    switch (d) { // llama.cpp's LLAMA_FTYPE_* numbers
    case KF_DTYPE_F16: return 1;
    case KF_DTYPE_Q8_0: return 7;
    case KF_DTYPE_BF16: return 32;
    default: return 0;
    }
}

// A copy of src (rows x cols) in o's scratch with rows padded to `rows_to`
// and columns to `cols_to`, zeros in the padding; NULL when out of memory.
static float *padded(kf_gguf_out *o, const float *src, int64_t rows, int64_t cols, int64_t rows_to, int64_t cols_to) {
    float *dst = kf_gguf_out_alloc(o, sizeof *dst * (size_t)(rows_to * cols_to));
    if (!dst) return NULL;
    for (int64_t r = 0; r < rows; r++) memcpy(dst + r * cols_to, src + r * cols, sizeof *dst * (size_t)cols);
    return dst;
}

// t (F rows, or C rows of F columns when `cols`) padded to F_to.
static void pad_tensor(kf_gguf_out *o, kf_tensor *t, bool cols, int64_t F_to) {
    if (!kf_tensor_present(t)) return;
    int64_t rows = t->ne[0], ncol = t->ndim == 2 ? t->ne[1] : 1;
    float *d = cols ? padded(o, t->data, rows, ncol, rows, F_to) : padded(o, t->data, rows, ncol, F_to, ncol);
    t->data = d;
    t->ne[cols ? 1 : 0] = F_to;
}

const kf_model *kf_gguf_out_pad_ffn(kf_gguf_out *o, const kf_model *m) {
    int F = 0;
    bool uniform = true;
    for (int l = 0; l < m->n_layer; l++) {
        F = m->layers[l].n_ff > F ? m->layers[l].n_ff : F;
        uniform = uniform && m->layers[l].n_ff == m->layers[0].n_ff;
    }
    if (uniform) return m;
    kf_model *v = kf_gguf_out_alloc(o, sizeof *v);
    kf_layer *layers = kf_gguf_out_alloc(o, sizeof *layers * (size_t)m->n_layer);
    if (!v || !layers) return NULL;
    *v = *m; // shallow: only the padded FFN tensors are new
    v->layers = layers;
    for (int l = 0; l < m->n_layer; l++) {
        kf_layer *L = &layers[l];
        *L = m->layers[l];
        if (L->n_ff == F) continue;
        pad_tensor(o, &L->w_gate, false, F); // (F, C)
        pad_tensor(o, &L->w_up, false, F);   // (F, C)
        pad_tensor(o, &L->b_up, false, F);   // (F)
        pad_tensor(o, &L->w_down, true, F);  // (C, F)
        L->n_ff = F;
    }
    return o->err.code == KF_OK ? v : NULL;
}

void kf_gguf_out_hparams(kf_gguf_out *o, const kf_model *m, const char *arch) {
    kf_gguf_writer *w = o->w;
    char key[128], name[256];
    snprintf(name, sizeof name, "%s", m->path[0] ? base_name(m->path) : "kfuse");
    kf_gguf_writer_add_str(w, "general.architecture", arch);
    kf_gguf_writer_add_str(w, "general.name", name);
    kf_gguf_writer_add_u32(w, "general.alignment", KF_GGUF_DEFAULT_ALIGNMENT);
    kf_gguf_writer_add_u32(w, "general.file_type", file_type(o->wtype));
#define KEY(suffix) (snprintf(key, sizeof key, "%s." suffix, arch), key)
    kf_gguf_writer_add_u32(w, KEY("context_length"), (uint32_t)m->n_ctx_train);
    kf_gguf_writer_add_u32(w, KEY("embedding_length"), (uint32_t)m->n_embd);
    kf_gguf_writer_add_u32(w, KEY("block_count"), (uint32_t)m->n_layer);
    bool uniform = true;
    for (int l = 1; l < m->n_layer; l++) uniform = uniform && m->layers[l].n_ff == m->layers[0].n_ff;
    if (uniform) {
        kf_gguf_writer_add_u32(w, KEY("feed_forward_length"), (uint32_t)m->layers[0].n_ff);
    } else { // one width per layer: llama.cpp's `deci` reads the array (its `llama` sizes every layer like layer 0)
        int32_t *ff = kf_gguf_out_alloc(o, sizeof *ff * (size_t)m->n_layer);
        if (ff) {
            for (int l = 0; l < m->n_layer; l++) ff[l] = m->layers[l].n_ff;
            kf_gguf_writer_add_i32_array(w, KEY("feed_forward_length"), ff, m->n_layer);
        }
    }
    kf_gguf_writer_add_u32(w, KEY("attention.head_count"), (uint32_t)m->n_head);
    kf_gguf_writer_add_u32(w, KEY("attention.head_count_kv"), (uint32_t)m->n_head_kv);
#undef KEY
}

void kf_gguf_out_layer(kf_gguf_out *o, const kf_model *m, int l, bool interleaved, bool fused_qkv) {
    const kf_layer *L = &m->layers[l];
    char name[KF_GGUF_MAX_NAME];
    for (size_t i = 0; i < N_LAYER_TENSORS; i++) {
        const layer_tensor *lt = &LAYER_TENSORS[i];
        if (fused_qkv && lt->field == offsetof(kf_layer, wq)) { // Q, K, V stacked in place of the three
            int64_t C = m->n_embd, rows = L->wq.ne[0] + L->wk.ne[0] + L->wv.ne[0];
            kf_gguf_rows parts[3] = {{L->wq.data, L->wq.ne[0], L->wq.dtype},
                                     {L->wk.data, L->wk.ne[0], L->wk.dtype},
                                     {L->wv.data, L->wv.ne[0], L->wv.dtype}};
            snprintf(name, sizeof name, "blk.%d.attn_qkv.weight", l);
            kf_gguf_writer_add_stacked(o->w, name, 2, (int64_t[]){rows, C}, parts, 3, NULL, tensor_type(o, 2, C));
            if (kf_tensor_present(&L->bq)) {
                kf_gguf_rows bparts[3] = {{L->bq.data, L->bq.ne[0], L->bq.dtype},
                                          {L->bk.data, L->bk.ne[0], L->bk.dtype},
                                          {L->bv.data, L->bv.ne[0], L->bv.dtype}};
                snprintf(name, sizeof name, "blk.%d.attn_qkv.bias", l);
                kf_gguf_writer_add_stacked(o->w, name, 1, (int64_t[]){rows}, bparts, 3, NULL, KF_DTYPE_F32);
            }
        }
        if (fused_qkv && lt->qkv) continue;
        snprintf(name, sizeof name, "blk.%d.%s", l, lt->name);
        kf_gguf_out_tensor(o, name, layer_field_c(L, lt), rope_heads(m, lt, interleaved));
    }
}
