#include "formats/safetensors.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *name;
    size_t size;    // bytes per element
    kf_dtype dtype; // KF_DTYPE_COUNT: valid in the format, not convertible
} dtype_info;

static const dtype_info DTYPES[] = {
    {"F32", 4, KF_DTYPE_F32},     {"F16", 2, KF_DTYPE_F16},     {"BF16", 2, KF_DTYPE_BF16},
    {"F64", 8, KF_DTYPE_COUNT},   {"I64", 8, KF_DTYPE_COUNT},   {"I32", 4, KF_DTYPE_COUNT},
    {"I16", 2, KF_DTYPE_COUNT},   {"I8", 1, KF_DTYPE_COUNT},    {"U64", 8, KF_DTYPE_COUNT},
    {"U32", 4, KF_DTYPE_COUNT},   {"U16", 2, KF_DTYPE_COUNT},   {"U8", 1, KF_DTYPE_COUNT},
    {"BOOL", 1, KF_DTYPE_COUNT},  {"F8_E4M3", 1, KF_DTYPE_COUNT}, {"F8_E5M2", 1, KF_DTYPE_COUNT},
};

static const dtype_info *dtype_lookup(const char *name) {
    for (size_t i = 0; i < sizeof DTYPES / sizeof DTYPES[0]; i++)
        if (strcmp(DTYPES[i].name, name) == 0) return &DTYPES[i];
    return NULL;
}

// A JSON number that is a non-negative integer exactly representable in a double.
static bool json_uint(const cJSON *j, uint64_t *out) {
    if (!cJSON_IsNumber(j)) return false;
    double v = j->valuedouble;
    if (!(v >= 0 && v <= 9007199254740992.0) || v != floor(v)) return false;
    *out = (uint64_t)v;
    return true;
}

typedef struct {
    uint64_t begin, end;
    int tensor;
} span;

static int span_cmp(const void *a, const void *b) {
    const span *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : (x->end > y->end) - (x->end < y->end);
}

// Fills t from one header entry; base/dsize describe the data section.
static kf_status parse_entry(const char *path, const cJSON *e, const uint8_t *base, size_t dsize, kf_st_tensor *t,
                             span *sp, kf_error *err) {
    char esc[KF_ESC_NAME];
    const char *name = kf_str_escape(esc, sizeof esc, e->string, KF_STR_NUL); // for messages
    if (!cJSON_IsObject(e)) return kf_error_set(err, KF_ERR_FORMAT, "%s: tensor '%s' is not a JSON object", path, name);
    const cJSON *jd = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *js = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *jo = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(jd) || !cJSON_IsArray(js) || !cJSON_IsArray(jo))
        return kf_error_set(err, KF_ERR_FORMAT, "%s: tensor '%s' lacks dtype, shape or data_offsets", path, name);
    const dtype_info *di = dtype_lookup(jd->valuestring);
    char dt[24];
    if (!di) return kf_error_set(err, KF_ERR_UNSUPPORTED, "%s: tensor '%s' has unknown dtype '%s'", path, name,
                                 kf_str_escape(dt, sizeof dt, jd->valuestring, KF_STR_NUL));
    int ndim = cJSON_GetArraySize(js);
    if (ndim > KF_MAX_DIMS)
        return kf_error_set(err, KF_ERR_UNSUPPORTED, "%s: tensor '%s' has %d dimensions (at most %d supported)", path,
                            name, ndim, KF_MAX_DIMS);
    int64_t nelem = 1;
    int k = 0;
    for (const cJSON *d = js->child; d; d = d->next, k++) {
        uint64_t v;
        if (!json_uint(d, &v))
            return kf_error_set(err, KF_ERR_FORMAT, "%s: tensor '%s' has a shape entry that is not a size", path, name);
        if (v != 0 && (uint64_t)nelem > (uint64_t)INT64_MAX / v)
            return kf_error_set(err, KF_ERR_FORMAT, "%s: tensor '%s' has an overflowing shape", path, name);
        nelem *= (int64_t)v;
        t->ne[k] = (int64_t)v;
    }
    for (; k < KF_MAX_DIMS; k++) t->ne[k] = 1;
    uint64_t begin, end;
    if (cJSON_GetArraySize(jo) != 2 || !json_uint(jo->child, &begin) || !json_uint(jo->child->next, &end))
        return kf_error_set(err, KF_ERR_FORMAT, "%s: tensor '%s' data_offsets is not a pair of sizes", path, name);
    if (end < begin)
        return kf_error_set(err, KF_ERR_FORMAT, "%s: tensor '%s' data_offsets [%llu, %llu) end before begin", path,
                            name, (unsigned long long)begin, (unsigned long long)end);
    if (end > dsize)
        return kf_error_set(err, KF_ERR_FORMAT,
                            "%s: tensor '%s' data_offsets [%llu, %llu) past the end of the data (%zu bytes)", path, name,
                            (unsigned long long)begin, (unsigned long long)end, dsize);
    if ((uint64_t)nelem > (end - begin) / di->size || (uint64_t)nelem * di->size != end - begin)
        return kf_error_set(err, KF_ERR_FORMAT,
                            "%s: tensor '%s' has %lld %s elements but spans %llu bytes", path, name,
                            (long long)nelem, di->name, (unsigned long long)(end - begin));
    t->name = strdup(e->string);
    if (!t->name) return kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory", path);
    snprintf(t->dtype_name, sizeof t->dtype_name, "%s", di->name);
    t->dtype = di->dtype;
    t->ndim = ndim;
    t->nelem = nelem;
    t->data = base + begin;
    t->nbytes = (size_t)(end - begin);
    sp->begin = begin;
    sp->end = end;
    return KF_OK;
}

static kf_status parse_header(kf_st_set *s, int file, kf_error *err) {
    const char *path = s->paths[file];
    const uint8_t *p = s->maps[file].data;
    size_t size = s->maps[file].size;
    if (size < 8) return kf_error_set(err, KF_ERR_FORMAT, "%s: file of %zu bytes is too short for a header", path, size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | p[i];
    if (n > KF_ST_MAX_HEADER)
        return kf_error_set(err, KF_ERR_FORMAT, "%s: header length %llu exceeds the 100 MiB limit", path,
                            (unsigned long long)n);
    if (n > size - 8)
        return kf_error_set(err, KF_ERR_FORMAT, "%s: header length %llu is larger than the file (%zu bytes)", path,
                            (unsigned long long)n, size);
    const char *json = (const char *)p + 8, *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, (size_t)n, &end, 0);
    if (!root) {
        size_t at = end && end >= json ? (size_t)(end - json) : 0;
        return kf_error_set(err, KF_ERR_FORMAT, "%s: header is not valid JSON (near byte %zu of %llu)", path, 8 + at,
                            (unsigned long long)n);
    }
    // The format pads the header with spaces; anything else after the object is junk.
    for (const char *q = end; q < json + n; q++)
        if (*q != ' ' && *q != '\t' && *q != '\n' && *q != '\r' && *q != 0) {
            cJSON_Delete(root);
            return kf_error_set(err, KF_ERR_FORMAT, "%s: junk after the JSON header at byte %zu", path,
                                8 + (size_t)(q - json));
        }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return kf_error_set(err, KF_ERR_FORMAT, "%s: header is not a JSON object", path);
    }
    const uint8_t *base = p + 8 + n;
    size_t dsize = size - 8 - (size_t)n;
    int count = 0;
    for (const cJSON *e = root->child; e; e = e->next) count += strcmp(e->string, "__metadata__") != 0;
    kf_status st = KF_OK;
    span *spans = malloc(sizeof *spans * (size_t)(count ? count : 1));
    kf_st_tensor *ts = realloc(s->tensors, sizeof *ts * (size_t)(s->n_tensors + count + 1));
    if (!spans || !ts) {
        st = kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    s->tensors = ts;
    int k = 0;
    for (const cJSON *e = root->child; e; e = e->next) {
        if (strcmp(e->string, "__metadata__") == 0) {
            if (!cJSON_IsObject(e)) {
                st = kf_error_set(err, KF_ERR_FORMAT, "%s: __metadata__ is not a JSON object", path);
                goto done;
            }
            continue;
        }
        kf_st_tensor *t = &s->tensors[s->n_tensors];
        memset(t, 0, sizeof *t);
        t->file = file;
        if ((st = parse_entry(path, e, base, dsize, t, &spans[k], err)) != KF_OK) goto done;
        spans[k].tensor = s->n_tensors++;
        k++;
    }
    qsort(spans, (size_t)count, sizeof *spans, span_cmp);
    for (int i = 1; i < count; i++)
        if (spans[i].begin < spans[i - 1].end) {
            char e1[KF_ESC_NAME], e2[KF_ESC_NAME];
            st = kf_error_set(err, KF_ERR_FORMAT, "%s: tensors '%s' and '%s' overlap in the data section", path,
                              kf_str_escape(e1, sizeof e1, s->tensors[spans[i - 1].tensor].name, KF_STR_NUL),
                              kf_str_escape(e2, sizeof e2, s->tensors[spans[i].tensor].name, KF_STR_NUL));
            goto done;
        }
done:
    free(spans);
    cJSON_Delete(root);
    return st;
}

kf_status kf_st_set_add_file(kf_st_set *s, const char *path, kf_error *err) {
    char **paths = realloc(s->paths, sizeof *paths * (size_t)(s->n_files + 1));
    if (paths) s->paths = paths;
    kf_mmap *maps = paths ? realloc(s->maps, sizeof *maps * (size_t)(s->n_files + 1)) : NULL;
    if (maps) s->maps = maps;
    char *p = maps ? strdup(path) : NULL;
    if (!p) return kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory", path);
    kf_mmap map;
    kf_status st = kf_mmap_open(&map, path, err);
    if (st != KF_OK) {
        free(p);
        return st;
    }
    s->paths[s->n_files] = p;
    s->maps[s->n_files] = map;
    s->n_files++;
    return parse_header(s, s->n_files - 1, err);
}

static int tensor_cmp(const void *a, const void *b) {
    return strcmp(((const kf_st_tensor *)a)->name, ((const kf_st_tensor *)b)->name);
}

kf_status kf_st_set_index(kf_st_set *s, kf_error *err) {
    if (s->n_tensors > 1) qsort(s->tensors, (size_t)s->n_tensors, sizeof *s->tensors, tensor_cmp);
    char esc[KF_ESC_NAME];
    for (int i = 1; i < s->n_tensors; i++)
        if (strcmp(s->tensors[i].name, s->tensors[i - 1].name) == 0)
            return kf_error_set(err, KF_ERR_FORMAT, "%s: tensor '%s' appears twice", s->paths[s->tensors[i].file],
                                kf_str_escape(esc, sizeof esc, s->tensors[i].name, KF_STR_NUL));
    return KF_OK;
}

const kf_st_tensor *kf_st_set_find(const kf_st_set *s, const char *name) {
    if (s->n_tensors == 0) return NULL;
    kf_st_tensor key = {.name = (char *)name};
    return bsearch(&key, s->tensors, (size_t)s->n_tensors, sizeof key, tensor_cmp);
}

// A shard name from the index must stay inside the model folder.
static bool shard_name_ok(const char *f) {
    return f[0] && !strchr(f, '/') && strcmp(f, ".") != 0 && strcmp(f, "..") != 0;
}

static kf_status open_index(kf_st_set *s, const char *dir, const char *ipath, kf_error *err) {
    char *text;
    kf_status st = kf_file_read_all(ipath, &text, NULL, err);
    if (st != KF_OK) return st;
    cJSON *root = cJSON_Parse(text);
    free(text);
    const cJSON *wm = root ? cJSON_GetObjectItemCaseSensitive(root, "weight_map") : NULL;
    if (!cJSON_IsObject(wm)) {
        cJSON_Delete(root);
        return kf_error_set(err, KF_ERR_FORMAT, "%s: %s", ipath,
                            root ? "no \"weight_map\" object" : "not valid JSON");
    }
    char esc[KF_ESC_NAME], esc2[KF_ESC_NAME];
    for (const cJSON *e = wm->child; e && st == KF_OK; e = e->next) {
        if (!cJSON_IsString(e) || !shard_name_ok(e->valuestring)) {
            st = kf_error_set(err, KF_ERR_FORMAT, "%s: tensor '%s' maps to a bad shard name", ipath,
                              kf_str_escape(esc, sizeof esc, e->string, KF_STR_NUL));
            break;
        }
        bool seen = false;
        for (const cJSON *f = wm->child; f != e && !seen; f = f->next) seen = !strcmp(f->valuestring, e->valuestring);
        if (seen) continue;
        char path[1024];
        if (!kf_path_join(path, sizeof path, dir, e->valuestring)) {
            st = kf_error_set(err, KF_ERR_ARG, "%s: shard path too long", ipath);
            break;
        }
        st = kf_st_set_add_file(s, path, err);
    }
    if (st == KF_OK) st = kf_st_set_index(s, err);
    int listed = 0;
    for (const cJSON *e = wm->child; e && st == KF_OK; e = e->next, listed++) {
        const kf_st_tensor *t = kf_st_set_find(s, e->string);
        const char *slash = t ? strrchr(s->paths[t->file], '/') : NULL;
        if (!t || strcmp(slash ? slash + 1 : s->paths[t->file], e->valuestring) != 0)
            st = kf_error_set(err, KF_ERR_FORMAT, "%s: tensor '%s' is not in shard %s", ipath,
                              kf_str_escape(esc, sizeof esc, e->string, KF_STR_NUL),
                              kf_str_escape(esc2, sizeof esc2, e->valuestring, KF_STR_NUL));
    }
    if (st == KF_OK && listed != s->n_tensors)
        st = kf_error_set(err, KF_ERR_FORMAT, "%s: the shards hold %d tensors but the index lists %d", ipath,
                          s->n_tensors, listed);
    cJSON_Delete(root);
    return st;
}

kf_status kf_st_set_open_dir(kf_st_set *s, const char *dir, kf_error *err) {
    char path[1024];
    if (!kf_path_join(path, sizeof path, dir, "model.safetensors.index.json"))
        return kf_error_set(err, KF_ERR_ARG, "%s: path too long", dir);
    if (kf_file_exists(path)) return open_index(s, dir, path, err);
    if (!kf_path_join(path, sizeof path, dir, "model.safetensors"))
        return kf_error_set(err, KF_ERR_ARG, "%s: path too long", dir);
    if (!kf_file_exists(path))
        return kf_error_set(err, KF_ERR_IO, "%s: no model.safetensors or model.safetensors.index.json", dir);
    kf_status st = kf_st_set_add_file(s, path, err);
    return st == KF_OK ? kf_st_set_index(s, err) : st;
}

kf_mmap kf_st_set_take_map(kf_st_set *s, int i) {
    kf_mmap m = s->maps[i];
    s->maps[i].data = NULL;
    s->maps[i].size = 0;
    return m;
}

void kf_st_set_free(kf_st_set *s) {
    for (int i = 0; i < s->n_tensors; i++) free(s->tensors[i].name);
    for (int i = 0; i < s->n_files; i++) {
        kf_mmap_close(&s->maps[i]);
        free(s->paths[i]);
    }
    free(s->tensors);
    free(s->paths);
    free(s->maps);
    memset(s, 0, sizeof *s);
}

uint64_t kf_st_nbytes(const kf_tensor *t, kf_dtype d) { return (uint64_t)kf_dtype_size(d, kf_tensor_nelem(t)); }

static kf_dtype dtype_at(const kf_dtype *dts, int i) { return dts ? dts[i] : KF_DTYPE_F32; }

static char *write_header(const char *const *names, const kf_tensor *const *ts, const kf_dtype *dts, int n,
                          bool pt_metadata, size_t *len) {
    cJSON *h = cJSON_CreateObject();
    if (pt_metadata) cJSON_AddStringToObject(cJSON_AddObjectToObject(h, "__metadata__"), "format", "pt");
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        uint64_t bytes = kf_st_nbytes(ts[i], dtype_at(dts, i));
        double shape[KF_MAX_DIMS], span[2] = {(double)off, (double)(off + bytes)};
        for (int d = 0; d < ts[i]->ndim; d++) shape[d] = (double)ts[i]->ne[d];
        cJSON *e = cJSON_AddObjectToObject(h, names[i]);
        cJSON_AddStringToObject(e, "dtype", kf_dtype_name(dtype_at(dts, i)));
        cJSON_AddItemToObject(e, "shape", cJSON_CreateDoubleArray(shape, ts[i]->ndim));
        cJSON_AddItemToObject(e, "data_offsets", cJSON_CreateDoubleArray(span, 2));
        off += bytes;
    }
    char *json = cJSON_PrintUnformatted(h);
    cJSON_Delete(h);
    if (!json) return NULL;
    size_t k = strlen(json), padded = (k + 7) & ~(size_t)7;
    char *out = realloc(json, padded + 1);
    if (!out) {
        free(json);
        return NULL;
    }
    memset(out + k, ' ', padded - k);
    out[padded] = 0;
    *len = padded;
    return out;
}

// Tensor t as dtype d: its bytes when already d, else chunks of CHUNK
// values (a multiple of Q8_0's 32) decoded to fp32 and encoded as d.
#define CHUNK 65536
static bool write_tensor(FILE *f, const kf_tensor *t, kf_dtype d, float *buf, uint8_t *out) {
    const int64_t n = kf_tensor_nelem(t);
    if (t->dtype == d) return fwrite(t->data, 1, kf_tensor_nbytes(t), f) == kf_tensor_nbytes(t);
    for (int64_t off = 0; off < n; off += CHUNK) {
        const int64_t k = n - off < CHUNK ? n - off : CHUNK;
        kf_dtype_to_f32(t->dtype, (const uint8_t *)t->data + kf_dtype_size(t->dtype, off), buf, k);
        kf_f32_to_dtype(d, buf, out, k);
        if (fwrite(out, 1, kf_dtype_size(d, k), f) != kf_dtype_size(d, k)) return false;
    }
    return true;
}

bool kf_st_write_dt(FILE *f, const char *const *names, const kf_tensor *const *ts, const kf_dtype *dts, int n,
                    bool pt_metadata) {
    for (int i = 0; i < n; i++) {
        kf_dtype d = dtype_at(dts, i);
        if (d != KF_DTYPE_F32 && d != KF_DTYPE_F16 && d != KF_DTYPE_BF16) return false;
    }
    size_t hlen = 0;
    char *header = write_header(names, ts, dts, n, pt_metadata, &hlen);
    float *buf = malloc(sizeof(float) * CHUNK);
    uint8_t *out = malloc(sizeof(float) * CHUNK);
    bool ok = header && buf && out;
    uint8_t le[8];
    for (int i = 0; i < 8; i++) le[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
    ok = ok && fwrite(le, 1, 8, f) == 8 && fwrite(header, 1, hlen, f) == hlen;
    for (int i = 0; i < n && ok; i++) ok = write_tensor(f, ts[i], dtype_at(dts, i), buf, out);
    free(header);
    free(buf);
    free(out);
    return ok;
}

bool kf_st_write(FILE *f, const char *const *names, const kf_tensor *const *ts, int n, bool pt_metadata) {
    return kf_st_write_dt(f, names, ts, NULL, n, pt_metadata);
}
