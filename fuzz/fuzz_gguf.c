// GGUF: the input is a .gguf file, loaded as a model (kf_model_load) and as a
// vocabulary (kf_tokenizer_load_gguf); what parses is written back.
#include <string.h>

#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = kf_fuzz_write("model.gguf", data, size);
    kf_model *m = NULL;
    kf_tokenizer *tok = NULL;
    kf_error err = {0};
    if (kf_model_load(&m, path, &err) != KF_OK) m = NULL, kf_fuzz_refused(&err);
    if (kf_tokenizer_load_gguf(&tok, path, &err) != KF_OK) tok = NULL, kf_fuzz_refused(&err);
    if (tok) {
        static const char text[] = "Hello, world: a ab abc \xE2\x96\x81 <s>\n\t12";
        kf_fuzz_encode_decode(tok, (const uint8_t *)text, strlen(text));
        kf_fuzz_tokenizer_roundtrip(tok);
    }
    if (m) kf_fuzz_roundtrip(m, tok && kf_tokenizer_n_vocab(tok) <= m->n_vocab ? tok : NULL);
    kf_tokenizer_free(tok);
    kf_model_free(m);
    kf_fuzz_clean();
    return 0;
}
