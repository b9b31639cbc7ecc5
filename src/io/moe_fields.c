// MoE fields in HF folders and GGUF files (moe_io.h).
#include "io/moe_fields.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/safetensors.h"
#include "model/model.h"


static const char *ROUTER_NAMES[] = {"linear", "mlp", "oracle"};

bool kf_moe_model_has_experts(const kf_model *m) {
    for (int l = 0; l < m->n_layer; l++)
        if (m->layers[l].n_expert > 0) return true;
    return false;
}

// The four router tensors of a layer with their suffixes.
typedef struct {
    const char *hf, *gguf;
    size_t field;
} router_tensor;

static const router_tensor ROUTER_TENSORS[] = {
    {"router.weight", "ffn_router.weight", offsetof(kf_layer, router_w)},
    {"router.bias", "ffn_router.bias", offsetof(kf_layer, router_b)},
    {"router2.weight", "ffn_router2.weight", offsetof(kf_layer, router_w2)},
    {"router2.bias", "ffn_router2.bias", offsetof(kf_layer, router_b2)},
};
#define N_ROUTER_TENSORS 4

static kf_tensor *field(kf_layer *L, int i) { return (kf_tensor *)((char *)L + ROUTER_TENSORS[i].field); }

// ---- HF ---------------------------------------------------------------------------

kf_status kf_moe_hf_write_routers(const kf_model *m, const char *path, kf_error *err) {
    if (!kf_moe_model_has_experts(m)) return KF_OK;
    int cap = m->n_layer * N_ROUTER_TENSORS, n = 0;
    char (*names)[96] = malloc(sizeof *names * (size_t)cap);
    const char **np = malloc(sizeof *np * (size_t)cap);
    const kf_tensor **ts = malloc(sizeof *ts * (size_t)cap);
    bool ok = names && np && ts;
    for (int l = 0; ok && l < m->n_layer; l++)
        for (int i = 0; i < N_ROUTER_TENSORS; i++) {
            const kf_tensor *t = field(&m->layers[l], i);
            if (m->layers[l].n_expert == 0 || !kf_tensor_present(t)) continue;
            snprintf(names[n], sizeof names[n], "layers.%d.%s", l, ROUTER_TENSORS[i].hf);
            np[n] = names[n];
            ts[n++] = t;
        }
    FILE *f = ok ? fopen(path, "wb") : NULL;
    ok = f && kf_st_write(f, np, ts, n, false);
    if (f) ok = (fclose(f) == 0) && ok;
    free(names);
    free(np);
    free(ts);
    return ok ? KF_OK : kf_error_set(err, KF_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
}

void kf_moe_hf_config(const kf_model *m, cJSON *cfg) {
    if (!kf_moe_model_has_experts(m)) return;
    cJSON *moe = cJSON_AddObjectToObject(cfg, "kfuse_moe");
    cJSON *ne = cJSON_AddArrayToObject(moe, "n_expert"), *ro = cJSON_AddArrayToObject(moe, "router"),
          *tk = cJSON_AddArrayToObject(moe, "top_k"), *cv = cJSON_AddArrayToObject(moe, "coverage");
    for (int l = 0; l < m->n_layer; l++) {
        const kf_layer *L = &m->layers[l];
        cJSON_AddItemToArray(ne, cJSON_CreateNumber(L->n_expert));
        cJSON_AddItemToArray(ro, cJSON_CreateString(L->n_expert > 0 ? ROUTER_NAMES[L->router] : "none"));
        cJSON_AddItemToArray(tk, cJSON_CreateNumber(L->top_k));
        cJSON_AddItemToArray(cv, cJSON_CreateNumber(L->coverage));
    }
    cJSON_AddStringToObject(moe, "router_file", KF_MOE_ROUTER_FILE);
}

// Reads one per-layer integer array of kfuse_moe.
static kf_status json_ints(const cJSON *moe, const char *key, int n, double *v, bool is_name, const char *path,
                           kf_error *err) {
    const cJSON *a = cJSON_GetObjectItem(moe, key);
    if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) != n)
        return kf_error_set(err, KF_ERR_FORMAT, "%s: kfuse_moe.%s is not an array of %d layers", path, key, n);
    for (int l = 0; l < n; l++) {
        const cJSON *e = cJSON_GetArrayItem(a, l);
        if (is_name) {
            v[l] = -1;
            for (int k = 0; k < 3 && cJSON_IsString(e); k++)
                if (!strcmp(e->valuestring, ROUTER_NAMES[k])) v[l] = k;
            if (cJSON_IsString(e) && !strcmp(e->valuestring, "none")) v[l] = 0;
            if (v[l] < 0) return kf_error_set(err, KF_ERR_FORMAT, "%s: kfuse_moe.%s[%d] is not a router kind", path, key, l);
        } else {
            if (!cJSON_IsNumber(e) || !(e->valuedouble >= 0 && e->valuedouble <= 1 << 24))
                return kf_error_set(err, KF_ERR_FORMAT, "%s: kfuse_moe.%s[%d] is not a number in range", path, key, l);
            v[l] = e->valuedouble;
        }
    }
    return KF_OK;
}

// Copies a file tensor (any float dtype) into a model-owned one.
static kf_status take_tensor(kf_model *m, kf_tensor *t, int ndim, const int64_t *ne, kf_dtype dtype, const void *data,
                             const char *path, const char *name, kf_error *err) {
    if (dtype >= KF_DTYPE_COUNT || ndim < 1 || ndim > 2)
        return kf_error_set(err, KF_ERR_FORMAT, "%s: router tensor %s has an unusable dtype or rank", path, name);
    kf_status s = kf_model_alloc_tensor(m, t, ndim, ne, err);
    if (s != KF_OK) return s;
    kf_dtype_to_f32(dtype, data, t->data, kf_tensor_nelem(t));
    t->src_dtype = dtype;
    return KF_OK;
}

static kf_status set_layers(kf_model *m, const double *ne, const double *ro, const double *tk, const double *cv,
                            const char *path, kf_error *err) {
    for (int l = 0; l < m->n_layer; l++) {
        kf_layer *L = &m->layers[l];
        L->n_expert = (int)ne[l];
        L->router = (kf_router_kind)(int)ro[l];
        L->top_k = (int)tk[l];
        L->coverage = (float)cv[l];
        // every layer's coverage is written back, so every layer's must be a share
        if (!(cv[l] >= 0 && cv[l] <= 1))
            return kf_error_set(err, KF_ERR_FORMAT, "%s: layer %d: coverage %g is not in [0, 1]", path, l, cv[l]);
        if (L->n_expert > 0 && (L->n_expert > L->n_ff || L->n_ff % L->n_expert != 0))
            return kf_error_set(err, KF_ERR_FORMAT, "%s: layer %d: %d experts do not divide %d neurons", path, l,
                                L->n_expert, L->n_ff);
    }
    return KF_OK;
}

static kf_status load_hf(kf_model *m, const char *dir, kf_error *err) {
    char cfg_path[1100], rpath[1100];
    if (!kf_path_join(cfg_path, sizeof cfg_path, dir, "config.json") ||
        !kf_path_join(rpath, sizeof rpath, dir, KF_MOE_ROUTER_FILE))
        return kf_error_set(err, KF_ERR_ARG, "%s: path too long", dir);
    char *text;
    size_t len;
    kf_status s = kf_file_read_all(cfg_path, &text, &len, err);
    if (s != KF_OK) return s;
    cJSON *cfg = cJSON_ParseWithLength(text, len);
    free(text);
    const cJSON *moe = cJSON_GetObjectItem(cfg, "kfuse_moe");
    if (!moe) {
        cJSON_Delete(cfg);
        return KF_OK;
    }
    const int L = m->n_layer;
    double *v = calloc((size_t)L * 4, sizeof(double));
    kf_st_set st = {0};
    if (!v) s = kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory", cfg_path);
    if (s == KF_OK) s = json_ints(moe, "n_expert", L, v, false, cfg_path, err);
    if (s == KF_OK) s = json_ints(moe, "router", L, v + L, true, cfg_path, err);
    if (s == KF_OK) s = json_ints(moe, "top_k", L, v + 2 * L, false, cfg_path, err);
    if (s == KF_OK) s = json_ints(moe, "coverage", L, v + 3 * L, false, cfg_path, err);
    if (s == KF_OK) s = set_layers(m, v, v + L, v + 2 * L, v + 3 * L, cfg_path, err);
    if (s == KF_OK) s = kf_st_set_add_file(&st, rpath, err);
    if (s == KF_OK) s = kf_st_set_index(&st, err);
    char name[96];
    for (int l = 0; l < L && s == KF_OK; l++)
        for (int i = 0; i < N_ROUTER_TENSORS && s == KF_OK; i++) {
            snprintf(name, sizeof name, "layers.%d.%s", l, ROUTER_TENSORS[i].hf);
            const kf_st_tensor *t = kf_st_set_find(&st, name);
            if (t) s = take_tensor(m, field(&m->layers[l], i), t->ndim, t->ne, t->dtype, t->data, rpath, name, err);
        }
    kf_st_set_free(&st);
    free(v);
    cJSON_Delete(cfg);
    return s;
}

// ---- GGUF --------------------------------------------------------------------------

static const char *base_name(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

bool kf_moe_gguf_router_path(const char *gguf_path, char *out, size_t n) {
    size_t len = strlen(gguf_path);
    if (len >= 5 && !strcmp(gguf_path + len - 5, ".gguf")) len -= 5;
    return snprintf(out, n, "%.*s.moe_router.gguf", (int)len, gguf_path) < (int)n;
}

void kf_moe_make_dense(kf_model *m) {
    for (int l = 0; l < m->n_layer; l++) {
        kf_layer *L = &m->layers[l];
        L->n_expert = L->top_k = 0;
        L->coverage = 0;
        L->router = KF_ROUTER_LINEAR;
        for (int i = 0; i < N_ROUTER_TENSORS; i++) memset(field(L, i), 0, sizeof(kf_tensor));
    }
}

kf_status kf_moe_gguf_write_routers(const kf_model *m, const char *router_path, kf_error *err) {
    kf_gguf_writer *w;
    kf_status s = kf_gguf_writer_init(&w, err);
    if (s != KF_OK) return s;
    // Not a model: a reader that opens it by mistake learns what it is.
    kf_gguf_writer_add_str(w, "general.architecture", "kfuse-moe-router");
    kf_gguf_writer_add_u32(w, "general.alignment", KF_GGUF_DEFAULT_ALIGNMENT);
    char name[96];
    for (int l = 0; l < m->n_layer; l++)
        for (int i = 0; i < N_ROUTER_TENSORS; i++) {
            kf_tensor *t = field(&m->layers[l], i);
            if (m->layers[l].n_expert == 0 || !kf_tensor_present(t)) continue;
            snprintf(name, sizeof name, "blk.%d.%s", l, ROUTER_TENSORS[i].gguf);
            kf_gguf_writer_add_tensor(w, name, t->ndim, t->ne, t->data, KF_DTYPE_F32);
        }
    s = kf_gguf_writer_save(w, router_path, err);
    kf_gguf_writer_free(w);
    return s;
}

kf_status kf_moe_gguf_add(kf_gguf_writer *w, const kf_model *m, const char *router_path, kf_error *err) {
    if (!kf_moe_model_has_experts(m)) return KF_OK;
    const int L = m->n_layer;
    int32_t *iv = malloc(sizeof(int32_t) * (size_t)L * 3);
    float *cv = malloc(sizeof(float) * (size_t)L);
    if (!iv || !cv) {
        free(iv);
        free(cv);
        return kf_error_set(err, KF_ERR_NOMEM, "GGUF writer: out of memory for the expert keys");
    }
    for (int l = 0; l < L; l++) {
        const kf_layer *ly = &m->layers[l];
        iv[l] = ly->n_expert;
        iv[L + l] = (int32_t)ly->router;
        iv[2 * L + l] = ly->top_k;
        cv[l] = ly->coverage;
    }
    kf_gguf_writer_add_i32_array(w, "kfuse.moe.n_expert", iv, L);
    kf_gguf_writer_add_i32_array(w, "kfuse.moe.router", iv + L, L);
    kf_gguf_writer_add_i32_array(w, "kfuse.moe.top_k", iv + 2 * L, L);
    kf_gguf_writer_add_f32_array(w, "kfuse.moe.coverage", cv, L);
    kf_gguf_writer_add_str(w, "kfuse.moe.router_file", base_name(router_path));
    free(iv);
    free(cv);
    return KF_OK;
}

static kf_status gguf_array(const kf_gguf *g, const char *key, int n, double *v, kf_error *err) {
    if (!strcmp(key, "kfuse.moe.coverage")) {
        float *a = NULL;
        int64_t k = 0;
        kf_status s = kf_gguf_get_float_array(g, key, &a, &k, err);
        if (s == KF_OK && k != n) s = kf_error_set(err, KF_ERR_FORMAT, "%s: %s has %lld values, not %d", g->path, key, (long long)k, n);
        for (int l = 0; s == KF_OK && l < n; l++) v[l] = a[l];
        free(a);
        return s;
    }
    int64_t *a = NULL, k = 0;
    kf_status s = kf_gguf_get_int_array(g, key, &a, &k, err);
    if (s == KF_OK && k != n) s = kf_error_set(err, KF_ERR_FORMAT, "%s: %s has %lld values, not %d", g->path, key, (long long)k, n);
    for (int l = 0; s == KF_OK && l < n; l++) {
        if (a[l] < 0 || a[l] > (1 << 24)) s = kf_error_set(err, KF_ERR_FORMAT, "%s: %s[%d] out of range", g->path, key, l);
        else v[l] = (double)a[l];
    }
    free(a);
    return s;
}

// Opens the companion that kfuse.moe.router_file names: a plain file name,
// looked up beside the model file.
static kf_status open_routers(const kf_gguf *g, const char *path, kf_gguf **rg, kf_error *err) {
    char *name = NULL, rpath[1100], esc[KF_ESC_NAME];
    kf_status s = kf_gguf_get_str(g, "kfuse.moe.router_file", true, &name, err);
    if (s != KF_OK) return s;
    const char *slash = strrchr(path, '/');
    int dir_len = slash ? (int)(slash - path + 1) : 0;
    if (!name[0] || strchr(name, '/') || !strcmp(name, ".") || !strcmp(name, ".."))
        s = kf_error_set(err, KF_ERR_FORMAT, "%s: kfuse.moe.router_file '%s' is not a file name", path,
                         kf_str_escape(esc, sizeof esc, name, KF_STR_NUL));
    else if (snprintf(rpath, sizeof rpath, "%.*s%s", dir_len, path, name) >= (int)sizeof rpath)
        s = kf_error_set(err, KF_ERR_ARG, "%s: path too long", path);
    else if (!kf_file_exists(rpath))
        s = kf_error_set(err, KF_ERR_IO, "%s: the experts' routers file %s (kfuse.moe.router_file) is missing", path,
                         rpath);
    free(name);
    return s == KF_OK ? kf_gguf_open(rg, rpath, err) : s;
}

static kf_status load_gguf(kf_model *m, const char *path, kf_error *err) {
    kf_gguf *g;
    kf_status s = kf_gguf_open(&g, path, err);
    if (s != KF_OK) return s;
    if (!kf_gguf_find_kv(g, "kfuse.moe.n_expert")) {
        kf_gguf_close(g);
        return KF_OK;
    }
    const int L = m->n_layer;
    double *v = calloc((size_t)L * 4, sizeof(double));
    if (!v) s = kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory", path);
    if (s == KF_OK) s = gguf_array(g, "kfuse.moe.n_expert", L, v, err);
    if (s == KF_OK) s = gguf_array(g, "kfuse.moe.router", L, v + L, err);
    if (s == KF_OK) s = gguf_array(g, "kfuse.moe.top_k", L, v + 2 * L, err);
    if (s == KF_OK) s = gguf_array(g, "kfuse.moe.coverage", L, v + 3 * L, err);
    for (int l = 0; s == KF_OK && l < L; l++)
        if (v[L + l] > KF_ROUTER_ORACLE) s = kf_error_set(err, KF_ERR_FORMAT, "%s: layer %d: unknown router kind", path, l);
    if (s == KF_OK) s = set_layers(m, v, v + L, v + 2 * L, v + 3 * L, path, err);
    kf_gguf *rg = NULL; // the companion router file (older files: none, the routers are in g)
    if (s == KF_OK && kf_gguf_find_kv(g, "kfuse.moe.router_file")) s = open_routers(g, path, &rg, err);
    const kf_gguf *src = rg ? rg : g;
    char name[96];
    for (int l = 0; l < L && s == KF_OK; l++)
        for (int i = 0; i < N_ROUTER_TENSORS && s == KF_OK; i++) {
            snprintf(name, sizeof name, "blk.%d.%s", l, ROUTER_TENSORS[i].gguf);
            const kf_gguf_tensor *t = kf_gguf_find_tensor(src, name);
            if (!t) continue;
            kf_tensor *dst = field(&m->layers[l], i);
            if (t->dtype >= KF_DTYPE_COUNT || t->ndim < 1 || t->ndim > 2) {
                s = kf_error_set(err, KF_ERR_FORMAT, "%s: router tensor %s has an unusable dtype or rank", src->path, name);
                break;
            }
            if ((s = kf_model_alloc_tensor(m, dst, t->ndim, t->ne, err)) == KF_OK) {
                kf_gguf_tensor_to_f32(t, dst->data);
                dst->src_dtype = t->dtype;
            }
        }
    free(v);
    kf_gguf_close(rg);
    kf_gguf_close(g);
    return s;
}

kf_status kf_moe_load(kf_model *m, const char *path, kf_error *err) {
    kf_status s = KF_OK;
    if (!strcmp(m->format, "hf")) s = load_hf(m, path, err);
    else if (!strcmp(m->format, "gguf")) s = load_gguf(m, path, err);
    if (s != KF_OK) return s;
    return kf_model_validate(m, path, err);
}
