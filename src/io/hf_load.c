// kf_model_load_hf: config.json + safetensors (single or sharded) into a kf_model.
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/hf_arch.h"

typedef struct {
    const char *name;
    kf_status (*load)(kf_hf_loader *, kf_error *);
} arch_entry;

static const arch_entry ARCHS[] = {
    {"LlamaForCausalLM", kf_hf_llama_load},
    {"MistralForCausalLM", kf_hf_llama_load},
    {"Qwen2ForCausalLM", kf_hf_llama_load},
    {"GPT2LMHeadModel", kf_hf_gpt2_load},
};
#define N_ARCHS (int)(sizeof ARCHS / sizeof ARCHS[0])

// Tensors some checkpoints carry that no architecture here reads.
static bool ignorable(const char *name) {
    static const char *suffixes[] = {"rotary_emb.inv_freq", ".attn.bias", ".attn.masked_bias"};
    size_t n = strlen(name);
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
        size_t k = strlen(suffixes[i]);
        if (n >= k && strcmp(name + n - k, suffixes[i]) == 0) return true;
    }
    return false;
}

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

// Converts a tensor's bytes to fp32 in dst, whatever the alignment of the map.
static kf_status convert(const kf_hf_loader *ld, const kf_st_tensor *s, float *dst, kf_error *err) {
    size_t align = s->dtype == KF_DTYPE_F32 ? 4 : 2;
    if ((uintptr_t)s->data % align == 0) {
        kf_dtype_to_f32(s->dtype, s->data, dst, s->nelem);
        return KF_OK;
    }
    if (s->dtype == KF_DTYPE_F32) {
        memcpy(dst, s->data, s->nbytes);
        return KF_OK;
    }
    void *tmp = malloc(s->nbytes ? s->nbytes : 1);
    if (!tmp) return kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory", ld->st->paths[s->file]);
    memcpy(tmp, s->data, s->nbytes);
    kf_dtype_to_f32(s->dtype, tmp, dst, s->nelem);
    free(tmp);
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
    if (in_place(s)) {
        t->data = (float *)s->data; // read-only map: weights are never written in place
        return KF_OK;
    }
    float *dst = kf_model_alloc(ld->m, s->nelem);
    if (!dst) return kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory for tensor '%s'", ld->st->paths[s->file], name);
    t->data = dst;
    return convert(ld, s, dst, err);
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
        if ((st = convert(ld, s, tmp, err)) != KF_OK) {
            free(tmp);
            return st;
        }
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

static kf_status read_arch(const kf_hf_config *cfg, const char *dir, const arch_entry **out, const char **name,
                           kf_error *err) {
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(cfg->root, "architectures");
    if (!cJSON_IsArray(a) || !cJSON_IsString(a->child))
        return kf_error_set(err, KF_ERR_FORMAT, "%s: \"architectures\" must be a non-empty list of names", cfg->path);
    *name = a->child->valuestring;
    for (int i = 0; i < N_ARCHS; i++)
        if (strcmp(ARCHS[i].name, *name) == 0) {
            *out = &ARCHS[i];
            return KF_OK;
        }
    char list[256] = "";
    for (int i = 0; i < N_ARCHS; i++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "", ARCHS[i].name);
    char esc[KF_ESC_NAME];
    return kf_error_set(err, KF_ERR_UNSUPPORTED, "%s/config.json: unknown architecture '%s' (supported: %s)", dir,
                        kf_str_escape(esc, sizeof esc, *name, KF_STR_NUL), list);
}

static kf_status load(kf_model *m, const char *dir, kf_hf_config *cfg, kf_st_set *st, kf_hf_loader *ld,
                      kf_error *err) {
    kf_status s = kf_hf_config_open(cfg, dir, err);
    if (s != KF_OK) return s;
    const arch_entry *arch = NULL;
    if ((s = read_arch(cfg, dir, &arch, &ld->arch, err)) != KF_OK) return s;
    if ((s = kf_st_set_open_dir(st, dir, err)) != KF_OK) return s;
    for (int i = 0; i < st->n_files; i++)
        if ((s = kf_model_add_map(m, kf_st_set_take_map(st, i), err)) != KF_OK) return s;
    const char *where = st->n_files == 1 ? "model.safetensors" : "model.safetensors.index.json";
    if (!kf_path_join(ld->where, sizeof ld->where, dir, where))
        return kf_error_set(err, KF_ERR_ARG, "%s: path too long", dir);
    ld->m = m;
    ld->cfg = cfg;
    ld->st = st;
    ld->used = calloc((size_t)st->n_tensors + 1, sizeof *ld->used);
    if (!ld->used) return kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory", dir);
    if ((s = arch->load(ld, err)) != KF_OK) return s;
    char esc[KF_ESC_NAME];
    for (int i = 0; i < st->n_tensors; i++)
        if (!ld->used[i] && !ignorable(st->tensors[i].name))
            return kf_error_set(err, KF_ERR_FORMAT, "%s: unexpected tensor '%s' (not part of %s as configured)",
                                st->paths[st->tensors[i].file],
                                kf_str_escape(esc, sizeof esc, st->tensors[i].name, KF_STR_NUL), ld->arch);
    if ((s = kf_hf_config_token(cfg, "bos_token_id", &m->bos_id, err)) != KF_OK) return s;
    if ((s = kf_hf_config_token(cfg, "eos_token_id", &m->eos_id, err)) != KF_OK) return s;
    snprintf(m->format, sizeof m->format, "hf");
    snprintf(m->path, sizeof m->path, "%s", dir);
    return kf_model_validate(m, ld->where, err);
}

kf_status kf_model_load_hf(kf_model **out, const char *dir, kf_error *err) {
    *out = NULL;
    kf_model *m = kf_model_new();
    if (!m) return kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory", dir);
    kf_hf_config cfg = {.root = NULL};
    kf_st_set st = {0};
    kf_hf_loader ld = {0};
    kf_status s = load(m, dir, &cfg, &st, &ld, err);
    free(ld.used);
    kf_st_set_free(&st);
    kf_hf_config_free(&cfg);
    if (s != KF_OK) {
        kf_model_free(m);
        return s;
    }
    *out = m;
    return KF_OK;
}
