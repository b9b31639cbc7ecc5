// GGUF reader and writer. Every count, string and offset read from the file
// is checked against the bytes that remain before it is used.
#include "io/gguf.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "moe/moe_io.h"

#define GGUF_MAGIC "GGUF"
#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_NAME 64 // ggml's limit, NUL included

// ---- reading: a bounds-checked cursor over the map ----

typedef struct {
    const uint8_t *base;
    size_t size, pos;
    const char *path;
    kf_error *err;
} cursor;

// Returns the constant so that the compiler sees every failed read is not KF_OK.
static kf_status eof_error(cursor *c, const char *what) {
    kf_error_set(c->err, KF_ERR_FORMAT, "%s: truncated: %s runs past the end of the file (offset %zu of %zu)", c->path,
                 what, c->pos, c->size);
    return KF_ERR_FORMAT;
}

static kf_status read_bytes(cursor *c, void *dst, size_t n, const char *what) {
    if (!kf_range_ok(c->pos, n, c->size)) return eof_error(c, what);
    memcpy(dst, c->base + c->pos, n);
    c->pos += n;
    return KF_OK;
}

static kf_status read_u32(cursor *c, uint32_t *v, const char *what) { return read_bytes(c, v, 4, what); }
static kf_status read_u64(cursor *c, uint64_t *v, const char *what) { return read_bytes(c, v, 8, what); }

// A GGUF string: u64 length + bytes (no NUL). Points into the map.
static kf_status read_str(cursor *c, const char **s, size_t *len, const char *what) {
    uint64_t n;
    kf_status st = read_u64(c, &n, what);
    if (st != KF_OK) return st;
    if (!kf_range_ok(c->pos, n, c->size)) {
        kf_error_set(c->err, KF_ERR_FORMAT, "%s: %s has length %llu, past the end of the file (offset %zu of %zu)",
                     c->path, what, (unsigned long long)n, c->pos, c->size);
        return KF_ERR_FORMAT;
    }
    *s = (const char *)c->base + c->pos;
    *len = (size_t)n;
    c->pos += (size_t)n;
    return KF_OK;
}

static size_t scalar_size(kf_gguf_type t) {
    switch (t) {
    case KF_GGUF_UINT8:
    case KF_GGUF_INT8:
    case KF_GGUF_BOOL: return 1;
    case KF_GGUF_UINT16:
    case KF_GGUF_INT16: return 2;
    case KF_GGUF_UINT32:
    case KF_GGUF_INT32:
    case KF_GGUF_FLOAT32: return 4;
    case KF_GGUF_UINT64:
    case KF_GGUF_INT64:
    case KF_GGUF_FLOAT64: return 8;
    default: return 0; // strings, arrays, unknown
    }
}

const char *kf_gguf_type_name(kf_gguf_type t) {
    static const char *names[] = {"uint8", "int8",   "uint16", "int16",  "uint32", "int32",  "float32",
                                  "bool",  "string", "array",  "uint64", "int64",  "float64"};
    return (unsigned)t < KF_GGUF_TYPE_COUNT ? names[t] : "unknown";
}

// Parses one key/value, leaving the cursor after it.
static kf_status read_kv(cursor *c, kf_gguf_kv *kv, int64_t index) {
    char what[64 + KF_ESC_NAME], key[KF_ESC_NAME];
    snprintf(what, sizeof what, "key %lld", (long long)index);
    kf_status st = read_str(c, &kv->key, &kv->key_len, what);
    if (st != KF_OK) return st;
    kf_str_escape(key, sizeof key, kv->key, kv->key_len); // for messages
    uint32_t type;
    snprintf(what, sizeof what, "type of key '%s'", key);
    if ((st = read_u32(c, &type, what)) != KF_OK) return st;
    if (type >= KF_GGUF_TYPE_COUNT)
        return kf_error_set(c->err, KF_ERR_FORMAT, "%s: key '%s' has unknown value type %u", c->path, key, type);
    kv->type = (kf_gguf_type)type;
    snprintf(what, sizeof what, "value of key '%s'", key);
    if (kv->type == KF_GGUF_STRING) {
        const char *s;
        size_t n;
        kv->val = c->base + c->pos;
        return read_str(c, &s, &n, what);
    }
    if (kv->type != KF_GGUF_ARRAY) {
        kv->val = c->base + c->pos;
        size_t n = scalar_size(kv->type);
        if (!kf_range_ok(c->pos, n, c->size)) return eof_error(c, what);
        c->pos += n;
        return KF_OK;
    }
    uint32_t at;
    uint64_t n;
    if ((st = read_u32(c, &at, what)) != KF_OK || (st = read_u64(c, &n, what)) != KF_OK) return st;
    if (at >= KF_GGUF_TYPE_COUNT || at == KF_GGUF_ARRAY)
        return kf_error_set(c->err, KF_ERR_FORMAT, "%s: key '%s' is an array of %s (type %u), not supported", c->path,
                            key, kf_gguf_type_name((kf_gguf_type)at), at);
    kv->arr_type = (kf_gguf_type)at;
    kv->arr_n = n;
    kv->val = c->base + c->pos;
    // Each element takes at least its scalar size (8 bytes for a string's
    // length), so the count is bounded by the bytes left.
    size_t elem = at == KF_GGUF_STRING ? 8 : scalar_size(kv->arr_type);
    if (n > (c->size - c->pos) / elem)
        return kf_error_set(c->err, KF_ERR_FORMAT,
                            "%s: key '%s' claims %llu array elements, more than the file holds", c->path, key,
                            (unsigned long long)n);
    if (at != KF_GGUF_STRING) {
        c->pos += (size_t)n * elem;
        return KF_OK;
    }
    for (uint64_t i = 0; i < n; i++) {
        const char *s;
        size_t len;
        if ((st = read_str(c, &s, &len, what)) != KF_OK) return st;
    }
    return KF_OK;
}

static bool str_eq(const char *s, size_t n, const char *z) { return strlen(z) == n && memcmp(s, z, n) == 0; }

static kf_status dtype_from_ggml(uint32_t t, kf_dtype *d) {
    switch (t) {
    case KF_GGML_F32: *d = KF_DTYPE_F32; return KF_OK;
    case KF_GGML_F16: *d = KF_DTYPE_F16; return KF_OK;
    case KF_GGML_BF16: *d = KF_DTYPE_BF16; return KF_OK;
    case KF_GGML_Q8_0: *d = KF_DTYPE_Q8_0; return KF_OK;
    default: return KF_ERR_UNSUPPORTED;
    }
}

static uint32_t ggml_from_dtype(kf_dtype d) {
    switch (d) {
    case KF_DTYPE_F16: return KF_GGML_F16;
    case KF_DTYPE_BF16: return KF_GGML_BF16;
    case KF_DTYPE_Q8_0: return KF_GGML_Q8_0;
    default: return KF_GGML_F32;
    }
}

static kf_status read_tensor_info(cursor *c, kf_gguf_tensor *t, int64_t index) {
    char what[64 + KF_ESC_NAME], name[KF_ESC_NAME];
    snprintf(what, sizeof what, "name of tensor %lld", (long long)index);
    kf_status st = read_str(c, &t->name, &t->name_len, what);
    if (st != KF_OK) return st;
    kf_str_escape(name, sizeof name, t->name, t->name_len); // for messages
    if (t->name_len == 0 || t->name_len >= GGUF_MAX_NAME)
        return kf_error_set(c->err, KF_ERR_FORMAT, "%s: tensor %lld has a name of %zu bytes (must be 1..%d)", c->path,
                            (long long)index, t->name_len, GGUF_MAX_NAME - 1);
    snprintf(what, sizeof what, "info of tensor '%s'", name);
    uint32_t nd;
    if ((st = read_u32(c, &nd, what)) != KF_OK) return st;
    if (nd < 1 || nd > KF_MAX_DIMS)
        return kf_error_set(c->err, KF_ERR_FORMAT, "%s: tensor '%s' has %u dimensions (must be 1..%d)", c->path, name,
                            nd, KF_MAX_DIMS);
    t->ndim = (int)nd;
    int64_t nelem = 1;
    for (int i = 0; i < t->ndim; i++) {
        uint64_t d;
        if ((st = read_u64(c, &d, what)) != KF_OK) return st;
        // Bounded by the file size long before int64 overflow matters.
        if (d < 1 || d > (uint64_t)INT64_MAX / 8 / (uint64_t)nelem)
            return kf_error_set(c->err, KF_ERR_FORMAT, "%s: tensor '%s' has bad dimension %d = %llu", c->path, name,
                                i, (unsigned long long)d);
        t->dims[i] = (int64_t)d;
        nelem *= (int64_t)d;
    }
    for (int i = 0; i < KF_MAX_DIMS; i++) t->ne[i] = i < t->ndim ? t->dims[t->ndim - 1 - i] : 1;
    uint32_t type;
    if ((st = read_u32(c, &type, what)) != KF_OK || (st = read_u64(c, &t->offset, what)) != KF_OK) return st;
    if (dtype_from_ggml(type, &t->dtype) != KF_OK)
        return kf_error_set(c->err, KF_ERR_UNSUPPORTED,
                            "%s: tensor '%s' has ggml type %u, not supported (F32, F16, BF16 and Q8_0 are)", c->path,
                            name, type);
    if (t->dtype == KF_DTYPE_Q8_0 && t->dims[0] % 32 != 0)
        return kf_error_set(c->err, KF_ERR_FORMAT, "%s: Q8_0 tensor '%s' has rows of %lld, not a multiple of 32",
                            c->path, name, (long long)t->dims[0]);
    t->nbytes = kf_dtype_size(t->dtype, nelem);
    return KF_OK;
}

static int cmp_offset(const void *a, const void *b) {
    const kf_gguf_tensor *x = *(const kf_gguf_tensor *const *)a, *y = *(const kf_gguf_tensor *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

// Checks alignment, extent and overlap of the tensor data, and sets data.
static kf_status place_tensors(kf_gguf *g, kf_error *err) {
    size_t data_size = g->map.size - g->data_offset;
    for (int64_t i = 0; i < g->n_tensors; i++) {
        kf_gguf_tensor *t = &g->tensors[i];
        char name[KF_ESC_NAME];
        if (t->offset % g->alignment != 0)
            return kf_error_set(err, KF_ERR_FORMAT,
                                "%s: tensor '%s' offset %llu is not a multiple of the alignment %u", g->path,
                                kf_str_escape(name, sizeof name, t->name, t->name_len), (unsigned long long)t->offset,
                                g->alignment);
        if (t->offset > SIZE_MAX || !kf_range_ok((size_t)t->offset, t->nbytes, data_size))
            return kf_error_set(err, KF_ERR_FORMAT,
                                "%s: tensor '%s' data [%llu, +%zu) lies outside the data section (%zu bytes)",
                                g->path, kf_str_escape(name, sizeof name, t->name, t->name_len),
                                (unsigned long long)t->offset, t->nbytes, data_size);
        t->data = (const uint8_t *)g->map.data + g->data_offset + t->offset;
    }
    if (g->n_tensors < 2) return KF_OK;
    const kf_gguf_tensor **order = malloc(sizeof *order * (size_t)g->n_tensors);
    if (!order) return kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory", g->path);
    for (int64_t i = 0; i < g->n_tensors; i++) order[i] = &g->tensors[i];
    qsort(order, (size_t)g->n_tensors, sizeof *order, cmp_offset);
    kf_status st = KF_OK;
    for (int64_t i = 1; i < g->n_tensors && st == KF_OK; i++) {
        const kf_gguf_tensor *a = order[i - 1], *b = order[i];
        char na[KF_ESC_NAME], nb[KF_ESC_NAME];
        if (a->offset + a->nbytes > b->offset)
            st = kf_error_set(err, KF_ERR_FORMAT, "%s: tensors '%s' and '%s' overlap in the data section", g->path,
                              kf_str_escape(na, sizeof na, a->name, a->name_len),
                              kf_str_escape(nb, sizeof nb, b->name, b->name_len));
    }
    free(order);
    return st;
}

static kf_status parse(kf_gguf *g, kf_error *err) {
    cursor c = {g->map.data, g->map.size, 0, g->path, err};
    char magic[4];
    kf_status st;
    if ((st = read_bytes(&c, magic, 4, "header")) != KF_OK) return st;
    if (memcmp(magic, GGUF_MAGIC, 4) != 0)
        return kf_error_set(err, KF_ERR_FORMAT, "%s: not a GGUF file (bad magic)", g->path);
    if ((st = read_u32(&c, &g->version, "header")) != KF_OK) return st;
    if (g->version != 2 && g->version != 3)
        return kf_error_set(err, KF_ERR_UNSUPPORTED,
                            "%s: GGUF version %u not supported (2 and 3 are; big-endian files are not)", g->path,
                            g->version);
    uint64_t nt, nkv;
    if ((st = read_u64(&c, &nt, "header")) != KF_OK || (st = read_u64(&c, &nkv, "header")) != KF_OK) return st;
    // A key/value takes at least 12 bytes, a tensor info at least 32.
    size_t left = c.size - c.pos;
    if (nkv > left / 12 || nt > left / 32)
        return kf_error_set(err, KF_ERR_FORMAT,
                            "%s: header claims %llu tensors and %llu keys, more than the file holds", g->path,
                            (unsigned long long)nt, (unsigned long long)nkv);
    g->n_kv = (int64_t)nkv;
    g->n_tensors = (int64_t)nt;
    g->kv = calloc(nkv ? nkv : 1, sizeof *g->kv);
    g->tensors = calloc(nt ? nt : 1, sizeof *g->tensors);
    if (!g->kv || !g->tensors) return kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory", g->path);
    char esc[KF_ESC_NAME];
    for (int64_t i = 0; i < g->n_kv; i++) {
        if ((st = read_kv(&c, &g->kv[i], i)) != KF_OK) return st;
        for (int64_t j = 0; j < i; j++)
            if (g->kv[j].key_len == g->kv[i].key_len && memcmp(g->kv[j].key, g->kv[i].key, g->kv[i].key_len) == 0)
                return kf_error_set(err, KF_ERR_FORMAT, "%s: duplicate key '%s'", g->path,
                                    kf_str_escape(esc, sizeof esc, g->kv[i].key, g->kv[i].key_len));
    }
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    const kf_gguf_kv *al = kf_gguf_find_kv(g, "general.alignment");
    if (al) {
        if (al->type != KF_GGUF_UINT32)
            return kf_error_set(err, KF_ERR_FORMAT, "%s: general.alignment has type %s, expected uint32", g->path,
                                kf_gguf_type_name(al->type));
        memcpy(&g->alignment, al->val, 4);
        if (g->alignment == 0 || (g->alignment & (g->alignment - 1)) != 0)
            return kf_error_set(err, KF_ERR_FORMAT, "%s: general.alignment %u is not a power of two", g->path,
                                g->alignment);
    }
    for (int64_t i = 0; i < g->n_tensors; i++) {
        if ((st = read_tensor_info(&c, &g->tensors[i], i)) != KF_OK) return st;
        for (int64_t j = 0; j < i; j++)
            if (g->tensors[j].name_len == g->tensors[i].name_len &&
                memcmp(g->tensors[j].name, g->tensors[i].name, g->tensors[i].name_len) == 0)
                return kf_error_set(err, KF_ERR_FORMAT, "%s: duplicate tensor '%s'", g->path,
                                    kf_str_escape(esc, sizeof esc, g->tensors[i].name, g->tensors[i].name_len));
    }
    size_t pad = (g->alignment - c.pos % g->alignment) % g->alignment;
    if (g->n_tensors > 0 && !kf_range_ok(c.pos, pad, c.size)) return eof_error(&c, "padding before the tensor data");
    g->data_offset = c.pos + pad > c.size ? c.size : c.pos + pad;
    return place_tensors(g, err);
}

kf_status kf_gguf_open(kf_gguf **out, const char *path, kf_error *err) {
    *out = NULL;
    kf_gguf *g = calloc(1, sizeof *g);
    if (!g) return kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory", path);
    snprintf(g->path, sizeof g->path, "%s", path);
    kf_status st = kf_mmap_open(&g->map, path, err);
    if (st == KF_OK) st = parse(g, err);
    if (st != KF_OK) {
        kf_gguf_close(g);
        return st;
    }
    *out = g;
    return KF_OK;
}

void kf_gguf_close(kf_gguf *g) {
    if (!g) return;
    kf_mmap_close(&g->map);
    free(g->kv);
    free(g->tensors);
    free(g);
}

kf_mmap kf_gguf_take_map(kf_gguf *g) {
    kf_mmap m = g->map;
    g->map.data = NULL;
    g->map.size = 0;
    return m;
}

const kf_gguf_kv *kf_gguf_find_kv(const kf_gguf *g, const char *key) {
    for (int64_t i = 0; i < g->n_kv; i++)
        if (str_eq(g->kv[i].key, g->kv[i].key_len, key)) return &g->kv[i];
    return NULL;
}

const kf_gguf_tensor *kf_gguf_find_tensor(const kf_gguf *g, const char *name) {
    for (int64_t i = 0; i < g->n_tensors; i++)
        if (str_eq(g->tensors[i].name, g->tensors[i].name_len, name)) return &g->tensors[i];
    return NULL;
}

void kf_gguf_tensor_to_f32(const kf_gguf_tensor *t, float *dst) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->dims[i];
    kf_dtype_to_f32(t->dtype, t->data, dst, n);
}

// ---- typed getters ----

static bool is_int_type(kf_gguf_type t) { return t <= KF_GGUF_INT32 || t == KF_GGUF_UINT64 || t == KF_GGUF_INT64; }

// Reads the integer of type t at p (an integer type); false when a uint64
// does not fit int64. Little-endian host, as everywhere in kfuse.
static bool int_at(kf_gguf_type t, const uint8_t *p, int64_t *v) {
    uint64_t u = 0;
    memcpy(&u, p, scalar_size(t));
    switch (t) {
    case KF_GGUF_INT8: *v = (int8_t)u; break;
    case KF_GGUF_INT16: *v = (int16_t)u; break;
    case KF_GGUF_INT32: *v = (int32_t)u; break;
    case KF_GGUF_UINT64:
        if (u > (uint64_t)INT64_MAX) return false;
        *v = (int64_t)u;
        break;
    default: *v = (int64_t)u; break; // unsigned types; INT64 as is
    }
    return true;
}

static kf_status missing(const kf_gguf *g, const char *key, bool required, kf_error *err) {
    if (!required) return KF_OK;
    return kf_error_set(err, KF_ERR_FORMAT, "%s: missing key %s", g->path, key);
}

static kf_status wrong_type(const kf_gguf *g, const char *key, const kf_gguf_kv *kv, const char *expected,
                            kf_error *err) {
    if (kv->type == KF_GGUF_ARRAY)
        return kf_error_set(err, KF_ERR_FORMAT, "%s: key %s is an array of %s, expected %s", g->path, key,
                            kf_gguf_type_name(kv->arr_type), expected);
    return kf_error_set(err, KF_ERR_FORMAT, "%s: key %s has type %s, expected %s", g->path, key,
                        kf_gguf_type_name(kv->type), expected);
}

kf_status kf_gguf_get_int(const kf_gguf *g, const char *key, bool required, int64_t *out, kf_error *err) {
    const kf_gguf_kv *kv = kf_gguf_find_kv(g, key);
    if (!kv) return missing(g, key, required, err);
    if (!is_int_type(kv->type)) return wrong_type(g, key, kv, "an integer", err);
    if (!int_at(kv->type, kv->val, out))
        return kf_error_set(err, KF_ERR_FORMAT, "%s: key %s is out of range", g->path, key);
    return KF_OK;
}

kf_status kf_gguf_get_float(const kf_gguf *g, const char *key, bool required, double *out, kf_error *err) {
    const kf_gguf_kv *kv = kf_gguf_find_kv(g, key);
    if (!kv) return missing(g, key, required, err);
    if (kv->type == KF_GGUF_FLOAT32) {
        float f;
        memcpy(&f, kv->val, 4);
        *out = f;
    } else if (kv->type == KF_GGUF_FLOAT64) {
        memcpy(out, kv->val, 8);
    } else {
        return wrong_type(g, key, kv, "a float", err);
    }
    return KF_OK;
}

kf_status kf_gguf_get_bool(const kf_gguf *g, const char *key, bool required, bool *out, kf_error *err) {
    const kf_gguf_kv *kv = kf_gguf_find_kv(g, key);
    if (!kv) return missing(g, key, required, err);
    if (kv->type != KF_GGUF_BOOL) return wrong_type(g, key, kv, "bool", err);
    *out = kv->val[0] != 0;
    return KF_OK;
}

// Copies the GGUF string at p (already bounds-checked) into a new C string.
static char *str_dup_at(const uint8_t *p, size_t *adv) {
    uint64_t n;
    memcpy(&n, p, 8);
    char *s = malloc((size_t)n + 1);
    if (s) {
        memcpy(s, p + 8, (size_t)n);
        s[n] = 0;
    }
    if (adv) *adv = 8 + (size_t)n;
    return s;
}

kf_status kf_gguf_get_str(const kf_gguf *g, const char *key, bool required, char **out, kf_error *err) {
    const kf_gguf_kv *kv = kf_gguf_find_kv(g, key);
    if (!kv) return missing(g, key, required, err);
    if (kv->type != KF_GGUF_STRING) return wrong_type(g, key, kv, "string", err);
    char *s = str_dup_at(kv->val, NULL);
    if (!s) return kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory", g->path);
    *out = s;
    return KF_OK;
}

static kf_status find_array(const kf_gguf *g, const char *key, const kf_gguf_kv **kv, kf_error *err) {
    *kv = kf_gguf_find_kv(g, key);
    if (!*kv) return kf_error_set(err, KF_ERR_FORMAT, "%s: missing key %s", g->path, key);
    if ((*kv)->type != KF_GGUF_ARRAY) return wrong_type(g, key, *kv, "an array", err);
    return KF_OK;
}

kf_status kf_gguf_get_int_array(const kf_gguf *g, const char *key, int64_t **out, int64_t *n, kf_error *err) {
    const kf_gguf_kv *kv;
    kf_status st = find_array(g, key, &kv, err);
    if (st != KF_OK) return st;
    if (!is_int_type(kv->arr_type)) return wrong_type(g, key, kv, "an integer array", err);
    int64_t *v = malloc(sizeof *v * (kv->arr_n ? kv->arr_n : 1));
    if (!v) return kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory", g->path);
    size_t es = scalar_size(kv->arr_type);
    for (uint64_t i = 0; i < kv->arr_n; i++)
        if (!int_at(kv->arr_type, kv->val + i * es, &v[i])) {
            free(v);
            return kf_error_set(err, KF_ERR_FORMAT, "%s: key %s element %llu is out of range", g->path, key,
                                (unsigned long long)i);
        }
    *out = v;
    *n = (int64_t)kv->arr_n;
    return KF_OK;
}

kf_status kf_gguf_get_float_array(const kf_gguf *g, const char *key, float **out, int64_t *n, kf_error *err) {
    const kf_gguf_kv *kv;
    kf_status st = find_array(g, key, &kv, err);
    if (st != KF_OK) return st;
    if (kv->arr_type != KF_GGUF_FLOAT32 && kv->arr_type != KF_GGUF_FLOAT64)
        return wrong_type(g, key, kv, "a float array", err);
    float *v = malloc(sizeof *v * (kv->arr_n ? kv->arr_n : 1));
    if (!v) return kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory", g->path);
    for (uint64_t i = 0; i < kv->arr_n; i++) {
        if (kv->arr_type == KF_GGUF_FLOAT32) {
            memcpy(&v[i], kv->val + i * 4, 4);
        } else {
            double d;
            memcpy(&d, kv->val + i * 8, 8);
            v[i] = (float)d;
        }
    }
    *out = v;
    *n = (int64_t)kv->arr_n;
    return KF_OK;
}

kf_status kf_gguf_get_str_array(const kf_gguf *g, const char *key, char ***out, int64_t *n, kf_error *err) {
    const kf_gguf_kv *kv;
    kf_status st = find_array(g, key, &kv, err);
    if (st != KF_OK) return st;
    if (kv->arr_type != KF_GGUF_STRING) return wrong_type(g, key, kv, "a string array", err);
    // The parse already walked these strings inside the file; sum their sizes.
    size_t total = 0, off = 0;
    for (uint64_t i = 0; i < kv->arr_n; i++) {
        uint64_t len;
        memcpy(&len, kv->val + off, 8);
        off += 8 + (size_t)len;
        total += (size_t)len + 1;
    }
    size_t ptrs = sizeof(char *) * (size_t)kv->arr_n;
    char **v = malloc(ptrs + total + 1);
    if (!v) return kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory", g->path);
    char *s = (char *)v + ptrs;
    off = 0;
    for (uint64_t i = 0; i < kv->arr_n; i++) {
        uint64_t len;
        memcpy(&len, kv->val + off, 8);
        memcpy(s, kv->val + off + 8, (size_t)len);
        s[len] = 0;
        v[i] = s;
        s += len + 1;
        off += 8 + (size_t)len;
    }
    *out = v;
    *n = (int64_t)kv->arr_n;
    return KF_OK;
}

// ---- RoPE row layouts ----

// Within a head of D rows, rotate-half row j*D/2 + i is interleaved row 2i + j.
void kf_rope_rows_to_interleaved(const float *src, float *dst, int64_t n_heads, int64_t head_dim, int64_t ncols) {
    int64_t half = head_dim / 2;
    for (int64_t h = 0; h < n_heads; h++)
        for (int64_t i = 0; i < half; i++)
            for (int64_t j = 0; j < 2; j++)
                memcpy(dst + (h * head_dim + 2 * i + j) * ncols, src + (h * head_dim + j * half + i) * ncols,
                       sizeof(float) * (size_t)ncols);
}

void kf_rope_rows_from_interleaved(const float *src, float *dst, int64_t n_heads, int64_t head_dim, int64_t ncols) {
    int64_t half = head_dim / 2;
    for (int64_t h = 0; h < n_heads; h++)
        for (int64_t i = 0; i < half; i++)
            for (int64_t j = 0; j < 2; j++)
                memcpy(dst + (h * head_dim + j * half + i) * ncols, src + (h * head_dim + 2 * i + j) * ncols,
                       sizeof(float) * (size_t)ncols);
}

// ---- writing ----

typedef struct {
    const float *data; // fp32 source rows (NULL for raw tensors)
    int64_t rows;
} tensor_part;

typedef struct {
    char name[GGUF_MAX_NAME];
    int ndim;
    int64_t ne[KF_MAX_DIMS]; // outer-first
    kf_dtype dtype;
    tensor_part parts[3]; // concatenated along rows (GPT-2's fused QKV)
    int n_parts;
    const void *raw; // bytes already in dtype, instead of parts
    int rope_heads;
    uint64_t offset;
    size_t nbytes;
} writer_tensor;

struct kf_gguf_writer {
    uint8_t *kv; // serialised key/values
    size_t kv_len, kv_cap;
    int64_t n_kv;
    writer_tensor *tensors;
    int64_t n_tensors, cap_tensors;
    kf_error err; // first failure of an add, reported by save
};

kf_status kf_gguf_writer_init(kf_gguf_writer **out, kf_error *err) {
    *out = calloc(1, sizeof **out);
    if (!*out) return kf_error_set(err, KF_ERR_NOMEM, "out of memory");
    return KF_OK;
}

void kf_gguf_writer_free(kf_gguf_writer *w) {
    if (!w) return;
    free(w->kv);
    free(w->tensors);
    free(w);
}

static bool w_failed(const kf_gguf_writer *w) { return w->err.code != KF_OK; }

static void w_bytes(kf_gguf_writer *w, const void *p, size_t n) {
    if (w_failed(w)) return;
    if (w->kv_len + n > w->kv_cap) {
        size_t cap = w->kv_cap ? w->kv_cap : 1024;
        while (cap < w->kv_len + n) cap *= 2;
        uint8_t *b = realloc(w->kv, cap);
        if (!b) {
            kf_error_set(&w->err, KF_ERR_NOMEM, "out of memory writing GGUF metadata");
            return;
        }
        w->kv = b;
        w->kv_cap = cap;
    }
    memcpy(w->kv + w->kv_len, p, n);
    w->kv_len += n;
}

static void w_u32(kf_gguf_writer *w, uint32_t v) { w_bytes(w, &v, 4); }
static void w_u64(kf_gguf_writer *w, uint64_t v) { w_bytes(w, &v, 8); }
static void w_str(kf_gguf_writer *w, const char *s) {
    size_t n = strlen(s);
    w_u64(w, n);
    w_bytes(w, s, n);
}
static void w_key(kf_gguf_writer *w, const char *key, kf_gguf_type t) {
    w_str(w, key);
    w_u32(w, t);
    w->n_kv++;
}

void kf_gguf_writer_add_u32(kf_gguf_writer *w, const char *key, uint32_t v) {
    w_key(w, key, KF_GGUF_UINT32);
    w_u32(w, v);
}

void kf_gguf_writer_add_f32(kf_gguf_writer *w, const char *key, float v) {
    w_key(w, key, KF_GGUF_FLOAT32);
    w_bytes(w, &v, 4);
}

void kf_gguf_writer_add_bool(kf_gguf_writer *w, const char *key, bool v) {
    uint8_t b = v;
    w_key(w, key, KF_GGUF_BOOL);
    w_bytes(w, &b, 1);
}

void kf_gguf_writer_add_str(kf_gguf_writer *w, const char *key, const char *v) {
    w_key(w, key, KF_GGUF_STRING);
    w_str(w, v);
}

static void w_array_head(kf_gguf_writer *w, const char *key, kf_gguf_type t, int64_t n) {
    w_key(w, key, KF_GGUF_ARRAY);
    w_u32(w, t);
    w_u64(w, (uint64_t)n);
}

void kf_gguf_writer_add_i32_array(kf_gguf_writer *w, const char *key, const int32_t *v, int64_t n) {
    w_array_head(w, key, KF_GGUF_INT32, n);
    w_bytes(w, v, sizeof *v * (size_t)n);
}

void kf_gguf_writer_add_f32_array(kf_gguf_writer *w, const char *key, const float *v, int64_t n) {
    w_array_head(w, key, KF_GGUF_FLOAT32, n);
    w_bytes(w, v, sizeof *v * (size_t)n);
}

void kf_gguf_writer_add_str_array(kf_gguf_writer *w, const char *key, const char *const *v, int64_t n) {
    w_array_head(w, key, KF_GGUF_STRING, n);
    for (int64_t i = 0; i < n; i++) w_str(w, v[i]);
}

static writer_tensor *w_new_tensor(kf_gguf_writer *w, const char *name, int ndim, const int64_t *ne, kf_dtype dtype) {
    if (w_failed(w)) return NULL;
    if (strlen(name) == 0 || strlen(name) >= GGUF_MAX_NAME) {
        kf_error_set(&w->err, KF_ERR_ARG, "tensor name '%s' must be 1..%d bytes", name, GGUF_MAX_NAME - 1);
        return NULL;
    }
    if (ndim < 1 || ndim > KF_MAX_DIMS || dtype >= KF_DTYPE_COUNT) {
        kf_error_set(&w->err, KF_ERR_ARG, "tensor '%s': bad rank %d or dtype", name, ndim);
        return NULL;
    }
    if (dtype == KF_DTYPE_Q8_0 && ne[ndim - 1] % 32 != 0) {
        kf_error_set(&w->err, KF_ERR_ARG, "tensor '%s': Q8_0 needs rows of a multiple of 32, got %lld", name,
                     (long long)ne[ndim - 1]);
        return NULL;
    }
    for (int64_t i = 0; i < w->n_tensors; i++)
        if (strcmp(w->tensors[i].name, name) == 0) {
            kf_error_set(&w->err, KF_ERR_ARG, "tensor '%s' added twice", name);
            return NULL;
        }
    if (w->n_tensors == w->cap_tensors) {
        int64_t cap = w->cap_tensors ? 2 * w->cap_tensors : 64;
        writer_tensor *t = realloc(w->tensors, sizeof *t * (size_t)cap);
        if (!t) {
            kf_error_set(&w->err, KF_ERR_NOMEM, "out of memory adding tensor '%s'", name);
            return NULL;
        }
        w->tensors = t;
        w->cap_tensors = cap;
    }
    writer_tensor *t = &w->tensors[w->n_tensors++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = ndim;
    int64_t n = 1;
    for (int i = 0; i < KF_MAX_DIMS; i++) {
        t->ne[i] = i < ndim ? ne[i] : 1;
        n *= t->ne[i];
    }
    t->dtype = dtype;
    t->nbytes = kf_dtype_size(dtype, n);
    return t;
}

void kf_gguf_writer_add_tensor(kf_gguf_writer *w, const char *name, int ndim, const int64_t *ne, const float *data,
                               kf_dtype dtype, int rope_heads) {
    writer_tensor *t = w_new_tensor(w, name, ndim, ne, dtype);
    if (!t) return;
    t->parts[0].data = data;
    t->parts[0].rows = ne[0];
    t->n_parts = 1;
    if (rope_heads > 0) {
        if (ndim > 2 || ne[0] % rope_heads != 0 || (ne[0] / rope_heads) % 2 != 0) {
            kf_error_set(&w->err, KF_ERR_ARG, "tensor '%s': %lld rows do not split into %d heads of even size", name,
                         (long long)ne[0], rope_heads);
            return;
        }
        t->rope_heads = rope_heads;
    }
}

void kf_gguf_writer_add_raw(kf_gguf_writer *w, const char *name, int ndim, const int64_t *ne, const void *bytes,
                            kf_dtype dtype) {
    writer_tensor *t = w_new_tensor(w, name, ndim, ne, dtype);
    if (t) t->raw = bytes;
}

// Rows of several sources stacked into one tensor (outer-first ne[0] is the
// sum of the parts' rows).
static void w_add_concat(kf_gguf_writer *w, const char *name, int ndim, const int64_t *ne, const tensor_part *parts,
                         int n_parts, kf_dtype dtype) {
    writer_tensor *t = w_new_tensor(w, name, ndim, ne, dtype);
    if (!t) return;
    for (int i = 0; i < n_parts; i++) t->parts[i] = parts[i];
    t->n_parts = n_parts;
}

// Q8_0: blocks of 32 values as an f16 scale d = max|x|/127 and int8 round(x/d).
static void quantize_q8_0(const float *x, uint8_t *dst, int64_t n) {
    for (int64_t b = 0; b < n / 32; b++, x += 32, dst += 34) {
        float amax = 0;
        for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(x[i]));
        // Quantise with the scale as stored (f16), so the decoded error stays
        // within half a step; |x|/d then exceeds 127 by at most 0.06.
        uint16_t h = kf_f32_to_f16(amax / 127.0f);
        float d = kf_f16_to_f32_1(h), id = d > 0 ? 1.0f / d : 0.0f;
        memcpy(dst, &h, 2);
        for (int i = 0; i < 32; i++) dst[2 + i] = (uint8_t)(int8_t)lrintf(x[i] * id);
    }
}

// Converts n floats to dtype into out (kf_dtype_size(dtype, n) bytes).
static void encode(kf_dtype dtype, const float *x, void *out, int64_t n) {
    uint16_t *h = out;
    switch (dtype) {
    case KF_DTYPE_F16:
        for (int64_t i = 0; i < n; i++) h[i] = kf_f32_to_f16(x[i]);
        break;
    case KF_DTYPE_BF16:
        for (int64_t i = 0; i < n; i++) h[i] = kf_f32_to_bf16(x[i]);
        break;
    case KF_DTYPE_Q8_0: quantize_q8_0(x, out, n); break;
    default: memcpy(out, x, sizeof(float) * (size_t)n); break;
    }
}

// Writes one tensor's data, converting a row at a time through buf (room for
// one row in fp32 and encoded).
static bool write_tensor_data(FILE *f, const writer_tensor *t, uint8_t *buf) {
    if (t->raw) return fwrite(t->raw, 1, t->nbytes, f) == t->nbytes;
    int64_t ncols = 1;
    for (int i = 1; i < t->ndim; i++) ncols *= t->ne[i];
    for (int p = 0; p < t->n_parts; p++) {
        const tensor_part *part = &t->parts[p];
        if (t->dtype == KF_DTYPE_F32 && !t->rope_heads) {
            size_t n = sizeof(float) * (size_t)(part->rows * ncols);
            if (fwrite(part->data, 1, n, f) != n) return false;
            continue;
        }
        int64_t head_dim = t->rope_heads ? part->rows / t->rope_heads : 0, half = head_dim / 2;
        size_t row_bytes = kf_dtype_size(t->dtype, ncols);
        for (int64_t r = 0; r < part->rows; r++) {
            int64_t src = r;
            if (t->rope_heads) { // interleaved row h*D + 2i + j comes from rotate-half row h*D + j*D/2 + i
                int64_t h = r / head_dim, k = r % head_dim;
                src = h * head_dim + (k % 2) * half + k / 2;
            }
            encode(t->dtype, part->data + src * ncols, buf, ncols);
            if (fwrite(buf, 1, row_bytes, f) != row_bytes) return false;
        }
    }
    return true;
}

static bool write_zeros(FILE *f, size_t n) {
    static const uint8_t zeros[GGUF_DEFAULT_ALIGNMENT];
    return fwrite(zeros, 1, n, f) == n;
}

kf_status kf_gguf_writer_save(kf_gguf_writer *w, const char *path, kf_error *err) {
    if (w_failed(w)) return kf_error_set(err, w->err.code, "%s: %s", path, w->err.msg);
    // Place the data: each tensor at the next multiple of the alignment.
    uint64_t off = 0;
    int64_t max_cols = 1;
    for (int64_t i = 0; i < w->n_tensors; i++) {
        writer_tensor *t = &w->tensors[i];
        off = (off + GGUF_DEFAULT_ALIGNMENT - 1) / GGUF_DEFAULT_ALIGNMENT * GGUF_DEFAULT_ALIGNMENT;
        t->offset = off;
        off += t->nbytes;
        int64_t ncols = 1;
        for (int d = 1; d < t->ndim; d++) ncols *= t->ne[d];
        if (ncols > max_cols) max_cols = ncols;
    }
    uint8_t *buf = malloc(sizeof(float) * (size_t)max_cols);
    char tmp[1100];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) {
        free(buf);
        return kf_error_set(err, KF_ERR_ARG, "%s: path too long", path);
    }
    FILE *f = buf ? fopen(tmp, "wb") : NULL;
    if (!f) {
        free(buf);
        if (!buf) return kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory", path);
        return kf_error_set(err, KF_ERR_IO, "%s: cannot create", tmp);
    }
    uint32_t version = 3;
    uint64_t nt = (uint64_t)w->n_tensors, nkv = (uint64_t)w->n_kv;
    bool ok = fwrite(GGUF_MAGIC, 1, 4, f) == 4 && fwrite(&version, 4, 1, f) == 1 && fwrite(&nt, 8, 1, f) == 1 &&
              fwrite(&nkv, 8, 1, f) == 1 && fwrite(w->kv, 1, w->kv_len, f) == w->kv_len;
    size_t pos = 24 + w->kv_len;
    for (int64_t i = 0; ok && i < w->n_tensors; i++) {
        const writer_tensor *t = &w->tensors[i];
        uint64_t len = strlen(t->name);
        uint32_t nd = (uint32_t)t->ndim, type = ggml_from_dtype(t->dtype);
        ok = fwrite(&len, 8, 1, f) == 1 && fwrite(t->name, 1, len, f) == len && fwrite(&nd, 4, 1, f) == 1;
        for (int d = t->ndim - 1; ok && d >= 0; d--) { // innermost first
            uint64_t v = (uint64_t)t->ne[d];
            ok = fwrite(&v, 8, 1, f) == 1;
        }
        ok = ok && fwrite(&type, 4, 1, f) == 1 && fwrite(&t->offset, 8, 1, f) == 1;
        pos += 8 + len + 4 + 8 * (size_t)t->ndim + 4 + 8;
    }
    ok = ok && write_zeros(f, (GGUF_DEFAULT_ALIGNMENT - pos % GGUF_DEFAULT_ALIGNMENT) % GGUF_DEFAULT_ALIGNMENT);
    uint64_t at = 0;
    for (int64_t i = 0; ok && i < w->n_tensors; i++) {
        const writer_tensor *t = &w->tensors[i];
        ok = write_zeros(f, (size_t)(t->offset - at)) && write_tensor_data(f, t, buf);
        at = t->offset + t->nbytes;
    }
    free(buf);
    return kf_file_commit(f, ok, tmp, path, err);
}

// ---- models ----

// Per-layer tensors under blk.N.<name>. rope: 'q' or 'k' marks rows that
// llama.cpp stores in the interleaved RoPE layout (llama architecture only).
typedef struct {
    const char *name;
    size_t field; // offsetof(kf_layer, ...)
    char rope;
} layer_tensor;

static const layer_tensor LAYER_TENSORS[] = {
    {"attn_norm.weight", offsetof(kf_layer, attn_norm_w), 0},
    {"attn_norm.bias", offsetof(kf_layer, attn_norm_b), 0},
    {"attn_q.weight", offsetof(kf_layer, wq), 'q'},
    {"attn_q.bias", offsetof(kf_layer, bq), 'q'},
    {"attn_k.weight", offsetof(kf_layer, wk), 'k'},
    {"attn_k.bias", offsetof(kf_layer, bk), 'k'},
    {"attn_v.weight", offsetof(kf_layer, wv), 0},
    {"attn_v.bias", offsetof(kf_layer, bv), 0},
    {"attn_output.weight", offsetof(kf_layer, wo), 0},
    {"attn_output.bias", offsetof(kf_layer, bo), 0},
    {"ffn_norm.weight", offsetof(kf_layer, ffn_norm_w), 0},
    {"ffn_norm.bias", offsetof(kf_layer, ffn_norm_b), 0},
    {"ffn_gate.weight", offsetof(kf_layer, w_gate), 0},
    {"ffn_up.weight", offsetof(kf_layer, w_up), 0},
    {"ffn_up.bias", offsetof(kf_layer, b_up), 0},
    {"ffn_down.weight", offsetof(kf_layer, w_down), 0},
    {"ffn_down.bias", offsetof(kf_layer, b_down), 0},
};
#define N_LAYER_TENSORS (sizeof LAYER_TENSORS / sizeof LAYER_TENSORS[0])

static kf_tensor *layer_field(kf_layer *L, const layer_tensor *lt) { return (kf_tensor *)((char *)L + lt->field); }
static const kf_tensor *layer_field_c(const kf_layer *L, const layer_tensor *lt) {
    return (const kf_tensor *)((const char *)L + lt->field);
}

typedef struct {
    kf_gguf *g;
    kf_model *m;
    kf_error *err;
} loader;

// Loads tensor `name` into dst (left absent when missing and optional).
// rope_heads > 0 permutes its rows back from the interleaved RoPE layout.
// F32 data that needs no permutation stays in the map.
static kf_status load_tensor(loader *ld, const char *name, kf_tensor *dst, bool required, int rope_heads) {
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
    if (rope_heads > 0 && (rows % rope_heads != 0 || (rows / rope_heads) % 2 != 0))
        return kf_error_set(ld->err, KF_ERR_FORMAT, "%s: tensor %s has %lld rows, not %d heads of even size",
                            ld->g->path, name, (long long)rows, rope_heads);
    if (t->dtype == KF_DTYPE_F32 && rope_heads == 0 && (uintptr_t)t->data % _Alignof(float) == 0) {
        dst->data = (float *)t->data; // read-only map: transforms copy before editing
        return KF_OK;
    }
    dst->data = kf_model_alloc(ld->m, n);
    if (!dst->data) return kf_error_set(ld->err, KF_ERR_NOMEM, "%s: out of memory loading %s", ld->g->path, name);
    if (rope_heads == 0) {
        kf_gguf_tensor_to_f32(t, dst->data);
        return KF_OK;
    }
    float *tmp = malloc(sizeof(float) * (size_t)n);
    if (!tmp) return kf_error_set(ld->err, KF_ERR_NOMEM, "%s: out of memory loading %s", ld->g->path, name);
    kf_gguf_tensor_to_f32(t, tmp);
    kf_rope_rows_from_interleaved(tmp, dst->data, rope_heads, rows / rope_heads, cols);
    free(tmp);
    return KF_OK;
}

// An integer hyper-parameter in [lo, hi].
static kf_status get_hparam(loader *ld, const char *key, bool required, int64_t lo, int64_t hi, int *out) {
    int64_t v = *out;
    kf_status st = kf_gguf_get_int(ld->g, key, required, &v, ld->err);
    if (st != KF_OK) return st;
    if (v < lo || v > hi)
        return kf_error_set(ld->err, KF_ERR_FORMAT, "%s: key %s = %lld is out of range [%lld, %lld]", ld->g->path, key,
                            (long long)v, (long long)lo, (long long)hi);
    *out = (int)v;
    return KF_OK;
}

// <arch>.feed_forward_length: one width for all layers or one per layer.
static kf_status load_ffn_widths(loader *ld, const char *key) {
    kf_model *m = ld->m;
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
            if (v[l] < 1 || v[l] > INT32_MAX) {
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
    kf_status st = get_hparam(ld, key, true, 1, INT32_MAX, &F);
    for (int l = 0; st == KF_OK && l < m->n_layer; l++) m->layers[l].n_ff = F;
    return st;
}

static void set_tied(kf_model *m) {
    m->lm_head = m->tok_embd;
    m->tied_head = true;
}

// `llama` and `qwen2`: the same blocks (Qwen2 with Q/K/V biases); llama.cpp
// permutes Llama's Q/K rows to the interleaved RoPE layout but keeps Qwen2's
// rotate-half rows (its NEOX RoPE).
static kf_status load_llama(loader *ld, const char *arch) {
    kf_model *m = ld->m;
    kf_gguf *g = ld->g;
    m->arch = KF_ARCH_LLAMA;
    m->norm = KF_NORM_RMS;
    m->act = KF_ACT_SILU;
    m->pos = KF_POS_ROPE;
    m->gated_ffn = true;
    kf_status st;
    char key[128];
#define KEY(suffix) (snprintf(key, sizeof key, "%s." suffix, arch), key)
    int64_t experts = 0;
    if ((st = kf_gguf_get_int(g, KEY("expert_count"), false, &experts, ld->err)) != KF_OK) return st;
    if (experts > 0)
        return kf_error_set(ld->err, KF_ERR_UNSUPPORTED,
                            "%s: mixture-of-experts models (%lld experts) are not supported", g->path,
                            (long long)experts);
    if (kf_gguf_find_tensor(g, "rope_freqs.weight"))
        return kf_error_set(ld->err, KF_ERR_UNSUPPORTED,
                            "%s: per-frequency RoPE factors (rope_freqs) are not supported", g->path);
    int head_dim = 0, rope_dim = 0, v_dim = 0;
    double eps, theta = 10000.0;
    if ((st = get_hparam(ld, KEY("attention.head_count_kv"), false, 1, m->n_head, &m->n_head_kv)) != KF_OK ||
        (st = kf_gguf_get_float(g, KEY("attention.layer_norm_rms_epsilon"), true, &eps, ld->err)) != KF_OK ||
        (st = kf_gguf_get_float(g, KEY("rope.freq_base"), false, &theta, ld->err)) != KF_OK)
        return st;
    if (m->n_embd % m->n_head == 0) head_dim = m->n_embd / m->n_head;
    if ((st = get_hparam(ld, KEY("attention.key_length"), head_dim == 0, 1, 1 << 16, &head_dim)) != KF_OK) return st;
    rope_dim = v_dim = head_dim;
    if ((st = get_hparam(ld, KEY("attention.value_length"), false, 1, 1 << 16, &v_dim)) != KF_OK ||
        (st = get_hparam(ld, KEY("rope.dimension_count"), false, 1, 1 << 16, &rope_dim)) != KF_OK)
        return st;
    if (v_dim != head_dim)
        return kf_error_set(ld->err, KF_ERR_UNSUPPORTED, "%s: value head size %d differs from key head size %d",
                            g->path, v_dim, head_dim);
    if (rope_dim != head_dim)
        return kf_error_set(ld->err, KF_ERR_UNSUPPORTED, "%s: partial RoPE (%d of %d dimensions) is not supported",
                            g->path, rope_dim, head_dim);
    char *scaling = NULL;
    if ((st = kf_gguf_get_str(g, KEY("rope.scaling.type"), false, &scaling, ld->err)) != KF_OK) return st;
    char esc[KF_ESC_NAME];
    if (scaling && strcmp(scaling, "none") != 0)
        st = kf_error_set(ld->err, KF_ERR_UNSUPPORTED, "%s: RoPE scaling '%s' is not supported", g->path,
                          kf_str_escape(esc, sizeof esc, scaling, KF_STR_NUL));
    free(scaling);
    if (st != KF_OK) return st;
    m->head_dim = head_dim;
    m->norm_eps = (float)eps;
    m->rope_theta = (float)theta;
    if ((st = load_ffn_widths(ld, KEY("feed_forward_length"))) != KF_OK ||
        (st = load_tensor(ld, "token_embd.weight", &m->tok_embd, true, 0)) != KF_OK ||
        (st = load_tensor(ld, "output_norm.weight", &m->out_norm_w, true, 0)) != KF_OK ||
        (st = load_tensor(ld, "output.weight", &m->lm_head, false, 0)) != KF_OK)
        return st;
    if (!kf_tensor_present(&m->lm_head)) set_tied(m);
    bool interleaved = strcmp(arch, "llama") == 0;
    for (int l = 0; l < m->n_layer; l++) {
        for (size_t i = 0; i < N_LAYER_TENSORS; i++) {
            const layer_tensor *lt = &LAYER_TENSORS[i];
            char name[GGUF_MAX_NAME];
            snprintf(name, sizeof name, "blk.%d.%s", l, lt->name);
            int rope = !interleaved ? 0 : lt->rope == 'q' ? m->n_head : lt->rope == 'k' ? m->n_head_kv : 0;
            if ((st = load_tensor(ld, name, layer_field(&m->layers[l], lt), false, rope)) != KF_OK) return st;
        }
    }
    return KF_OK;
#undef KEY
}

// Splits GPT-2's fused (Q + 2 KV, C) attn_qkv weight (or its bias) into row views.
static kf_status split_qkv(loader *ld, const char *name, const kf_tensor *qkv, kf_tensor *q, kf_tensor *k,
                           kf_tensor *v) {
    const kf_model *m = ld->m;
    int64_t Q = (int64_t)m->n_head * m->head_dim, KV = (int64_t)m->n_head_kv * m->head_dim;
    if (qkv->ne[0] != Q + 2 * KV)
        return kf_error_set(ld->err, KF_ERR_FORMAT, "%s: tensor %s has %lld rows, expected %lld", ld->g->path, name,
                            (long long)qkv->ne[0], (long long)(Q + 2 * KV));
    int64_t cols = qkv->ndim == 2 ? qkv->ne[1] : 1;
    kf_tensor *parts[3] = {q, k, v};
    int64_t rows[3] = {Q, KV, KV}, at = 0;
    for (int i = 0; i < 3; i++) {
        *parts[i] = *qkv;
        parts[i]->ne[0] = rows[i];
        parts[i]->data = qkv->data + at * cols;
        at += rows[i];
    }
    return KF_OK;
}

static kf_status load_gpt2(loader *ld) {
    kf_model *m = ld->m;
    kf_gguf *g = ld->g;
    m->arch = KF_ARCH_GPT2;
    m->norm = KF_NORM_LAYER;
    m->act = KF_ACT_GELU_TANH;
    m->pos = KF_POS_LEARNED;
    m->gated_ffn = false;
    kf_status st;
    double eps;
    if ((st = get_hparam(ld, "gpt2.attention.head_count_kv", false, 1, m->n_head, &m->n_head_kv)) != KF_OK ||
        (st = kf_gguf_get_float(g, "gpt2.attention.layer_norm_epsilon", true, &eps, ld->err)) != KF_OK)
        return st;
    if (m->n_embd % m->n_head != 0)
        return kf_error_set(ld->err, KF_ERR_FORMAT, "%s: embedding length %d is not a multiple of %d heads", g->path,
                            m->n_embd, m->n_head);
    m->head_dim = m->n_embd / m->n_head;
    m->norm_eps = (float)eps;
    if ((st = load_ffn_widths(ld, "gpt2.feed_forward_length")) != KF_OK ||
        (st = load_tensor(ld, "token_embd.weight", &m->tok_embd, true, 0)) != KF_OK ||
        (st = load_tensor(ld, "position_embd.weight", &m->pos_embd, true, 0)) != KF_OK ||
        (st = load_tensor(ld, "output_norm.weight", &m->out_norm_w, true, 0)) != KF_OK ||
        (st = load_tensor(ld, "output_norm.bias", &m->out_norm_b, true, 0)) != KF_OK ||
        (st = load_tensor(ld, "output.weight", &m->lm_head, false, 0)) != KF_OK)
        return st;
    // llama.cpp's converter stores GPT-2's tied head as a copy; identical
    // bytes mean tied.
    const kf_gguf_tensor *out = kf_gguf_find_tensor(g, "output.weight");
    const kf_gguf_tensor *emb = kf_gguf_find_tensor(g, "token_embd.weight");
    if (!out ||
        (out->dtype == emb->dtype && out->nbytes == emb->nbytes && memcmp(out->data, emb->data, out->nbytes) == 0))
        set_tied(m);
    for (int l = 0; l < m->n_layer; l++) {
        kf_layer *L = &m->layers[l];
        for (size_t i = 0; i < N_LAYER_TENSORS; i++) {
            const layer_tensor *lt = &LAYER_TENSORS[i];
            char name[GGUF_MAX_NAME];
            snprintf(name, sizeof name, "blk.%d.%s", l, lt->name);
            if ((st = load_tensor(ld, name, layer_field(L, lt), false, 0)) != KF_OK) return st;
        }
        char name[GGUF_MAX_NAME];
        kf_tensor fused = {0};
        snprintf(name, sizeof name, "blk.%d.attn_qkv.weight", l);
        if ((st = load_tensor(ld, name, &fused, false, 0)) != KF_OK) return st;
        if (kf_tensor_present(&fused) && (st = split_qkv(ld, name, &fused, &L->wq, &L->wk, &L->wv)) != KF_OK) return st;
        memset(&fused, 0, sizeof fused);
        snprintf(name, sizeof name, "blk.%d.attn_qkv.bias", l);
        if ((st = load_tensor(ld, name, &fused, false, 0)) != KF_OK) return st;
        if (kf_tensor_present(&fused) && (st = split_qkv(ld, name, &fused, &L->bq, &L->bk, &L->bv)) != KF_OK) return st;
    }
    return KF_OK;
}

static kf_status load_model(loader *ld, const char *arch) {
    kf_model *m = ld->m;
    kf_gguf *g = ld->g;
    char key[128];
    kf_status st;
    m->n_layer = m->n_embd = m->n_head = m->n_ctx_train = 0;
    // Every layer has tensors, so more layers than tensors is malformed.
    int64_t max_layers = g->n_tensors < INT32_MAX ? g->n_tensors : INT32_MAX;
#define HP(name, req, lo, hi, dst)                                                                                     \
    snprintf(key, sizeof key, "%s." name, arch);                                                                       \
    if ((st = get_hparam(ld, key, req, lo, hi, dst)) != KF_OK) return st
    HP("block_count", true, 1, max_layers, &m->n_layer);
    HP("embedding_length", true, 1, INT32_MAX, &m->n_embd);
    HP("attention.head_count", true, 1, m->n_embd, &m->n_head);
    HP("context_length", true, 1, INT32_MAX, &m->n_ctx_train);
#undef HP
    m->n_head_kv = m->n_head;
    m->layers = calloc((size_t)m->n_layer, sizeof *m->layers);
    if (!m->layers) return kf_error_set(ld->err, KF_ERR_NOMEM, "%s: out of memory", g->path);
    if (strcmp(arch, "gpt2") == 0)
        st = load_gpt2(ld);
    else
        st = load_llama(ld, arch);
    if (st != KF_OK) return st;
    m->n_vocab = (int)(m->tok_embd.ne[0] < INT32_MAX ? m->tok_embd.ne[0] : 0);
    int64_t bos = -1, eos = -1;
    if ((st = kf_gguf_get_int(g, "tokenizer.ggml.bos_token_id", false, &bos, ld->err)) != KF_OK ||
        (st = kf_gguf_get_int(g, "tokenizer.ggml.eos_token_id", false, &eos, ld->err)) != KF_OK)
        return st;
    m->bos_id = bos >= 0 && bos < m->n_vocab ? (int)bos : -1;
    m->eos_id = eos >= 0 && eos < m->n_vocab ? (int)eos : -1;
    return kf_model_validate(m, g->path, ld->err);
}

kf_status kf_model_load_gguf(kf_model **out, const char *path, kf_error *err) {
    *out = NULL;
    kf_gguf *g;
    kf_status st = kf_gguf_open(&g, path, err);
    if (st != KF_OK) return st;
    char *arch = NULL;
    if ((st = kf_gguf_get_str(g, "general.architecture", true, &arch, err)) != KF_OK) {
        kf_gguf_close(g);
        return st;
    }
    if (strcmp(arch, "llama") != 0 && strcmp(arch, "qwen2") != 0 && strcmp(arch, "gpt2") != 0) {
        char esc[KF_ESC_NAME];
        st = kf_error_set(err, KF_ERR_UNSUPPORTED, "%s: architecture '%s' is not supported (llama, qwen2 and gpt2 are)",
                          path, kf_str_escape(esc, sizeof esc, arch, KF_STR_NUL));
        free(arch);
        kf_gguf_close(g);
        return st;
    }
    kf_model *m = kf_model_new();
    if (!m || (st = kf_model_add_map(m, kf_gguf_take_map(g), err)) != KF_OK) {
        if (!m) st = kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory", path);
        kf_model_free(m);
        free(arch);
        kf_gguf_close(g);
        return st;
    }
    loader ld = {g, m, err};
    st = load_model(&ld, arch);
    free(arch);
    kf_gguf_close(g);
    if (st != KF_OK) {
        kf_model_free(m);
        return st;
    }
    snprintf(m->path, sizeof m->path, "%s", path);
    snprintf(m->format, sizeof m->format, "gguf");
    *out = m;
    return KF_OK;
}

// Byte-level merges as llama.cpp stores them: "left right", rank = index.
static void add_merges(kf_gguf_writer *w, const kf_tokenizer *tok) {
    int n = kf_tokenizer_n_merges(tok);
    char **merges = calloc((size_t)n + 1, sizeof *merges);
    bool ok = merges != NULL;
    for (int i = 0; ok && i < n; i++) {
        int32_t a, b;
        ok = kf_tokenizer_merge(tok, i, &a, &b);
        const char *l = ok ? kf_tokenizer_piece(tok, a) : NULL, *r = ok ? kf_tokenizer_piece(tok, b) : NULL;
        ok = l && r && (merges[i] = malloc(strlen(l) + strlen(r) + 2)) != NULL;
        if (ok) sprintf(merges[i], "%s %s", l, r);
    }
    if (ok)
        kf_gguf_writer_add_str_array(w, "tokenizer.ggml.merges", (const char *const *)merges, n);
    else
        kf_error_set(&w->err, KF_ERR_NOMEM, "out of memory writing the merges");
    for (int i = 0; merges && i < n; i++) free(merges[i]);
    free(merges);
}

// Tokenizer metadata as llama.cpp reads it: `llama` (SentencePiece-style:
// pieces, scores, types) or `gpt2` (byte-level: pieces, types, merges, GPT-2
// pre-tokenizer). The vocabulary is padded to the model's embedding rows with
// unused "[PADn]" pieces, as llama.cpp's converter does. An SPM vocabulary
// without scores (from a tokenizer.json, whose merges follow SentencePiece's
// piece order) gets score -id for normal pieces: SentencePiece's priority.
static kf_status add_tokenizer(kf_gguf_writer *w, const kf_model *m, const kf_tokenizer *tok, const char *path,
                               kf_error *err) {
    bool spm = kf_tokenizer_kind(tok) == KF_TOK_SPM;
    int n_tok = kf_tokenizer_n_vocab(tok), V = m->n_vocab;
    if (n_tok > V)
        return kf_error_set(err, KF_ERR_ARG, "%s: tokenizer has %d pieces but the model only %d embedding rows", path,
                            n_tok, V);
    const char **pieces = calloc((size_t)V, sizeof *pieces);
    char *pads = malloc((size_t)(V - n_tok) * 24 + 1);
    float *scores = calloc((size_t)V, sizeof *scores);
    int32_t *types = calloc((size_t)V, sizeof *types);
    if (!pieces || !pads || !scores || !types) {
        free(pieces), free(pads), free(scores), free(types);
        return kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory", path);
    }
    int unk = -1;
    bool scored = false;
    for (int i = 0; i < n_tok; i++) scored = scored || kf_tokenizer_score(tok, i) != 0;
    for (int i = 0; i < V; i++) {
        if (i < n_tok) {
            pieces[i] = kf_tokenizer_piece(tok, i);
            types[i] = kf_tokenizer_piece_type(tok, i);
            scores[i] = scored ? kf_tokenizer_score(tok, i) : types[i] == KF_PIECE_NORMAL ? -(float)i : 0.0f;
            if (types[i] == KF_PIECE_UNKNOWN && unk < 0) unk = i;
        } else {
            char *p = pads + (size_t)(i - n_tok) * 24;
            snprintf(p, 24, "[PAD%d]", i);
            pieces[i] = p;
            types[i] = KF_PIECE_UNUSED;
        }
    }
    kf_gguf_writer_add_str(w, "tokenizer.ggml.model", spm ? "llama" : "gpt2");
    if (!spm) kf_gguf_writer_add_str(w, "tokenizer.ggml.pre", "gpt-2");
    kf_gguf_writer_add_str_array(w, "tokenizer.ggml.tokens", pieces, V);
    if (spm) kf_gguf_writer_add_f32_array(w, "tokenizer.ggml.scores", scores, V);
    kf_gguf_writer_add_i32_array(w, "tokenizer.ggml.token_type", types, V);
    if (!spm) add_merges(w, tok);
    free(pieces), free(pads), free(scores), free(types);
    if (kf_tokenizer_bos(tok) >= 0)
        kf_gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)kf_tokenizer_bos(tok));
    if (kf_tokenizer_eos(tok) >= 0)
        kf_gguf_writer_add_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)kf_tokenizer_eos(tok));
    if (unk >= 0) kf_gguf_writer_add_u32(w, "tokenizer.ggml.unknown_token_id", (uint32_t)unk);
    kf_gguf_writer_add_bool(w, "tokenizer.ggml.add_bos_token", kf_tokenizer_add_bos(tok));
    return KF_OK;
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

static void add_hparams(kf_gguf_writer *w, const kf_model *m, const char *arch, kf_dtype wtype) {
    char key[128], name[256];
    snprintf(name, sizeof name, "%s", m->path[0] ? base_name(m->path) : "kfuse");
    kf_gguf_writer_add_str(w, "general.architecture", arch);
    kf_gguf_writer_add_str(w, "general.name", name);
    kf_gguf_writer_add_u32(w, "general.alignment", GGUF_DEFAULT_ALIGNMENT);
    kf_gguf_writer_add_u32(w, "general.file_type", file_type(wtype));
#define KEY(suffix) (snprintf(key, sizeof key, "%s." suffix, arch), key)
    kf_gguf_writer_add_u32(w, KEY("context_length"), (uint32_t)m->n_ctx_train);
    kf_gguf_writer_add_u32(w, KEY("embedding_length"), (uint32_t)m->n_embd);
    kf_gguf_writer_add_u32(w, KEY("block_count"), (uint32_t)m->n_layer);
    bool uniform = true;
    for (int l = 1; l < m->n_layer; l++) uniform = uniform && m->layers[l].n_ff == m->layers[0].n_ff;
    if (uniform) {
        kf_gguf_writer_add_u32(w, KEY("feed_forward_length"), (uint32_t)m->layers[0].n_ff);
    } else { // per-layer widths: the array form llama.cpp accepts
        int32_t *ff = malloc(sizeof *ff * (size_t)m->n_layer);
        if (ff) {
            for (int l = 0; l < m->n_layer; l++) ff[l] = m->layers[l].n_ff;
            kf_gguf_writer_add_i32_array(w, KEY("feed_forward_length"), ff, m->n_layer);
        } else {
            kf_error_set(&w->err, KF_ERR_NOMEM, "out of memory");
        }
        free(ff);
    }
    kf_gguf_writer_add_u32(w, KEY("attention.head_count"), (uint32_t)m->n_head);
    kf_gguf_writer_add_u32(w, KEY("attention.head_count_kv"), (uint32_t)m->n_head_kv);
    if (m->arch == KF_ARCH_LLAMA) {
        kf_gguf_writer_add_f32(w, KEY("attention.layer_norm_rms_epsilon"), m->norm_eps);
        kf_gguf_writer_add_f32(w, KEY("rope.freq_base"), m->rope_theta);
        kf_gguf_writer_add_u32(w, KEY("rope.dimension_count"), (uint32_t)m->head_dim);
        kf_gguf_writer_add_u32(w, KEY("attention.key_length"), (uint32_t)m->head_dim);
        kf_gguf_writer_add_u32(w, KEY("attention.value_length"), (uint32_t)m->head_dim);
        kf_gguf_writer_add_u32(w, KEY("vocab_size"), (uint32_t)m->n_vocab);
    } else {
        kf_gguf_writer_add_f32(w, KEY("attention.layer_norm_epsilon"), m->norm_eps);
    }
#undef KEY
}

// 2-D weights take the chosen type, except that Q8_0 needs rows of whole
// 32-blocks and other rows fall back to F16; norms and biases stay F32 (all
// as llama.cpp's converter does).
static kf_dtype weight_type(kf_dtype wtype, int64_t row_len) {
    return wtype == KF_DTYPE_Q8_0 && row_len % 32 != 0 ? KF_DTYPE_F16 : wtype;
}

static void add_model_tensor(kf_gguf_writer *w, const char *name, const kf_tensor *t, kf_dtype wtype, int rope_heads) {
    if (!kf_tensor_present(t)) return;
    kf_dtype d = t->ndim == 2 ? weight_type(wtype, t->ne[1]) : KF_DTYPE_F32;
    kf_gguf_writer_add_tensor(w, name, t->ndim, t->ne, t->data, d, rope_heads);
}

static void add_layer(kf_gguf_writer *w, const kf_model *m, int l, kf_dtype wtype) {
    const kf_layer *L = &m->layers[l];
    bool llama = m->arch == KF_ARCH_LLAMA;
    char name[GGUF_MAX_NAME];
    for (size_t i = 0; i < N_LAYER_TENSORS; i++) {
        const layer_tensor *lt = &LAYER_TENSORS[i];
        if (!llama && lt->field == offsetof(kf_layer, wq)) { // GPT-2: fused Q, K, V in place of the three
            int64_t C = m->n_embd, rows = L->wq.ne[0] + L->wk.ne[0] + L->wv.ne[0];
            tensor_part parts[3] = {{L->wq.data, L->wq.ne[0]}, {L->wk.data, L->wk.ne[0]}, {L->wv.data, L->wv.ne[0]}};
            snprintf(name, sizeof name, "blk.%d.attn_qkv.weight", l);
            w_add_concat(w, name, 2, (int64_t[]){rows, C}, parts, 3, weight_type(wtype, C));
            if (kf_tensor_present(&L->bq)) {
                tensor_part bparts[3] = {
                    {L->bq.data, L->bq.ne[0]}, {L->bk.data, L->bk.ne[0]}, {L->bv.data, L->bv.ne[0]}};
                snprintf(name, sizeof name, "blk.%d.attn_qkv.bias", l);
                w_add_concat(w, name, 1, (int64_t[]){rows}, bparts, 3, KF_DTYPE_F32);
            }
        }
        bool qkv = lt->field == offsetof(kf_layer, wq) || lt->field == offsetof(kf_layer, wk) ||
                   lt->field == offsetof(kf_layer, wv) || lt->field == offsetof(kf_layer, bq) ||
                   lt->field == offsetof(kf_layer, bk) || lt->field == offsetof(kf_layer, bv);
        if (!llama && qkv) continue;
        int rope = !llama ? 0 : lt->rope == 'q' ? m->n_head : lt->rope == 'k' ? m->n_head_kv : 0;
        snprintf(name, sizeof name, "blk.%d.%s", l, lt->name);
        add_model_tensor(w, name, layer_field_c(L, lt), wtype, rope);
    }
}

static kf_status check_writable(const kf_model *m, const char *path, kf_dtype wtype, kf_error *err) {
    kf_status st = kf_model_validate(m, path, err);
    if (st != KF_OK) return st;
    bool llama = m->arch == KF_ARCH_LLAMA && m->norm == KF_NORM_RMS && m->act == KF_ACT_SILU && m->pos == KF_POS_ROPE &&
                 m->gated_ffn;
    bool gpt2 = m->arch == KF_ARCH_GPT2 && m->norm == KF_NORM_LAYER && m->act == KF_ACT_GELU_TANH &&
                m->pos == KF_POS_LEARNED && !m->gated_ffn;
    if (!llama && !gpt2)
        return kf_error_set(err, KF_ERR_UNSUPPORTED,
                            "%s: this %s model's norm/activation/position mix has no GGUF architecture", path,
                            kf_arch_name(m->arch));
    if (m->n_ctx_train <= 0)
        return kf_error_set(err, KF_ERR_ARG, "%s: the model has no context length to record", path);
    if (wtype != KF_DTYPE_F32 && wtype != KF_DTYPE_F16 && wtype != KF_DTYPE_BF16 && wtype != KF_DTYPE_Q8_0)
        return kf_error_set(err, KF_ERR_ARG, "%s: cannot store weights as dtype %d", path, (int)wtype);
    for (int l = 0; gpt2 && l < m->n_layer; l++) {
        const kf_layer *L = &m->layers[l];
        int nb = kf_tensor_present(&L->bq) + kf_tensor_present(&L->bk) + kf_tensor_present(&L->bv);
        if (nb != 0 && nb != 3)
            return kf_error_set(err, KF_ERR_UNSUPPORTED, "%s: layer %d has some but not all Q/K/V biases", path, l);
    }
    return KF_OK;
}

kf_status kf_gguf_write_typed(const kf_model *m, const kf_tokenizer *tok, const char *path, kf_dtype wtype,
                              kf_error *err) {
    kf_status st = check_writable(m, path, wtype, err);
    if (st != KF_OK) return st;
    kf_gguf_writer *w;
    if ((st = kf_gguf_writer_init(&w, err)) != KF_OK) return st;
    bool llama = m->arch == KF_ARCH_LLAMA;
    add_hparams(w, m, llama ? "llama" : "gpt2", wtype);
    if (tok && (st = add_tokenizer(w, m, tok, path, err)) != KF_OK) {
        kf_gguf_writer_free(w);
        return st;
    }
    if (!tok) { // keep the model's special ids even without a vocabulary
        if (m->bos_id >= 0) kf_gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)m->bos_id);
        if (m->eos_id >= 0) kf_gguf_writer_add_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)m->eos_id);
    }
    add_model_tensor(w, "token_embd.weight", &m->tok_embd, wtype, 0);
    add_model_tensor(w, "position_embd.weight", &m->pos_embd, wtype, 0);
    add_model_tensor(w, "output_norm.weight", &m->out_norm_w, wtype, 0);
    add_model_tensor(w, "output_norm.bias", &m->out_norm_b, wtype, 0);
    // A tied Llama head is left out (llama.cpp falls back to token_embd);
    // GPT-2's is stored as a copy, as llama.cpp's converter does.
    if (!m->tied_head || !llama) add_model_tensor(w, "output.weight", &m->lm_head, wtype, 0);
    for (int l = 0; l < m->n_layer; l++) add_layer(w, m, l, wtype);
    st = kf_moe_gguf_add(w, m, err); // routers of a MoEfied model (moe/moe_io.h)
    if (st == KF_OK) st = kf_gguf_writer_save(w, path, err);
    kf_gguf_writer_free(w);
    return st;
}

kf_status kf_gguf_write(const kf_model *m, const kf_tokenizer *tok, const char *path, kf_error *err) {
    return kf_gguf_write_typed(m, tok, path, KF_DTYPE_F32, err);
}
