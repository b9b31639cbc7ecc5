// Hugging Face folder: the input is config.json, model.safetensors and
// optionally moe_router.safetensors (separated by KF_FUZZ_SEP), loaded with
// kf_model_load and written back in every format.
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    kf_fuzz_parts p;
    kf_fuzz_split(data, size, 3, &p);
    const void *files[3] = {p.p[0], p.p[1], p.n[2] ? p.p[2] : NULL};
    const char *dir = kf_fuzz_write_hf("model", files, p.n);
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
