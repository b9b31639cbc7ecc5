// Writing a vocabulary into GGUF metadata (reading: kf_tokenizer_load_gguf).
#ifndef KF_TOKENIZER_VOCAB_GGUF_H
#define KF_TOKENIZER_VOCAB_GGUF_H

#include "core/status.h"
#include "formats/gguf.h"
#include "tokenizer/tokenizer.h"

// Adds tok's tokenizer.ggml.* keys for a model of n_rows embedding rows
// (at least the tokenizer's pieces; the rest padded as unused "[PADn]");
// path names the file in errors.
kf_status kf_vocab_gguf_add(kf_gguf_writer *w, const kf_tokenizer *tok, int n_rows, const char *path, kf_error *err);

#endif
