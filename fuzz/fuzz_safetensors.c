// safetensors: the input is model.safetensors, beside the config.json of the
// tiny Llama model (fuzz_common.h); loaded as a Hugging Face folder.
#include <stdlib.h>

#include "fuzz_common.h"

static kf_fuzz_files g_fixed;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    kf_fuzz_tiny_hf(KF_FUZZ_LLAMA, &g_fixed);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const void *files[3] = {g_fixed.data[0], data, NULL};
    size_t n[3] = {g_fixed.n[0], size, 0};
    const char *dir = kf_fuzz_write_hf("model", files, n);
    kf_model *m;
    kf_error err = {0};
    if (kf_model_load(&m, dir, &err) == KF_OK) {
        kf_fuzz_roundtrip(m, NULL);
        kf_model_free(m);
    } else {
        kf_fuzz_refused(&err);
    }
    kf_fuzz_clean();
    return 0;
}
