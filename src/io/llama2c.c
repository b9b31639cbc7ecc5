// llama2.c checkpoint reader and writer (format in llama2c.h).
#include "io/llama2c.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "formats/llama2c.h"
#include "arch/arch.h"
#include "arch/rope.h"

#define L2C_ROPE_THETA 10000.0f
#define L2C_NORM_EPS 1e-5f

// Points t at the next rows*cols floats of the file.
static float *take(float **p, kf_tensor *t, int ndim, int64_t rows, int64_t cols) {
    int64_t ne[2] = {rows, cols};
    kf_tensor_set_shape(t, ndim, ne);
    t->src_dtype = KF_DTYPE_F32;
    t->data = *p;
    *p += rows * (ndim == 2 ? cols : 1);
    return t->data;
}

kf_status kf_model_load_llama2c(kf_model **out, const char *path, kf_error *err) {
    *out = NULL;
    kf_mmap map;
    kf_status st = kf_mmap_open(&map, path, err);
    if (st != KF_OK) return st;
    kf_l2c_header h = {0};
    if ((st = kf_l2c_read_header(&map, path, &h, err)) != KF_OK) {
        kf_mmap_close(&map);
        return st;
    }
    kf_model *m = kf_model_new();
    if (!m) {
        kf_mmap_close(&map);
        return kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory", path);
    }
    float *base = (float *)((char *)map.data + KF_L2C_HEADER_BYTES); // 28 bytes: float-aligned in the page-aligned map
    if ((st = kf_model_add_map(m, map, err)) != KF_OK) {
        kf_model_free(m);
        return st;
    }
    m->layers = calloc((size_t)h.n_layers, sizeof *m->layers);
    if (!m->layers) {
        kf_model_free(m);
        return kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory", path);
    }
    kf_arch_set_traits(m, KF_ARCH_LLAMA);
    m->n_vocab = h.vocab_size;
    m->n_embd = h.dim;
    m->n_layer = h.n_layers;
    m->n_head = h.n_heads;
    m->n_head_kv = h.n_kv_heads;
    m->head_dim = h.dim / h.n_heads;
    m->n_ctx_train = h.seq_len;
    m->norm_eps = L2C_NORM_EPS;
    m->rope_theta = L2C_ROPE_THETA;
    m->bos_id = 1; // llama2.c's tokenizers: <s> = 1, </s> = 2
    m->eos_id = 2;

    int64_t C = h.dim, F = h.hidden_dim, V = h.vocab_size, Dh = m->head_dim, KV = Dh * h.n_kv_heads;
    float *p = base;
    take(&p, &m->tok_embd, 2, V, C);
    // Layer-major arrays: one pass per array, layer by layer.
    for (int l = 0; l < m->n_layer; l++) take(&p, &m->layers[l].attn_norm_w, 1, C, 1);
    for (int l = 0; l < m->n_layer; l++) take(&p, &m->layers[l].wq, 2, C, C);
    for (int l = 0; l < m->n_layer; l++) take(&p, &m->layers[l].wk, 2, KV, C);
    for (int l = 0; l < m->n_layer; l++) take(&p, &m->layers[l].wv, 2, KV, C);
    for (int l = 0; l < m->n_layer; l++) take(&p, &m->layers[l].wo, 2, C, C);
    for (int l = 0; l < m->n_layer; l++) take(&p, &m->layers[l].ffn_norm_w, 1, C, 1);
    for (int l = 0; l < m->n_layer; l++) take(&p, &m->layers[l].w_gate, 2, F, C);
    for (int l = 0; l < m->n_layer; l++) take(&p, &m->layers[l].w_down, 2, C, F);
    for (int l = 0; l < m->n_layer; l++) take(&p, &m->layers[l].w_up, 2, F, C);
    take(&p, &m->out_norm_w, 1, C, 1);
    p += 2 * (int64_t)h.seq_len * (Dh / 2); // freq_cis_real, freq_cis_imag: recomputed by the runtime
    if (h.shared) {
        m->lm_head = m->tok_embd;
        m->tied_head = true;
    } else {
        take(&p, &m->lm_head, 2, V, C);
    }
    // wq/wk: interleaved RoPE rows back to rotate-half, into owned buffers.
    for (int l = 0; l < m->n_layer && st == KF_OK; l++) {
        kf_layer *L = &m->layers[l];
        kf_tensor *ts[2] = {&L->wq, &L->wk};
        int heads[2] = {h.n_heads, h.n_kv_heads};
        for (int i = 0; i < 2; i++) {
            float *dst = kf_model_alloc(m, kf_tensor_nelem(ts[i]));
            if (!dst) {
                st = kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory", path);
                break;
            }
            kf_rope_rows_from_interleaved(ts[i]->data, dst, heads[i], Dh, C);
            ts[i]->data = dst;
        }
    }
    for (int l = 0; l < m->n_layer; l++) m->layers[l].n_ff = h.hidden_dim;
    if (st == KF_OK) st = kf_model_validate(m, path, err);
    if (st != KF_OK) {
        kf_model_free(m);
        return st;
    }
    snprintf(m->path, sizeof m->path, "%s", path);
    snprintf(m->format, sizeof m->format, "llama2c");
    *out = m;
    return KF_OK;
}

// Writes rows*cols floats; rope_heads > 0 stores rows in the interleaved layout.
static bool write_rows(FILE *f, const float *x, int64_t rows, int64_t cols, int rope_heads) {
    if (rope_heads == 0) return fwrite(x, sizeof(float), (size_t)(rows * cols), f) == (size_t)(rows * cols);
    for (int64_t r = 0; r < rows; r++) {
        int64_t src = kf_rope_rotate_half_row(r, rows / rope_heads);
        if (fwrite(x + src * cols, sizeof(float), (size_t)cols, f) != (size_t)cols) return false;
    }
    return true;
}

static kf_status check_writable(const kf_model *m, const char *path, kf_error *err) {
    kf_status st = kf_model_validate(m, path, err);
    if (st != KF_OK) return st;
    if (m->arch != KF_ARCH_LLAMA || !kf_arch_traits_match(m))
        return kf_error_set(err, KF_ERR_UNSUPPORTED, "%s: llama2.c holds only Llama-architecture models, not %s", path,
                            kf_arch_name(m->arch));
    if ((int64_t)m->head_dim * m->n_head != m->n_embd)
        return kf_error_set(err, KF_ERR_UNSUPPORTED, "%s: llama2.c needs head_dim * n_head == n_embd (%d * %d != %d)",
                            path, m->head_dim, m->n_head, m->n_embd);
    if (m->n_ctx_train <= 0)
        return kf_error_set(err, KF_ERR_ARG, "%s: the model has no context length to record", path);
    for (int l = 0; l < m->n_layer; l++) {
        const kf_layer *L = &m->layers[l];
        if (L->n_ff != m->layers[0].n_ff)
            return kf_error_set(err, KF_ERR_UNSUPPORTED,
                                "%s: llama2.c needs one FFN width for all layers (layer 0 has %d, layer %d has %d)",
                                path, m->layers[0].n_ff, l, L->n_ff);
        if (kf_tensor_present(&L->bq) || kf_tensor_present(&L->bk) || kf_tensor_present(&L->bv) ||
            kf_tensor_present(&L->bo) || kf_tensor_present(&L->b_up) || kf_tensor_present(&L->b_down))
            return kf_error_set(err, KF_ERR_UNSUPPORTED, "%s: llama2.c has no biases, but layer %d has some", path, l);
    }
    return KF_OK;
}

kf_status kf_llama2c_write(const kf_model *m, const char *path, kf_error *err) {
    kf_status st = check_writable(m, path, err);
    if (st != KF_OK) return st;
    int64_t Dh = m->head_dim, T = m->n_ctx_train, C = m->n_embd, F = m->layers[0].n_ff;
    // freq_cis as llama2.c computed it: angle t * theta^(-2i/Dh), i < Dh/2.
    float *freq = malloc(sizeof(float) * (size_t)(2 * T * (Dh / 2)));
    if (!freq) return kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory", path);
    for (int64_t t = 0; t < T; t++)
        for (int64_t i = 0; i < Dh / 2; i++) {
            float a = (float)t * powf(m->rope_theta, -(float)(2 * i) / (float)Dh);
            freq[t * (Dh / 2) + i] = cosf(a);
            freq[T * (Dh / 2) + t * (Dh / 2) + i] = sinf(a);
        }
    char tmp[1100];
    FILE *f;
    if ((st = kf_file_begin(path, tmp, sizeof tmp, &f, err)) != KF_OK) {
        free(freq);
        return st;
    }
    int32_t hdr[7] = {m->n_embd,     (int32_t)F,   m->n_layer,
                      m->n_head,     m->n_head_kv, m->tied_head ? m->n_vocab : -m->n_vocab,
                      m->n_ctx_train};
    bool ok = fwrite(hdr, sizeof hdr, 1, f) == 1 && write_rows(f, m->tok_embd.data, m->n_vocab, C, 0);
    const kf_layer *Ls = m->layers;
#define EACH_LAYER(expr)                                                                                               \
    for (int l = 0; ok && l < m->n_layer; l++) ok = (expr)
    EACH_LAYER(write_rows(f, Ls[l].attn_norm_w.data, C, 1, 0));
    EACH_LAYER(write_rows(f, Ls[l].wq.data, C, C, m->n_head));
    EACH_LAYER(write_rows(f, Ls[l].wk.data, Dh * m->n_head_kv, C, m->n_head_kv));
    EACH_LAYER(write_rows(f, Ls[l].wv.data, Dh * m->n_head_kv, C, 0));
    EACH_LAYER(write_rows(f, Ls[l].wo.data, C, C, 0));
    EACH_LAYER(write_rows(f, Ls[l].ffn_norm_w.data, C, 1, 0));
    EACH_LAYER(write_rows(f, Ls[l].w_gate.data, F, C, 0));
    EACH_LAYER(write_rows(f, Ls[l].w_down.data, C, F, 0));
    EACH_LAYER(write_rows(f, Ls[l].w_up.data, F, C, 0));
#undef EACH_LAYER
    ok = ok && write_rows(f, m->out_norm_w.data, C, 1, 0) && write_rows(f, freq, 2 * T, Dh / 2, 0);
    if (ok && !m->tied_head) ok = write_rows(f, m->lm_head.data, m->n_vocab, C, 0);
    free(freq);
    return kf_file_commit(f, ok, tmp, path, err);
}
