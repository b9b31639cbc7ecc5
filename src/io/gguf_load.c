// kf_model_load_gguf: a GGUF file into a kf_model. The shared counts are
// read here; the architecture's descriptor (arch/) reads the rest.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arch/arch.h"
#include "formats/gguf.h"
#include "io/load.h"

static kf_status load_model(kf_gguf_loader *ld, const kf_arch_desc *d) {
    kf_model *m = ld->m;
    kf_gguf *g = ld->g;
    kf_status st;
    m->n_layer = m->n_embd = m->n_head = m->n_ctx_train = 0;
    // Every layer has tensors, so more layers than tensors is malformed.
    int64_t max_layers = g->n_tensors < KF_MAX_LAYERS ? g->n_tensors : KF_MAX_LAYERS;
    if ((st = kf_gguf_load_hparam(ld, kf_gguf_key(ld, "block_count"), true, 1, max_layers, &m->n_layer)) != KF_OK ||
        (st = kf_gguf_load_hparam(ld, kf_gguf_key(ld, "embedding_length"), true, 1, KF_MAX_EMBD, &m->n_embd)) != KF_OK ||
        (st = kf_gguf_load_hparam_layers(ld, kf_gguf_key(ld, "attention.head_count"), true, 1, m->n_embd < KF_MAX_HEADS ? m->n_embd : KF_MAX_HEADS, &m->n_head)) != KF_OK ||
        (st = kf_gguf_load_hparam(ld, kf_gguf_key(ld, "context_length"), true, 1, KF_MAX_CTX, &m->n_ctx_train)) != KF_OK)
        return st;
    m->n_head_kv = m->n_head;
    m->layers = calloc((size_t)m->n_layer, sizeof *m->layers);
    if (!m->layers) return kf_error_set(ld->err, KF_ERR_NOMEM, "%s: out of memory", g->path);
    kf_arch_set_traits(m, d->id);
    if ((st = d->gguf_load(ld)) != KF_OK) return st;
    m->n_vocab = (int)(m->tok_embd.ne[0] < INT32_MAX ? m->tok_embd.ne[0] : 0);
    int64_t bos = -1, eos = -1;
    if ((st = kf_gguf_get_int(g, "tokenizer.ggml.bos_token_id", false, &bos, ld->err)) != KF_OK ||
        (st = kf_gguf_get_int(g, "tokenizer.ggml.eos_token_id", false, &eos, ld->err)) != KF_OK)
        return st;
    m->bos_id = bos >= 0 && bos < m->n_vocab ? (int)bos : -1;
    m->eos_id = eos >= 0 && eos < m->n_vocab ? (int)eos : -1;
    return kf_model_validate(m, g->path, ld->err);
}

kf_status kf_model_load_gguf(kf_model **out, const char *path, kf_error *err) {
    return kf_model_load_gguf_opts(out, path, NULL, err);
}

kf_status kf_model_load_gguf_opts(kf_model **out, const char *path, const kf_load_opts *o, kf_error *err) {
    *out = NULL;
    kf_gguf *g;
    kf_status st = kf_gguf_open(&g, path, err);
    if (st != KF_OK) return st;
    char *arch = NULL;
    if ((st = kf_gguf_get_str(g, "general.architecture", true, &arch, err)) != KF_OK) {
        kf_gguf_close(g);
        return st;
    }
    const kf_arch_desc *d = kf_arch_find_gguf(arch);
    if (!d) {
        char names[256], esc[KF_ESC_NAME];
        kf_arch_list_gguf(names, sizeof names);
        st = kf_error_set(err, KF_ERR_UNSUPPORTED, "%s: architecture '%s' is not supported (supported: %s)", path,
                          kf_str_escape(esc, sizeof esc, arch, KF_STR_NUL), names);
        free(arch);
        kf_gguf_close(g);
        return st;
    }
    kf_model *m = kf_model_new();
    if (!m || (st = kf_model_add_map(m, kf_gguf_take_map(g), err)) != KF_OK) {
        if (!m) st = kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory", path);
        kf_model_free(m);
        free(arch);
        kf_gguf_close(g);
        return st;
    }
    kf_gguf_loader ld = {.g = g, .m = m, .err = err, .arch = arch, .keep_dtype = o && o->keep_dtype};
    st = load_model(&ld, d);
    free(arch);
    kf_gguf_close(g);
    if (st != KF_OK) {
        kf_model_free(m);
        return st;
    }
    snprintf(m->path, sizeof m->path, "%s", path);
    snprintf(m->format, sizeof m->format, "gguf");
    *out = m;
    return KF_OK;
}
