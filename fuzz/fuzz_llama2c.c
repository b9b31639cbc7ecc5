// llama2.c: the input is a checkpoint and a tokenizer.bin (separated by
// KF_FUZZ_SEP), loaded as kfuse does (the tokenizer for the model's
// vocabulary size, or the whole file without a model); what parses is
// written back.
#include <string.h>

#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    kf_fuzz_parts p;
    kf_fuzz_split(data, size, 2, &p);
    const char *mpath = kf_fuzz_write("model.bin", p.p[0], p.n[0]);
    const char *tpath = kf_fuzz_write("tokenizer.bin", p.p[1], p.n[1]);
    kf_model *m = NULL;
    kf_tokenizer *tok = NULL;
    kf_error err = {0};
    if (kf_model_load(&m, mpath, &err) != KF_OK) m = NULL, kf_fuzz_refused(&err);
    if (kf_tokenizer_load_llama2c(&tok, tpath, m ? m->n_vocab : 0, &err) != KF_OK) tok = NULL, kf_fuzz_refused(&err);
    if (tok) {
        static const char text[] = "Once upon a time, a  cat\n\xE2\x96\x81sat. \xC3\xA9";
        kf_fuzz_encode_decode(tok, (const uint8_t *)text, strlen(text));
        kf_fuzz_tokenizer_roundtrip(tok);
    }
    if (m) kf_fuzz_roundtrip(m, tok && kf_tokenizer_n_vocab(tok) <= m->n_vocab ? tok : NULL);
    kf_tokenizer_free(tok);
    kf_model_free(m);
    kf_fuzz_clean();
    return 0;
}
