// kf_tokenizer_load_for_model: the tokenizer that belongs to a model path.
#include <stdio.h>
#include <string.h>

#include "core/file.h"
#include "tokenizer/tokenizer.h"

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

kf_status kf_tokenizer_load_for_model(kf_tokenizer **out, const char *model_path, int vocab_size, kf_error *err) {
    *out = NULL;
    if (kf_dir_exists(model_path)) {
        // a folder's tokenizer.json; without one, a llama2.c tokenizer.bin there
        char json[4096], bin[4096];
        if (!kf_path_join(json, sizeof json, model_path, "tokenizer.json") ||
            !kf_path_join(bin, sizeof bin, model_path, "tokenizer.bin"))
            return kf_error_set(err, KF_ERR_ARG, "%s: path too long", model_path);
        if (!kf_file_exists(json) && kf_file_exists(bin)) return kf_tokenizer_load_llama2c(out, bin, vocab_size, err);
        return kf_tokenizer_load_hf(out, model_path, err);
    }
    if (!kf_file_exists(model_path)) return kf_error_set(err, KF_ERR_IO, "%s: no such file or folder", model_path);
    if (ends_with(model_path, ".gguf")) return kf_tokenizer_load_gguf(out, model_path, err);
    if (ends_with(model_path, ".bin")) {
        char path[4096];
        const char *slash = strrchr(model_path, '/');
        int dir_len = slash ? (int)(slash - model_path) : 1;
        const char *dir = slash ? model_path : ".";
        if ((size_t)snprintf(path, sizeof(path), "%.*s/tokenizer.bin", dir_len, dir) >= sizeof(path))
            return kf_error_set(err, KF_ERR_ARG, "%s: path too long", model_path);
        if (!kf_file_exists(path))
            return kf_error_set(err, KF_ERR_IO, "%s: no tokenizer.bin beside the llama2.c model (looked for %s)",
                                model_path, path);
        return kf_tokenizer_load_llama2c(out, path, vocab_size, err);
    }
    return kf_error_set(err, KF_ERR_UNSUPPORTED, "%s: no tokenizer known for this model format", model_path);
}
