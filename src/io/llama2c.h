// llama2.c checkpoints as Llama-architecture models (the file layout is
// formats/llama2c.h): the loader permutes wq/wk rows from the interleaved
// RoPE layout to rotate-half (model.h) and the writer back.
#ifndef KF_IO_LLAMA2C_H
#define KF_IO_LLAMA2C_H

#include "core/status.h"
#include "model/model.h"

// kf_model_load_llama2c is declared in io/load.h.

// Writes a Llama-architecture model with one FFN width for all layers, no
// biases and head_dim * n_head == n_embd (through path.tmp and a rename);
// called by kf_model_save.
kf_status kf_llama2c_write(const kf_model *m, const char *path, kf_error *err);

#endif
