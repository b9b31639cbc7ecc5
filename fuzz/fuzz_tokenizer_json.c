// tokenizer.json: the input is tokenizer.json, a text and optionally
// tokenizer_config.json (separated by KF_FUZZ_SEP); the tokenizer is loaded
// from its folder, encodes and decodes the text, and is written back as a
// GGUF vocabulary.
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    kf_fuzz_parts p;
    kf_fuzz_split(data, size, 3, &p);
    kf_fuzz_write("tokenizer.json", p.p[0], p.n[0]);
    if (p.n[2]) kf_fuzz_write("tokenizer_config.json", p.p[2], p.n[2]);
    kf_tokenizer *tok;
    kf_error err = {0};
    if (kf_tokenizer_load_hf(&tok, kf_fuzz_dir(), &err) == KF_OK) {
        kf_fuzz_encode_decode(tok, p.p[1], p.n[1]);
        kf_fuzz_tokenizer_roundtrip(tok);
        kf_tokenizer_free(tok);
    } else {
        kf_fuzz_refused(&err);
    }
    kf_fuzz_clean();
    return 0;
}
