// The GGUF branch of kf_tokenizer_load_for_model. GGUF keeps the vocabulary
// in its metadata (tokenizer.ggml.*); the GGUF reader (src/io/gguf.c) owns
// that parsing and is to build a kf_tokenizer_spec for kf_tokenizer_init here.
#include "tokenizer/tokenizer.h"

kf_status kf_tokenizer_load_gguf(kf_tokenizer **out, const char *path, kf_error *err) {
    *out = NULL;
    return kf_error_set(err, KF_ERR_UNSUPPORTED, "%s: reading the tokenizer from GGUF metadata is not implemented yet",
                        path);
}
