// GGUF reader and writer. Every count, string and offset read from the file
// is checked against the bytes that remain before it is used.
#include "formats/gguf.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"

#define GGUF_MAGIC "GGUF"
#define GGUF_DEFAULT_ALIGNMENT KF_GGUF_DEFAULT_ALIGNMENT
#define GGUF_MAX_NAME KF_GGUF_MAX_NAME

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

// ---- name indexes: open addressing on FNV-1a, so that duplicate checks and
// lookups cost O(1) each however many keys and tensors a file has ----


static uint64_t name_hash(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h;
}

static kf_status index_init(kf_gguf_index *x, int64_t n, const char *path, kf_error *err) {
    uint64_t cap = 16;
    while (cap < 2 * (uint64_t)n) cap *= 2;
    x->slots = calloc(cap, sizeof *x->slots);
    x->mask = cap - 1;
    return x->slots ? KF_OK : kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory", path);
}

// The slot holding name, or the empty slot where it would go.
static kf_gguf_slot *index_slot(const kf_gguf_index *x, const char *name, size_t len) {
    for (uint64_t at = name_hash(name, len) & x->mask;; at = (at + 1) & x->mask) {
        kf_gguf_slot *e = &x->slots[at];
        if (!e->name || (e->len == len && memcmp(e->name, name, len) == 0)) return e;
    }
}

// Adds entry i; false when its name is already there.
static bool index_add(kf_gguf_index *x, int64_t i, const char *name, size_t len) {
    kf_gguf_slot *e = index_slot(x, name, len);
    if (e->name) return false;
    *e = (kf_gguf_slot){name, len, i};
    return true;
}

static int64_t index_find(const kf_gguf_index *x, const char *name) {
    if (!x->slots) return -1;
    const kf_gguf_slot *e = index_slot(x, name, strlen(name));
    return e->name ? e->index : -1;
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
    if ((st = index_init(&g->kv_index, g->n_kv, g->path, err)) != KF_OK ||
        (st = index_init(&g->tensor_index, g->n_tensors, g->path, err)) != KF_OK)
        return st;
    for (int64_t i = 0; i < g->n_kv; i++) {
        if ((st = read_kv(&c, &g->kv[i], i)) != KF_OK) return st;
        if (!index_add(&g->kv_index, i, g->kv[i].key, g->kv[i].key_len))
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
        if (!index_add(&g->tensor_index, i, g->tensors[i].name, g->tensors[i].name_len))
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
    free(g->kv_index.slots);
    free(g->tensor_index.slots);
    free(g);
}

kf_mmap kf_gguf_take_map(kf_gguf *g) {
    kf_mmap m = g->map;
    g->map.data = NULL;
    g->map.size = 0;
    return m;
}

const kf_gguf_kv *kf_gguf_find_kv(const kf_gguf *g, const char *key) {
    int64_t i = index_find(&g->kv_index, key);
    return i >= 0 ? &g->kv[i] : NULL;
}

const kf_gguf_tensor *kf_gguf_find_tensor(const kf_gguf *g, const char *name) {
    int64_t i = index_find(&g->tensor_index, name);
    return i >= 0 ? &g->tensors[i] : NULL;
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

// ---- writing ----

typedef struct {
    char name[GGUF_MAX_NAME];
    int ndim;
    int64_t ne[KF_MAX_DIMS]; // outer-first
    kf_dtype dtype;
    kf_gguf_rows parts[3]; // stacked along rows (GPT-2's fused QKV)
    int n_parts;
    const int64_t *row_order; // optional: stored row r is stacked row row_order[r]
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

void kf_gguf_writer_add_stacked(kf_gguf_writer *w, const char *name, int ndim, const int64_t *ne,
                                const kf_gguf_rows *parts, int n_parts, const int64_t *row_order, kf_dtype dtype) {
    if (n_parts < 1 || n_parts > 3) {
        if (!w_failed(w)) kf_error_set(&w->err, KF_ERR_ARG, "tensor '%s': %d row blocks (1 to 3)", name, n_parts);
        return;
    }
    int64_t rows = 0;
    for (int i = 0; i < n_parts; i++) rows += parts[i].rows;
    if (rows != ne[0]) {
        if (!w_failed(w)) kf_error_set(&w->err, KF_ERR_ARG, "tensor '%s': row blocks hold %lld rows, the shape %lld",
                                       name, (long long)rows, (long long)ne[0]);
        return;
    }
    writer_tensor *t = w_new_tensor(w, name, ndim, ne, dtype);
    if (!t) return;
    for (int i = 0; i < n_parts; i++) t->parts[i] = parts[i];
    t->n_parts = n_parts;
    t->row_order = row_order;
}

void kf_gguf_writer_add_tensor(kf_gguf_writer *w, const char *name, int ndim, const int64_t *ne, const float *data,
                               kf_dtype dtype) {
    kf_gguf_rows part = {data, ne[0], KF_DTYPE_F32};
    kf_gguf_writer_add_stacked(w, name, ndim, ne, &part, 1, NULL, dtype);
}

// Writes one tensor's data a row at a time: rows already in the stored dtype
// as they are, others through buf (one row encoded) and f32 (one row fp32).
static bool write_tensor_data(FILE *f, const writer_tensor *t, uint8_t *buf, float *f32) {
    int64_t ncols = 1;
    for (int i = 1; i < t->ndim; i++) ncols *= t->ne[i];
    bool same = !t->row_order;
    for (int p = 0; p < t->n_parts; p++) same = same && t->parts[p].dtype == t->dtype;
    if (same) {
        for (int p = 0; p < t->n_parts; p++) {
            size_t n = kf_dtype_size(t->dtype, t->parts[p].rows * ncols);
            if (fwrite(t->parts[p].data, 1, n, f) != n) return false;
        }
        return true;
    }
    size_t row_bytes = kf_dtype_size(t->dtype, ncols);
    for (int64_t r = 0; r < t->ne[0]; r++) {
        int64_t src = t->row_order ? t->row_order[r] : r;
        int p = 0;
        while (src >= t->parts[p].rows) src -= t->parts[p++].rows;
        const kf_gguf_rows *part = &t->parts[p];
        const uint8_t *row = (const uint8_t *)part->data + kf_dtype_size(part->dtype, src * ncols);
        if (part->dtype == t->dtype) {
            if (fwrite(row, 1, row_bytes, f) != row_bytes) return false;
            continue;
        }
        kf_dtype_to_f32(part->dtype, row, f32, ncols);
        kf_f32_to_dtype(t->dtype, f32, buf, ncols);
        if (fwrite(buf, 1, row_bytes, f) != row_bytes) return false;
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
    float *f32 = malloc(sizeof(float) * (size_t)max_cols);
    if (!buf || !f32) {
        free(buf);
        free(f32);
        return kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory", path);
    }
    char tmp[1100];
    FILE *f;
    kf_status st = kf_file_begin(path, tmp, sizeof tmp, &f, err);
    if (st != KF_OK) {
        free(buf);
        free(f32);
        return st;
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
        ok = write_zeros(f, (size_t)(t->offset - at)) && write_tensor_data(f, t, buf, f32);
        at = t->offset + t->nbytes;
    }
    free(buf);
    free(f32);
    return kf_file_commit(f, ok, tmp, path, err);
}

