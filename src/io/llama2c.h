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
#ifndef KF_IO_LLAMA2C_H
#define KF_IO_LLAMA2C_H

#include "core/status.h"
#include "model/model.h"

// kf_model_load_llama2c is declared in model/model.h.

// Writes a Llama-architecture model with one FFN width for all layers, no
// biases and head_dim * n_head == n_embd (through path.tmp and a rename).
kf_status kf_llama2c_write(const kf_model *m, const char *path, kf_error *err);

#endif
