// The table of architectures (arch.h).
#include "arch/arch.h"

#include <stdio.h>
#include <string.h>

extern const kf_arch_desc kf_arch_llama, kf_arch_gpt2;

static const kf_arch_desc *const ARCHS[] = {&kf_arch_llama, &kf_arch_gpt2};
#define N_ARCHS (int)(sizeof ARCHS / sizeof ARCHS[0])

const kf_arch_desc *kf_arch_get(kf_arch id) {
    for (int i = 0; i < N_ARCHS; i++)
        if (ARCHS[i]->id == id) return ARCHS[i];
    return NULL;
}

const kf_arch_desc *kf_arch_find_hf(const char *hf_class) {
    for (int i = 0; i < N_ARCHS; i++)
        for (int k = 0; k < 4 && ARCHS[i]->hf_classes[k]; k++)
            if (strcmp(ARCHS[i]->hf_classes[k], hf_class) == 0) return ARCHS[i];
    return NULL;
}

const kf_arch_desc *kf_arch_find_gguf(const char *gguf_name) {
    for (int i = 0; i < N_ARCHS; i++)
        for (int k = 0; k < 3 && ARCHS[i]->gguf_names[k]; k++)
            if (strcmp(ARCHS[i]->gguf_names[k], gguf_name) == 0) return ARCHS[i];
    return NULL;
}

static void list(char *buf, size_t n, bool hf) {
    size_t at = 0;
    buf[0] = '\0';
    for (int i = 0; i < N_ARCHS; i++) {
        const char *const *names = hf ? ARCHS[i]->hf_classes : ARCHS[i]->gguf_names;
        for (int k = 0; k < (hf ? 4 : 3) && names[k] && at < n; k++)
            at += (size_t)snprintf(buf + at, n - at, "%s%s", at ? ", " : "", names[k]);
    }
}

void kf_arch_list_hf(char *buf, size_t n) { list(buf, n, true); }
void kf_arch_list_gguf(char *buf, size_t n) { list(buf, n, false); }

void kf_arch_set_traits(kf_model *m, kf_arch id) {
    const kf_arch_desc *d = kf_arch_get(id);
    m->arch = id;
    m->norm = d->norm;
    m->act = d->act;
    m->pos = d->pos;
    m->gated_ffn = d->gated_ffn;
}

bool kf_arch_traits_match(const kf_model *m) {
    const kf_arch_desc *d = kf_arch_get(m->arch);
    return d && m->norm == d->norm && m->act == d->act && m->pos == d->pos && m->gated_ffn == d->gated_ffn;
}
