#include "formats/hf_config.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/file.h"

kf_status kf_hf_config_open(kf_hf_config *c, const char *dir, kf_error *err) {
    c->root = NULL;
    if (!kf_path_join(c->path, sizeof c->path, dir, "config.json"))
        return kf_error_set(err, KF_ERR_ARG, "%s: path too long", dir);
    if (!kf_file_exists(c->path)) return kf_error_set(err, KF_ERR_IO, "%s: missing (not a Hugging Face model folder?)", c->path);
    char *text;
    size_t len;
    kf_status st = kf_file_read_all(c->path, &text, &len, err);
    if (st != KF_OK) return st;
    const char *end = NULL;
    c->root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (c->root) // only whitespace may follow the value
        while (end < text + len && (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r')) end++;
    if (!c->root || end != text + len) {
        size_t at = end && end >= text ? (size_t)(end - text) : 0;
        free(text);
        kf_hf_config_free(c);
        return kf_error_set(err, KF_ERR_FORMAT, "%s: not valid JSON (near byte %zu)", c->path, at);
    }
    free(text);
    if (!cJSON_IsObject(c->root)) {
        kf_hf_config_free(c);
        return kf_error_set(err, KF_ERR_FORMAT, "%s: not a JSON object", c->path);
    }
    return KF_OK;
}

void kf_hf_config_free(kf_hf_config *c) {
    cJSON_Delete(c->root);
    c->root = NULL;
}

static const cJSON *get(const kf_hf_config *c, const char *key) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(c->root, key);
    return cJSON_IsNull(j) ? NULL : j;
}

bool kf_hf_config_has(const kf_hf_config *c, const char *key) { return get(c, key) != NULL; }

static bool as_int(const cJSON *j, int lo, int hi, int *out) {
    if (!cJSON_IsNumber(j)) return false;
    double v = j->valuedouble;
    if (!(v >= lo && v <= hi) || v != floor(v)) return false;
    *out = (int)v;
    return true;
}

kf_status kf_hf_config_int(const kf_hf_config *c, const char *key, int def, int lo, int hi, int *out, kf_error *err) {
    const cJSON *j = get(c, key);
    if (!j) {
        if (def < lo) return kf_error_set(err, KF_ERR_FORMAT, "%s: missing \"%s\"", c->path, key);
        *out = def;
        return KF_OK;
    }
    if (!as_int(j, lo, hi, out))
        return kf_error_set(err, KF_ERR_FORMAT, "%s: \"%s\" must be an integer in [%d, %d]", c->path, key, lo, hi);
    return KF_OK;
}

kf_status kf_hf_config_float(const kf_hf_config *c, const char *key, float def, float *out, kf_error *err) {
    const cJSON *j = get(c, key);
    if (!j) {
        *out = def;
        return KF_OK;
    }
    if (!cJSON_IsNumber(j) || !isfinite((float)j->valuedouble))
        return kf_error_set(err, KF_ERR_FORMAT, "%s: \"%s\" must be a finite number", c->path, key);
    *out = (float)j->valuedouble;
    return KF_OK;
}

kf_status kf_hf_config_bool(const kf_hf_config *c, const char *key, bool def, bool *out, kf_error *err) {
    const cJSON *j = get(c, key);
    if (!j) {
        *out = def;
        return KF_OK;
    }
    if (!cJSON_IsBool(j)) return kf_error_set(err, KF_ERR_FORMAT, "%s: \"%s\" must be true or false", c->path, key);
    *out = cJSON_IsTrue(j);
    return KF_OK;
}

kf_status kf_hf_config_str(const kf_hf_config *c, const char *key, const char *def, const char **out,
                           kf_error *err) {
    const cJSON *j = get(c, key);
    if (!j) {
        *out = def;
        return KF_OK;
    }
    if (!cJSON_IsString(j)) return kf_error_set(err, KF_ERR_FORMAT, "%s: \"%s\" must be a string", c->path, key);
    *out = j->valuestring;
    return KF_OK;
}

kf_status kf_hf_config_token(const kf_hf_config *c, const char *key, int *out, kf_error *err) {
    const cJSON *j = get(c, key);
    *out = -1;
    if (cJSON_IsArray(j)) j = j->child;
    if (!j) return KF_OK;
    if (!as_int(j, 0, 1 << 30, out))
        return kf_error_set(err, KF_ERR_FORMAT, "%s: \"%s\" must be a token id", c->path, key);
    return KF_OK;
}

kf_status kf_hf_config_int_per_layer(const kf_hf_config *c, const char *key, int def, int n, int hi, int *out,
                                     kf_error *err) {
    const cJSON *j = get(c, key);
    if (!cJSON_IsArray(j)) {
        int v;
        kf_status st = kf_hf_config_int(c, key, def, 1, hi, &v, err);
        for (int i = 0; i < n && st == KF_OK; i++) out[i] = v;
        return st;
    }
    if (cJSON_GetArraySize(j) != n)
        return kf_error_set(err, KF_ERR_FORMAT, "%s: \"%s\" lists %d values for %d layers", c->path, key,
                            cJSON_GetArraySize(j), n);
    int i = 0;
    for (const cJSON *e = j->child; e; e = e->next, i++)
        if (!as_int(e, 1, hi, &out[i]))
            return kf_error_set(err, KF_ERR_FORMAT, "%s: \"%s\"[%d] must be an integer in [1, %d]", c->path, key, i,
                                hi);
    return KF_OK;
}
