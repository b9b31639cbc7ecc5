// Mixture-of-experts fields. An input that starts with "GGUF" is a MoE model
// in GGUF (kfuse.moe.* keys, blk.<l>.ffn_router* tensors); any other is the
// "kfuse_moe" value of config.json and moe_router.safetensors (separated by
// KF_FUZZ_SEP) beside the tiny MoE Llama model's config and weights.
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "fuzz_common.h"

static kf_fuzz_files g_fixed;
static char *g_cfg_head; // config.json without "kfuse_moe" and its closing brace
static size_t g_cfg_head_n;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    kf_fuzz_tiny_hf(KF_FUZZ_LLAMA_MOE, &g_fixed);
    cJSON *cfg = cJSON_ParseWithLength(g_fixed.data[0], g_fixed.n[0]);
    cJSON_DeleteItemFromObject(cfg, "kfuse_moe");
    g_cfg_head = cJSON_PrintUnformatted(cfg);
    cJSON_Delete(cfg);
    if (!g_cfg_head) kf_fuzz_fail("fixed config", "cannot print");
    g_cfg_head_n = strlen(g_cfg_head) - 1; // drop the final '}'
    return 0;
}

static kf_model *load_hf(const uint8_t *data, size_t size) {
    kf_fuzz_parts p;
    kf_fuzz_split(data, size, 2, &p);
    static const char key[] = ",\"kfuse_moe\":";
    size_t n = g_cfg_head_n + sizeof key - 1 + p.n[0] + 1;
    char *cfg = malloc(n);
    if (!cfg) kf_fuzz_fail("config", "out of memory");
    memcpy(cfg, g_cfg_head, g_cfg_head_n);
    memcpy(cfg + g_cfg_head_n, key, sizeof key - 1);
    memcpy(cfg + g_cfg_head_n + sizeof key - 1, p.p[0], p.n[0]);
    cfg[n - 1] = '}';
    const void *files[3] = {cfg, g_fixed.data[1], p.p[1]};
    size_t sizes[3] = {n, g_fixed.n[1], p.n[1]};
    const char *dir = kf_fuzz_write_hf("model", files, sizes);
    free(cfg);
    kf_model *m;
    kf_error err = {0};
    if (kf_model_load(&m, dir, &err) == KF_OK) return m;
    kf_fuzz_refused(&err);
    return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    kf_model *m = NULL;
    kf_error err = {0};
    if (size >= 4 && !memcmp(data, "GGUF", 4)) {
        if (kf_model_load(&m, kf_fuzz_write("model.gguf", data, size), &err) != KF_OK) m = NULL, kf_fuzz_refused(&err);
    } else {
        m = load_hf(data, size);
    }
    if (m) {
        kf_fuzz_roundtrip(m, NULL);
        kf_model_free(m);
    }
    kf_fuzz_clean();
    return 0;
}
