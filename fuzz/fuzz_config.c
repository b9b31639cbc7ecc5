// config.json: the input is config.json, beside the model.safetensors and
// moe_router.safetensors of the tiny MoE Llama model (fuzz_common.h).
#include "fuzz_common.h"

static kf_fuzz_files g_fixed;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    kf_fuzz_tiny_hf(KF_FUZZ_LLAMA_MOE, &g_fixed);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const void *files[3] = {data, g_fixed.data[1], g_fixed.data[2]};
    size_t n[3] = {size, g_fixed.n[1], g_fixed.n[2]};
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
