// Test helper: kfuse's token ids of a text, to compare with another reader's
// (tests/test_llama_cpp.sh against real llama.cpp).
//   kf_tok_ids MODEL -f TEXT      ids as kfuse perplexity feeds them (BOS in
//                                 front when the tokenizer has one), one per line
//   kf_tok_ids MODEL --text STR   ids of STR without BOS, space-separated
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "io/load.h"
#include "tokenizer/tokenizer.h"

static int fail(const kf_error *err) {
    fprintf(stderr, "kf_tok_ids: %s\n", err->msg);
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 4 || (strcmp(argv[2], "-f") && strcmp(argv[2], "--text"))) {
        fprintf(stderr, "usage: kf_tok_ids MODEL (-f TEXT | --text STRING)\n");
        return 2;
    }
    kf_error err = {0};
    kf_model *m;
    kf_tokenizer *tok;
    if (kf_model_load(&m, argv[1], &err) != KF_OK) return fail(&err);
    if (kf_tokenizer_load_for_model(&tok, argv[1], m->n_vocab, &err) != KF_OK) return fail(&err);
    bool file = !strcmp(argv[2], "-f");
    char *text = argv[3];
    size_t len = strlen(text);
    if (file && kf_file_read_all(argv[3], &text, &len, &err) != KF_OK) return fail(&err);
    int32_t *ids;
    size_t n;
    if (kf_tokenizer_encode(tok, text, len, file, &ids, &n, &err) != KF_OK) return fail(&err);
    for (size_t i = 0; i < n; i++) printf(file ? "%d\n" : i ? " %d" : "%d", ids[i]);
    if (!file) printf("\n");
    free(ids);
    if (file) free(text);
    kf_tokenizer_free(tok);
    kf_model_free(m);
    return 0;
}
