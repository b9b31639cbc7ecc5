// kf_model_load: picks the loader from what the path is.
#include <string.h>

#include "io/load.h"
#include "io/moe_fields.h"

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

// The FFN of a mixture-of-experts layer is read as floats (runtime/moe.c).
static kf_status experts_to_f32(kf_model *m, kf_error *err) {
    kf_status s = KF_OK;
    for (int l = 0; l < m->n_layer && s == KF_OK; l++) {
        kf_layer *L = &m->layers[l];
        if (L->n_expert == 0) continue;
        if ((s = kf_model_tensor_to_f32(m, &L->w_gate, err)) == KF_OK &&
            (s = kf_model_tensor_to_f32(m, &L->w_up, err)) == KF_OK)
            s = kf_model_tensor_to_f32(m, &L->w_down, err);
    }
    return s;
}

// Mixture-of-experts fields (kfuse moefy) are read after the dense model.
static kf_status with_experts(kf_status s, kf_model **out, const char *path, kf_error *err) {
    if (s == KF_OK && ((s = kf_moe_load(*out, path, err)) != KF_OK || (s = experts_to_f32(*out, err)) != KF_OK)) {
        kf_model_free(*out);
        *out = NULL;
    }
    return s;
}

kf_status kf_model_load(kf_model **out, const char *path, kf_error *err) {
    return kf_model_load_opts(out, path, NULL, err);
}

kf_status kf_model_load_opts(kf_model **out, const char *path, const kf_load_opts *o, kf_error *err) {
    *out = NULL;
    if (kf_dir_exists(path)) return with_experts(kf_model_load_hf_opts(out, path, o, err), out, path, err);
    if (!kf_file_exists(path)) return kf_error_set(err, KF_ERR_IO, "%s: no such file or folder", path);
    if (ends_with(path, ".gguf")) return with_experts(kf_model_load_gguf_opts(out, path, o, err), out, path, err);
    if (ends_with(path, ".bin")) return kf_model_load_llama2c(out, path, err);
    return kf_error_set(err, KF_ERR_UNSUPPORTED,
                        "%s: unknown model format (expected a Hugging Face folder, a .gguf or a llama2.c .bin)", path);
}
