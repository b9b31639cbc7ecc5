// The Hugging Face toolkit of the architecture files (hf_io.h).
#include "arch/hf_io.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *shape_str(int ndim, const int64_t *ne, char *buf, size_t n) {
    kf_tensor t = {0};
    kf_tensor_set_shape(&t, ndim, ne);
    return kf_tensor_shape_str(&t, buf, n);
}

// Looks a tensor up and checks dtype and shape; *out NULL when absent.
static kf_status lookup(kf_hf_loader *ld, const char *name, int ndim, const int64_t *ne, bool required,
                        const kf_st_tensor **out, kf_error *err) {
    const kf_st_tensor *s = kf_st_set_find(ld->st, name);
    *out = NULL;
    if (!s) {
        if (required) return kf_error_set(err, KF_ERR_FORMAT, "%s: missing tensor '%s'", ld->where, name);
        return KF_OK;
    }
    const char *file = ld->st->paths[s->file];
    ld->used[s - ld->st->tensors] = true;
    if (s->dtype != KF_DTYPE_F32 && s->dtype != KF_DTYPE_F16 && s->dtype != KF_DTYPE_BF16)
        return kf_error_set(err, KF_ERR_UNSUPPORTED, "%s: tensor '%s' has dtype %s (kfuse reads F32, F16, BF16)", file,
                            name, s->dtype_name);
    bool same = s->ndim == ndim;
    for (int i = 0; i < ndim && same; i++) same = s->ne[i] == ne[i];
    if (!same) {
        char got[80], want[80];
        return kf_error_set(err, KF_ERR_FORMAT, "%s: tensor '%s' has shape %s, config.json implies %s", file, name,
                            shape_str(s->ndim, s->ne, got, sizeof got), shape_str(ndim, ne, want, sizeof want));
    }
    *out = s;
    return KF_OK;
}

static bool in_place(const kf_st_tensor *s) { return s->dtype == KF_DTYPE_F32 && (uintptr_t)s->data % 4 == 0; }

kf_status kf_hf_get(kf_hf_loader *ld, const char *name, int ndim, const int64_t *ne, bool required, kf_tensor *t,
                    kf_error *err) {
    const kf_st_tensor *s;
    kf_status st = lookup(ld, name, ndim, ne, required, &s, err);
    if (st != KF_OK || !s) return st;
    kf_tensor_set_shape(t, ndim, ne);
    t->src_dtype = s->dtype;
    t->dtype = KF_DTYPE_F32;
    if (ld->keep_dtype && ndim == 2 && s->dtype != KF_DTYPE_F32) { // F16 or BF16 (lookup checked)
        t->dtype = s->dtype;
        if ((uintptr_t)s->data % 2 == 0) {
            t->data = (float *)s->data; // 16-bit values in the read-only map
            return KF_OK;
        }
        void *dst = kf_model_alloc_bytes(ld->m, kf_tensor_nbytes(t));
        if (!dst)
            return kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory for tensor '%s'", ld->st->paths[s->file], name);
        memcpy(dst, s->data, kf_tensor_nbytes(t));
        t->data = dst;
        return KF_OK;
    }
    if (in_place(s)) {
        t->data = (float *)s->data; // read-only map: weights are never written in place
        return KF_OK;
    }
    float *dst = kf_model_alloc(ld->m, s->nelem);
    if (!dst) return kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory for tensor '%s'", ld->st->paths[s->file], name);
    t->data = dst;
    kf_dtype_to_f32(s->dtype, s->data, dst, s->nelem); // any alignment (core/tensor.h)
    return KF_OK;
}

kf_status kf_hf_get_conv1d(kf_hf_loader *ld, const char *name, int64_t n_in, int64_t n_out, int n_parts,
                           kf_tensor **parts, kf_error *err) {
    const kf_st_tensor *s;
    int64_t ne[2] = {n_in, n_out};
    kf_status st = lookup(ld, name, 2, ne, true, &s, err);
    if (st != KF_OK) return st;
    const char *file = ld->st->paths[s->file];
    const float *src = s->data; // (n_in, n_out)
    float *tmp = NULL;
    if (!in_place(s)) {
        tmp = malloc(sizeof(float) * (size_t)(s->nelem ? s->nelem : 1));
        if (!tmp) return kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory for tensor '%s'", file, name);
        kf_dtype_to_f32(s->dtype, s->data, tmp, s->nelem);
        src = tmp;
    }
    int64_t n = n_out / n_parts;
    for (int p = 0; p < n_parts && st == KF_OK; p++) {
        int64_t pne[2] = {n, n_in};
        if ((st = kf_model_alloc_tensor(ld->m, parts[p], 2, pne, err)) != KF_OK) break;
        parts[p]->src_dtype = s->dtype;
        float *dst = parts[p]->data; // (n, n_in)
        for (int64_t i = 0; i < n_in; i++)
            for (int64_t j = 0; j < n; j++) dst[j * n_in + i] = src[i * n_out + p * n + j];
    }
    free(tmp);
    return st;
}

void kf_hf_skip(kf_hf_loader *ld, const char *name) {
    const kf_st_tensor *s = kf_st_set_find(ld->st, name);
    if (s) ld->used[s - ld->st->tensors] = true;
}

bool kf_hf_has(const kf_hf_loader *ld, const char *name) { return kf_st_set_find(ld->st, name) != NULL; }

kf_status kf_hf_outs_add(kf_hf_outs *o, const kf_tensor *t, kf_error *err, const char *fmt, ...) {
    if (o->n == o->cap) {
        int cap = o->cap ? 2 * o->cap : 64;
        kf_hf_out *nt = realloc(o->t, sizeof *nt * (size_t)cap);
        if (!nt) return kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory", o->dir);
        o->t = nt;
        o->cap = cap;
    }
    kf_hf_out *e = &o->t[o->n++];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->name, sizeof e->name, fmt, ap);
    va_end(ap);
    e->t = *t;
    return KF_OK;
}

float *kf_hf_outs_alloc(kf_hf_outs *o, int64_t n) {
    if (o->n_owned == o->cap_owned) {
        int cap = o->cap_owned ? 2 * o->cap_owned : 64;
        void **no = realloc(o->owned, sizeof *no * (size_t)cap);
        if (!no) return NULL;
        o->owned = no;
        o->cap_owned = cap;
    }
    float *p = calloc((size_t)(n > 0 ? n : 1), sizeof *p);
    if (p) o->owned[o->n_owned++] = p;
    return p;
}

void kf_hf_outs_free(kf_hf_outs *o) {
    for (int i = 0; i < o->n_owned; i++) free(o->owned[i]);
    free(o->owned);
    free(o->t);
}

cJSON *kf_hf_json_f32(float x) {
    char b[32];
    for (int digits = 6; digits <= 9; digits++) {
        snprintf(b, sizeof b, "%.*g", digits, (double)x);
        if (strtof(b, NULL) == x) break;
    }
    return cJSON_CreateNumber(strtod(b, NULL));
}

kf_status kf_hf_get_head(kf_hf_loader *ld, bool tie, kf_error *err) {
    kf_model *m = ld->m;
    if (!tie && kf_hf_has(ld, "lm_head.weight"))
        return kf_hf_get2(ld, "lm_head.weight", m->n_vocab, m->n_embd, true, &m->lm_head, err);
    kf_hf_skip(ld, "lm_head.weight");
    m->lm_head = m->tok_embd;
    m->tied_head = true;
    return KF_OK;
}
