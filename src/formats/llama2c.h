// llama2.c checkpoints (Karpathy's run.c, legacy version 0).
//
// Layout: seven int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads,
// vocab_size, seq_len; a negative vocab_size means the classifier is not
// shared with the embedding), then fp32 arrays, every matrix (out, in):
//   token_embedding (V, C), rms_att (L, C), wq (L, C, C), wk (L, KV, C),
//   wv (L, KV, C), wo (L, C, C), rms_ffn (L, C), w1 (L, F, C), w2 (L, C, F),
//   w3 (L, F, C), rms_final (C), freq_cis_real (T, Dh/2), freq_cis_imag
//   (T, Dh/2), then wcls (V, C) when unshared.
// w1 is the gate, w3 the up projection, w2 the down projection. wq/wk rows
// are in the interleaved RoPE layout; the loader permutes them to
// rotate-half (see model.h) and the writer back. RoPE theta is 10000 and the
// RMSNorm epsilon 1e-5; the file records neither.
#ifndef KF_FORMATS_LLAMA2C_H
#define KF_FORMATS_LLAMA2C_H

#include <stdbool.h>

#include "core/file.h"
#include "core/status.h"

#define KF_L2C_HEADER_BYTES 28

typedef struct {
    int dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len;
    bool shared; // the classifier is the embedding
} kf_l2c_header;

// Reads and checks the header: positive sizes that divide as the format
// needs, and a file size equal to what they imply.
kf_status kf_l2c_read_header(const kf_mmap *map, const char *path, kf_l2c_header *h, kf_error *err);

#endif
