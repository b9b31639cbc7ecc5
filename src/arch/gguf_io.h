// The GGUF toolkit of the architecture files: reading a family's keys and
// tensors from an open GGUF container into a kf_model, and adding them to a
// GGUF writer. llama.cpp names block tensors the same way for every family
// (blk.N.attn_q.weight, ...), so the per-layer table lives here once; the
// generic file reader and writer are src/io/gguf_load.c and src/io/save.c.
#ifndef KF_ARCH_GGUF_IO_H
#define KF_ARCH_GGUF_IO_H

#include <stdbool.h>

#include "core/status.h"
#include "formats/gguf.h"
#include "model/model.h"

typedef struct {
    kf_gguf *g;
    kf_model *m;
    kf_error *err;
    const char *arch; // general.architecture of the file
    char key[128];    // scratch for kf_gguf_key
    bool keep_dtype;  // 2-D F16/BF16/Q8_0 weights stay as stored (kf_load_opts, io/load.h)
} kf_gguf_loader;

// "<arch>.<suffix>" in ld->key (valid until the next call).
const char *kf_gguf_key(kf_gguf_loader *ld, const char *suffix);
// An integer hyper-parameter in [lo, hi] (left unchanged when absent and optional).
kf_status kf_gguf_load_hparam(kf_gguf_loader *ld, const char *key, bool required, int64_t lo, int64_t hi, int *out);
// As kf_gguf_load_hparam, but the key may also be an array of one value per
// layer (llama.cpp's per-layer form, e.g. deci's head counts) whose entries
// must all be equal: kfuse models have one value for every layer.
kf_status kf_gguf_load_hparam_layers(kf_gguf_loader *ld, const char *key, bool required, int64_t lo, int64_t hi,
                                     int *out);
// <arch>.feed_forward_length: one width for all layers or one per layer.
kf_status kf_gguf_load_ffn_widths(kf_gguf_loader *ld);
// Loads tensor `name` into dst (left absent when missing and optional).
// rope_heads > 0 permutes its rows back from the interleaved RoPE layout.
// F32 data that needs no permutation stays in the map. With ld->keep_dtype a
// 2-D F16/BF16/Q8_0 tensor keeps its dtype: in the map, or (permuted rows)
// an owned copy of its bytes.
kf_status kf_gguf_load_tensor(kf_gguf_loader *ld, const char *name, kf_tensor *dst, bool required, int rope_heads);
// Every blk.<l>.* tensor of the shared table into layer l. interleaved:
// wq/wk (and biases) are stored in llama.cpp's interleaved RoPE layout.
kf_status kf_gguf_load_layer(kf_gguf_loader *ld, int l, bool interleaved);

// Writing: a writer plus the weight dtype and the scratch that must live
// until the writer saves. The first failure is kept in err.
typedef struct {
    kf_gguf_writer *w;
    kf_dtype wtype;   // 2-D weights; norms and biases stay F32
    void **scratch;   // owned buffers (row orders, hyper-parameter arrays)
    int n_scratch, cap_scratch;
    kf_error err;
} kf_gguf_out;

// Zeroed scratch of n bytes freed with kf_gguf_out_free (NULL, with err set, when out of memory).
void *kf_gguf_out_alloc(kf_gguf_out *o, size_t n);
void kf_gguf_out_free(kf_gguf_out *o);
// Adds a model tensor (absent ones are skipped) under its GGUF dtype;
// rope_heads > 0 stores its rows in the interleaved RoPE layout.
void kf_gguf_out_tensor(kf_gguf_out *o, const char *name, const kf_tensor *t, int rope_heads);
// A view of m whose every FFN is zero-padded to the widest layer's width
// (rows of w_gate/w_up/b_up, columns of w_down), for readers with one FFN
// width (arch.h gguf_pad_ffn); the padded neurons output nothing, so the
// view computes m's function. Buffers live in o's scratch; m itself when
// the widths are already equal; NULL (o->err set) when out of memory.
const kf_model *kf_gguf_out_pad_ffn(kf_gguf_out *o, const kf_model *m);
// Adds the keys every family shares: general.*, context/embedding/block
// counts, FFN widths (one or per layer), head counts.
void kf_gguf_out_hparams(kf_gguf_out *o, const kf_model *m, const char *arch);
// Adds layer l's tensors from the shared table; interleaved as for
// kf_gguf_layer. fused_qkv: Q, K, V (and their biases) as one attn_qkv.
void kf_gguf_out_layer(kf_gguf_out *o, const kf_model *m, int l, bool interleaved, bool fused_qkv);

#endif
