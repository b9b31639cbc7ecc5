// kf_model_load: picks the loader from what the path is.
#include <string.h>

#include "io/load.h"
#include "io/moe_fields.h"

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

// Mixture-of-experts fields (kfuse moefy) are read after the dense model.
static kf_status with_experts(kf_status s, kf_model **out, const char *path, kf_error *err) {
    if (s == KF_OK && (s = kf_moe_load(*out, path, err)) != KF_OK) {
        kf_model_free(*out);
        *out = NULL;
    }
    return s;
}

kf_status kf_model_load(kf_model **out, const char *path, kf_error *err) {
    *out = NULL;
    if (kf_dir_exists(path)) return with_experts(kf_model_load_hf(out, path, err), out, path, err);
    if (!kf_file_exists(path)) return kf_error_set(err, KF_ERR_IO, "%s: no such file or folder", path);
    if (ends_with(path, ".gguf")) return with_experts(kf_model_load_gguf(out, path, err), out, path, err);
    if (ends_with(path, ".bin")) return kf_model_load_llama2c(out, path, err);
    return kf_error_set(err, KF_ERR_UNSUPPORTED,
                        "%s: unknown model format (expected a Hugging Face folder, a .gguf or a llama2.c .bin)", path);
}
