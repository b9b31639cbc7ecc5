// Typed, validated reads of a Hugging Face config.json. Every getter fails
// with one line naming the file and the key when the value has the wrong type
// or range; `def` is used when the key is absent or null.
#ifndef KF_IO_HF_CONFIG_H
#define KF_IO_HF_CONFIG_H

#include <stdbool.h>

#include "core/status.h"

typedef struct cJSON cJSON;

typedef struct {
    char path[1024]; // <dir>/config.json
    cJSON *root;
} kf_hf_config;

kf_status kf_hf_config_open(kf_hf_config *c, const char *dir, kf_error *err);
void kf_hf_config_free(kf_hf_config *c);

bool kf_hf_config_has(const kf_hf_config *c, const char *key); // present and not null
// An integer in [lo, hi]; def < lo makes the key required.
kf_status kf_hf_config_int(const kf_hf_config *c, const char *key, int def, int lo, int hi, int *out, kf_error *err);
kf_status kf_hf_config_float(const kf_hf_config *c, const char *key, float def, float *out, kf_error *err);
kf_status kf_hf_config_bool(const kf_hf_config *c, const char *key, bool def, bool *out, kf_error *err);
// A string (pointer into the config, valid until free); def may be NULL.
kf_status kf_hf_config_str(const kf_hf_config *c, const char *key, const char *def, const char **out,
                           kf_error *err);
// A token id: an integer, the first of a list of integers, or -1 when absent.
kf_status kf_hf_config_token(const kf_hf_config *c, const char *key, int *out, kf_error *err);
// Per-layer sizes: either one integer for all n layers or a list of n integers
// (kfuse's extension for models whose FFN width differs per layer). Each in [1, hi].
kf_status kf_hf_config_int_per_layer(const kf_hf_config *c, const char *key, int def, int n, int hi, int *out,
                                     kf_error *err);

#endif
