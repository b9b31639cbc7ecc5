// kf_model_load_hf: config.json + safetensors (single or sharded) into a kf_model.
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arch/arch.h"
#include "io/load.h"

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

static kf_status read_arch(const kf_hf_config *cfg, const char *dir, const kf_arch_desc **out, const char **name,
                           kf_error *err) {
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(cfg->root, "architectures");
    if (!cJSON_IsArray(a) || !cJSON_IsString(a->child))
        return kf_error_set(err, KF_ERR_FORMAT, "%s: \"architectures\" must be a non-empty list of names", cfg->path);
    *name = a->child->valuestring;
    if ((*out = kf_arch_find_hf(*name))) return KF_OK;
    char list[256], esc[KF_ESC_NAME];
    kf_arch_list_hf(list, sizeof list);
    return kf_error_set(err, KF_ERR_UNSUPPORTED, "%s/config.json: unknown architecture '%s' (supported: %s)", dir,
                        kf_str_escape(esc, sizeof esc, *name, KF_STR_NUL), list);
}

static kf_status load(kf_model *m, const char *dir, kf_hf_config *cfg, kf_st_set *st, kf_hf_loader *ld,
                      kf_error *err) {
    kf_status s = kf_hf_config_open(cfg, dir, err);
    if (s != KF_OK) return s;
    const kf_arch_desc *arch = NULL;
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
    kf_arch_set_traits(m, arch->id);
    if ((s = arch->hf_load(ld, err)) != KF_OK) return s;
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
    return kf_model_load_hf_opts(out, dir, NULL, err);
}

kf_status kf_model_load_hf_opts(kf_model **out, const char *dir, const kf_load_opts *o, kf_error *err) {
    *out = NULL;
    kf_model *m = kf_model_new();
    if (!m) return kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory", dir);
    kf_hf_config cfg = {.root = NULL};
    kf_st_set st = {0};
    kf_hf_loader ld = {.keep_dtype = o && o->keep_dtype};
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
