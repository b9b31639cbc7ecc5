// Test helper: real llama.cpp (libllama from the npm package that
// scripts/fetch-llama-cpp.sh caches) as the external reader of kfuse's GGUF
// files. Built by tests/test_llama_cpp.sh with cc against the cached
// llama.h and .so files, never by CMake, never vendored.
//
//   llamacpp_ppl MODEL.gguf -f TEXT --ctx N [--ids OUT]
//       perplexity with kfuse perplexity's protocol (src/eval/perplexity.c,
//       llama-perplexity's): the whole text tokenized once with BOS in
//       front, windows of N tokens, the first of each set to BOS, the second
//       half of each window scored. Prints one JSON object; --ids writes the
//       token ids, one per line.
//   llamacpp_ppl MODEL.gguf --tokenize STRING
//       prints the ids of STRING (no BOS), space-separated.
//
// The ABI check: llama_version() of the library must equal the version of
// the header it is compiled against (KF_LLAMA_VERSION, from the bundle's
// CMakeLists.txt); a mismatch exits 3 before any struct crosses the boundary.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ggml-backend.h"
#include "llama.h"

#if !defined(KF_LLAMA_VERSION) || !defined(KF_LLAMA_LIB_DIR)
#error "build with -DKF_LLAMA_VERSION=\"x.y.z\" (the header's version) -DKF_LLAMA_LIB_DIR=\"DIR\" (the .so files)"
#endif

static void quiet(enum ggml_log_level level, const char *text, void *user) {
    (void)user;
    if (level == GGML_LOG_LEVEL_ERROR) fputs(text, stderr);
}

static void die(const char *msg) {
    fprintf(stderr, "llamacpp_ppl: %s\n", msg);
    exit(1);
}

static char *read_file(const char *path, long *len) {
    FILE *f = fopen(path, "rb");
    if (!f) die("cannot open the text file");
    fseek(f, 0, SEEK_END);
    *len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)*len + 1);
    if (!buf || fread(buf, 1, (size_t)*len, f) != (size_t)*len) die("cannot read the text file");
    buf[*len] = 0;
    fclose(f);
    return buf;
}

// ids of text (no BOS, no special-token parsing: text is text, as in kfuse).
static llama_token *tokenize(const struct llama_vocab *vocab, const char *text, int len, int *n) {
    int cap = len + 8;
    llama_token *ids = malloc(sizeof *ids * (size_t)cap);
    if (!ids) die("out of memory");
    *n = llama_tokenize(vocab, text, len, ids, cap, false, false);
    if (*n < 0) die("llama_tokenize failed");
    return ids;
}

int main(int argc, char **argv) {
    const char *model_path = NULL, *text_path = NULL, *ids_path = NULL, *tok_text = NULL;
    int ctx = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-f") && i + 1 < argc) text_path = argv[++i];
        else if (!strcmp(argv[i], "--ctx") && i + 1 < argc) ctx = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--ids") && i + 1 < argc) ids_path = argv[++i];
        else if (!strcmp(argv[i], "--tokenize") && i + 1 < argc) tok_text = argv[++i];
        else if (!model_path) model_path = argv[i];
        else die("usage: llamacpp_ppl MODEL.gguf (-f TEXT --ctx N [--ids OUT] | --tokenize STRING)");
    }
    if (!model_path || (!tok_text && (!text_path || ctx < 4))) die("usage: llamacpp_ppl MODEL.gguf -f TEXT --ctx N");
    if (strcmp(llama_version(), KF_LLAMA_VERSION) != 0 &&
        strncmp(llama_version(), KF_LLAMA_VERSION "-", strlen(KF_LLAMA_VERSION) + 1) != 0) {
        fprintf(stderr, "llamacpp_ppl: libllama is version %s, the header %s: ABI mismatch\n", llama_version(),
                KF_LLAMA_VERSION);
        return 3;
    }
    llama_log_set(quiet, NULL);
    ggml_backend_load_all_from_path(KF_LLAMA_LIB_DIR); // the CPU backends beside libggml
    llama_backend_init();

    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    struct llama_model *model = llama_model_load_from_file(model_path, mp);
    if (!model) die("llama.cpp could not load the model");
    const struct llama_vocab *vocab = llama_model_get_vocab(model);

    if (tok_text) {
        int n;
        llama_token *ids = tokenize(vocab, tok_text, (int)strlen(tok_text), &n);
        for (int i = 0; i < n; i++) printf("%s%d", i ? " " : "", ids[i]);
        printf("\n");
        free(ids);
        llama_model_free(model);
        llama_backend_free();
        return 0;
    }

    long len;
    char *text = read_file(text_path, &len);
    int n_body;
    llama_token *body = tokenize(vocab, text, (int)len, &n_body);
    const llama_token bos = llama_vocab_bos(vocab);
    const int has_bos = bos != LLAMA_TOKEN_NULL;
    int n_tok = n_body + has_bos;
    llama_token *toks = malloc(sizeof *toks * (size_t)(n_tok > 0 ? n_tok : 1));
    if (!toks) die("out of memory");
    if (has_bos) toks[0] = bos;
    memcpy(toks + has_bos, body, sizeof *body * (size_t)n_body);
    if (ids_path) {
        FILE *f = fopen(ids_path, "w");
        if (!f) die("cannot write the ids file");
        for (int i = 0; i < n_tok; i++) fprintf(f, "%d\n", toks[i]);
        fclose(f);
    }

    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t)ctx;
    cp.n_batch = cp.n_ubatch = (uint32_t)ctx;
    cp.n_seq_max = 1;
    cp.n_threads = cp.n_threads_batch = 2;
    cp.type_k = cp.type_v = GGML_TYPE_F32; // no F16 rounding of the cache: kfuse keeps it in fp32
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    struct llama_context *lctx = llama_init_from_model(model, cp);
    if (!lctx) die("llama.cpp could not create a context");
    const int V = llama_vocab_n_tokens(vocab);
    struct llama_batch batch = llama_batch_init(ctx, 0, 1);
    const int n_chunks = n_tok / ctx;
    double nll = 0, nll2 = 0;
    long n_scored = 0;
    for (int c = 0; c < n_chunks; c++) {
        const llama_token *w = toks + (size_t)c * ctx;
        llama_memory_clear(llama_get_memory(lctx), true);
        batch.n_tokens = ctx;
        for (int j = 0; j < ctx; j++) {
            batch.token[j] = j == 0 && has_bos ? bos : w[j];
            batch.pos[j] = j;
            batch.n_seq_id[j] = 1;
            batch.seq_id[j][0] = 0;
            batch.logits[j] = j >= ctx / 2 && j < ctx - 1;
        }
        if (llama_decode(lctx, batch) != 0) die("llama_decode failed");
        for (int j = ctx / 2; j < ctx - 1; j++) {
            const float *lg = llama_get_logits_ith(lctx, j);
            float mx = lg[0];
            for (int v = 1; v < V; v++) mx = lg[v] > mx ? lg[v] : mx;
            double sum = 0;
            for (int v = 0; v < V; v++) sum += exp((double)(lg[v] - mx));
            double x = -((double)(lg[w[j + 1]] - mx) - log(sum));
            nll += x;
            nll2 += x * x;
            n_scored++;
        }
    }
    if (n_scored == 0) die("the text is shorter than one window");
    printf("{\"ppl\": %.9g, \"nll_mean\": %.12g, \"n_scored\": %ld, \"n_tokens\": %d, \"n_chunks\": %d}\n",
           exp(nll / (double)n_scored), nll / (double)n_scored, n_scored, n_tok, n_chunks);
    llama_batch_free(batch);
    llama_free(lctx);
    llama_model_free(model);
    llama_backend_free();
    free(toks);
    free(body);
    free(text);
    return 0;
}
