// The Hugging Face toolkit of the architecture files: a loader state that
// hands out tensors by name with their shape checked, and the list of named
// tensors a writer lays out. The generic folder reader and writer are
// src/io/hf_load.c and src/io/save.c.
#ifndef KF_ARCH_HF_IO_H
#define KF_ARCH_HF_IO_H

#include <stdbool.h>

#include <cjson/cJSON.h>

#include "formats/hf_config.h"
#include "formats/safetensors.h"
#include "model/model.h"

typedef struct {
    kf_model *m;
    const kf_hf_config *cfg;
    const kf_st_set *st;
    const char *arch;  // architectures[0] of config.json
    char where[1024];  // file named by "missing tensor" errors: model.safetensors or the index
    bool *used;        // per st tensor: taken by the architecture
    bool keep_dtype;   // 2-D F16/BF16 weights stay as stored (kf_load_opts, io/load.h)
} kf_hf_loader;

// Finds a tensor, marks it used, checks that its dtype converts to fp32 and
// that its shape is exactly ne[0..ndim) (the shape config.json implies), and
// points t at fp32 data: into the map for aligned F32, else an owned copy.
// With ld->keep_dtype, a 2-D F16/BF16 tensor keeps its dtype instead: in the
// map when 2-byte aligned, else an owned copy of its bytes.
// A missing tensor is an error when required, else leaves t absent.
kf_status kf_hf_get(kf_hf_loader *ld, const char *name, int ndim, const int64_t *ne, bool required, kf_tensor *t,
                    kf_error *err);
static inline kf_status kf_hf_get1(kf_hf_loader *ld, const char *name, int64_t d0, bool required, kf_tensor *t,
                                   kf_error *err) {
    return kf_hf_get(ld, name, 1, &d0, required, t, err);
}
static inline kf_status kf_hf_get2(kf_hf_loader *ld, const char *name, int64_t d0, int64_t d1, bool required,
                                   kf_tensor *t, kf_error *err) {
    int64_t ne[2] = {d0, d1};
    return kf_hf_get(ld, name, 2, ne, required, t, err);
}
// Reads a GPT-2 Conv1D weight stored (n_in, n_out), splits its outputs into
// n_parts equal blocks and stores each transposed, (n_out/n_parts, n_in), in
// an owned buffer.
kf_status kf_hf_get_conv1d(kf_hf_loader *ld, const char *name, int64_t n_in, int64_t n_out, int n_parts,
                           kf_tensor **parts, kf_error *err);
// Marks a tensor used if present (weights the model ignores, e.g. a tied head).
void kf_hf_skip(kf_hf_loader *ld, const char *name);
bool kf_hf_has(const kf_hf_loader *ld, const char *name);
// lm_head.weight (V, C) unless tie; an absent head means tied, whatever the
// config says (the head then aliases tok_embd, which must be loaded).
kf_status kf_hf_get_head(kf_hf_loader *ld, bool tie, kf_error *err);

// Writing: each architecture fills config.json and lists its tensors under
// their Hugging Face names; io/save.c lays them out in one file.
typedef struct {
    char name[160];
    kf_tensor t; // fp32 data, outer-first shape
} kf_hf_out;

typedef struct {
    kf_hf_out *t;
    int n, cap;
    void **owned; // scratch buffers (transposes, fused blocks), freed after writing
    int n_owned, cap_owned;
    const char *dir; // for error messages
} kf_hf_outs;

// Adds a tensor (name printf-style); the data must outlive the write.
kf_status kf_hf_outs_add(kf_hf_outs *o, const kf_tensor *t, kf_error *err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
// Zeroed scratch floats freed with the list (NULL when out of memory).
float *kf_hf_outs_alloc(kf_hf_outs *o, int64_t n);
// A JSON number that reads back as exactly x, printed with the fewest digits.
cJSON *kf_hf_json_f32(float x);

void kf_hf_outs_free(kf_hf_outs *o);

#endif
