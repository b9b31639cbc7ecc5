#include "io/hf_write.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/hf_arch.h"
#include "moe/moe_io.h"

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

static void outs_free(kf_hf_outs *o) {
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

// mkdir -p
static kf_status make_dirs(const char *dir, kf_error *err) {
    char p[1024];
    if (snprintf(p, sizeof p, "%s", dir) >= (int)sizeof p) return kf_error_set(err, KF_ERR_ARG, "%s: path too long", dir);
    for (char *q = p + 1;; q++) {
        if (*q != '/' && *q != 0) continue;
        char c = *q;
        *q = 0;
        if (mkdir(p, 0755) != 0 && errno != EEXIST)
            return kf_error_set(err, KF_ERR_IO, "%s: cannot create folder: %s", p, strerror(errno));
        *q = c;
        if (!c) break;
    }
    if (!kf_dir_exists(dir)) return kf_error_set(err, KF_ERR_IO, "%s: not a folder", dir);
    return KF_OK;
}

// Header JSON for the tensors laid out back to back, padded with spaces to
// a multiple of 8 so that the F32 data stays aligned in a map.
static char *safetensors_header(const kf_hf_outs *o, size_t *len) {
    cJSON *h = cJSON_CreateObject();
    cJSON *meta = cJSON_AddObjectToObject(h, "__metadata__");
    cJSON_AddStringToObject(meta, "format", "pt");
    uint64_t off = 0;
    for (int i = 0; i < o->n; i++) {
        const kf_tensor *t = &o->t[i].t;
        uint64_t bytes = (uint64_t)kf_tensor_nelem(t) * 4;
        double shape[KF_MAX_DIMS], span[2] = {(double)off, (double)(off + bytes)};
        for (int d = 0; d < t->ndim; d++) shape[d] = (double)t->ne[d];
        cJSON *e = cJSON_AddObjectToObject(h, o->t[i].name);
        cJSON_AddStringToObject(e, "dtype", "F32");
        cJSON_AddItemToObject(e, "shape", cJSON_CreateDoubleArray(shape, t->ndim));
        cJSON_AddItemToObject(e, "data_offsets", cJSON_CreateDoubleArray(span, 2));
        off += bytes;
    }
    char *json = cJSON_PrintUnformatted(h);
    cJSON_Delete(h);
    if (!json) return NULL;
    size_t n = strlen(json), padded = (n + 7) & ~(size_t)7;
    char *out = realloc(json, padded + 1);
    if (!out) {
        free(json);
        return NULL;
    }
    memset(out + n, ' ', padded - n);
    out[padded] = 0;
    *len = padded;
    return out;
}

static kf_status write_safetensors(const kf_hf_outs *o, const char *path, kf_error *err) {
    size_t hlen;
    char *header = safetensors_header(o, &hlen);
    if (!header) return kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory", path);
    FILE *f = fopen(path, "wb");
    if (!f) {
        free(header);
        return kf_error_set(err, KF_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    }
    uint8_t le[8];
    for (int i = 0; i < 8; i++) le[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
    bool ok = fwrite(le, 1, 8, f) == 8 && fwrite(header, 1, hlen, f) == hlen;
    for (int i = 0; i < o->n && ok; i++) {
        size_t n = (size_t)kf_tensor_nelem(&o->t[i].t);
        ok = fwrite(o->t[i].t.data, sizeof(float), n, f) == n;
    }
    ok = (fclose(f) == 0) && ok;
    free(header);
    return ok ? KF_OK : kf_error_set(err, KF_ERR_IO, "%s: write failed: %s", path, strerror(errno));
}

static kf_status write_text(const char *text, const char *path, kf_error *err) {
    FILE *f = fopen(path, "wb");
    if (!f) return kf_error_set(err, KF_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    size_t n = strlen(text);
    bool ok = fwrite(text, 1, n, f) == n && fputc('\n', f) != EOF;
    ok = (fclose(f) == 0) && ok;
    return ok ? KF_OK : kf_error_set(err, KF_ERR_IO, "%s: write failed: %s", path, strerror(errno));
}

static kf_status write_files(const kf_model *m, const char *dir, kf_hf_outs *o, cJSON *cfg, char paths[4][1100],
                             kf_error *err) {
    kf_status s = kf_model_validate(m, "model to write", err);
    if (s != KF_OK) return s;
    if (m->tied_head && m->lm_head.data != m->tok_embd.data)
        return kf_error_set(err, KF_ERR_ARG, "model to write: tied head does not alias the embeddings");
    if ((s = make_dirs(dir, err)) != KF_OK) return s;
    const char *names[4] = {"model.safetensors.tmp", "config.json.tmp", "model.safetensors", "config.json"};
    for (int i = 0; i < 4; i++)
        if (!kf_path_join(paths[i], sizeof paths[i], dir, names[i]))
            return kf_error_set(err, KF_ERR_ARG, "%s: path too long", dir);
    char index[1100];
    kf_path_join(index, sizeof index, dir, "model.safetensors.index.json");
    if (kf_file_exists(index))
        return kf_error_set(err, KF_ERR_ARG, "%s: already holds a sharded checkpoint; write to another folder", dir);
    s = m->arch == KF_ARCH_GPT2 ? kf_hf_gpt2_export(m, cfg, o, err) : kf_hf_llama_export(m, cfg, o, err);
    if (s != KF_OK) return s;
    if (m->bos_id >= 0) cJSON_AddNumberToObject(cfg, "bos_token_id", m->bos_id);
    if (m->eos_id >= 0) cJSON_AddNumberToObject(cfg, "eos_token_id", m->eos_id);
    cJSON_AddStringToObject(cfg, "torch_dtype", "float32");
    char *text = cJSON_Print(cfg);
    if (!text) return kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory", dir);
    s = write_safetensors(o, paths[0], err);
    if (s == KF_OK) s = write_text(text, paths[1], err);
    free(text);
    if (s != KF_OK) return s;
    for (int i = 0; i < 2; i++)
        if (rename(paths[i], paths[i + 2]) != 0)
            return kf_error_set(err, KF_ERR_IO, "%s: cannot rename: %s", paths[i], strerror(errno));
    return KF_OK;
}

kf_status kf_hf_write(const kf_model *m, const char *dir, kf_error *err) {
    kf_hf_outs o = {.dir = dir};
    cJSON *cfg = cJSON_CreateObject();
    char paths[4][1100] = {"", "", "", ""};
    kf_status s = cfg ? write_files(m, dir, &o, cfg, paths, err) : kf_error_set(err, KF_ERR_NOMEM, "out of memory");
    if (s == KF_OK) s = kf_moe_hf_write(m, dir, err); // routers of a MoEfied model (moe/moe_io.h)
    if (s != KF_OK)
        for (int i = 0; i < 2; i++)
            if (paths[i][0]) remove(paths[i]);
    cJSON_Delete(cfg);
    outs_free(&o);
    return s;
}
