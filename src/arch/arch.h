// One descriptor per architecture: what the family computes (its traits)
// and how each file format names and lays out its hyper-parameters and
// tensors. src/arch/llama.c and src/arch/gpt2.c each define one; the generic
// loaders and writers in src/io/ find them here and call their per-format
// functions, which use the per-format toolkits arch/hf_io.h and
// arch/gguf_io.h. Adding an architecture = one new file here plus a line in
// arch.c's table (docs/ARCHITECTURE.md).
#ifndef KF_ARCH_ARCH_H
#define KF_ARCH_ARCH_H

#include <stdbool.h>
#include <stddef.h>

#include "arch/gguf_io.h"
#include "arch/hf_io.h"
#include "core/status.h"
#include "model/model.h"

typedef struct {
    kf_arch id;
    const char *name;
    // traits: what every model of the family computes
    kf_norm_kind norm;
    kf_act_kind act;
    kf_pos_kind pos;
    bool gated_ffn;
    // Hugging Face: config.json "architectures" names this family loads
    const char *hf_classes[4];
    kf_status (*hf_load)(kf_hf_loader *ld, kf_error *err);
    // Fills config.json's architecture keys and lists the tensors under their
    // Hugging Face names (o->dir names the folder in errors).
    kf_status (*hf_export)(const kf_model *m, cJSON *cfg, kf_hf_outs *o, kf_error *err);
    // GGUF: general.architecture names this family loads
    const char *gguf_names[3];
    // The general.architecture to write for m (llama.cpp must know it and
    // its layer shapes): one of gguf_names.
    const char *(*gguf_export_name)(const kf_model *m);
    // The family's llama.cpp architecture has one FFN width for all layers:
    // per-layer widths are written zero-padded to the widest layer (padded
    // neurons have zero input and output weights, so the function is the same).
    bool gguf_pad_ffn;
    // Reads the family's keys and tensors (after the shared counts and
    // m->layers are set); ld->arch is the file's name for the family.
    kf_status (*gguf_load)(kf_gguf_loader *ld);
    // Adds the family's own keys (after the shared ones), then its tensors
    // (after the tokenizer's keys); failures go to o->err.
    void (*gguf_export_keys)(kf_gguf_out *o, const kf_model *m, const char *arch);
    void (*gguf_export_tensors)(kf_gguf_out *o, const kf_model *m);
} kf_arch_desc;

const kf_arch_desc *kf_arch_get(kf_arch id);
// NULL when no architecture loads that name.
const kf_arch_desc *kf_arch_find_hf(const char *hf_class);
const kf_arch_desc *kf_arch_find_gguf(const char *gguf_name);
// "LlamaForCausalLM, ..." (every Hugging Face class, or GGUF name), for error messages.
void kf_arch_list_hf(char *buf, size_t n);
void kf_arch_list_gguf(char *buf, size_t n);

// Sets m->arch and the family's traits.
void kf_arch_set_traits(kf_model *m, kf_arch id);
// True when m's traits are those of its architecture (writers need that:
// a format names the family, not the traits).
bool kf_arch_traits_match(const kf_model *m);

#endif
