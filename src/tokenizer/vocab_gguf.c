// The vocabulary in GGUF metadata, both directions: the GGUF branch of
// kf_tokenizer_load_for_model, and kf_vocab_gguf_add for writers. GGUF keeps
// the vocabulary in its metadata, as llama.cpp writes it:
//   tokenizer.ggml.model       "llama" (SentencePiece-style) or "gpt2" (byte-level BPE)
//   tokenizer.ggml.tokens      string array, one piece per id
//   tokenizer.ggml.scores      float array (SPM merge priorities)
//   tokenizer.ggml.token_type  int array (1 normal, 2 unknown, 3 control, 6 byte, ...)
//   tokenizer.ggml.merges      string array "a b", rank = index (byte-level)
//   tokenizer.ggml.{bos,eos,unknown}_token_id, tokenizer.ggml.add_bos_token
//   tokenizer.ggml.add_space_prefix  bool: a space before the text (SPM's
//                              dummy "▁"; default true for llama, false for
//                              gpt2, as in llama.cpp, whose gpt2 tokenizer
//                              never adds one)
//   kfuse.tokenizer.split_words  bool, kfuse's own: Metaspace's split (SPM;
//                              written only when true; llama.cpp has no such
//                              flag and ignores the key)
// The file is parsed and bounds-checked by the GGUF reader (src/formats/gguf.c).
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/gguf.h"
#include "tokenizer/vocab_gguf.h"

// An optional token id: -1 when absent; present ids must lie in [0, n).
static kf_status get_id(const kf_gguf *g, const char *key, int64_t n, int *out, kf_error *err) {
    int64_t v = -1;
    kf_status st = kf_gguf_get_int(g, key, false, &v, err);
    if (st != KF_OK) return st;
    if (v < -1 || v >= n)
        return kf_error_set(err, KF_ERR_FORMAT, "%s: %s = %lld is outside the vocabulary of %lld", g->path, key,
                            (long long)v, (long long)n);
    *out = (int)v;
    return KF_OK;
}

// Checks that an optional per-token array has one entry per token.
static kf_status check_count(const kf_gguf *g, const char *key, int64_t got, int64_t n, kf_error *err) {
    if (got == n) return KF_OK;
    return kf_error_set(err, KF_ERR_FORMAT, "%s: %s has %lld entries for %lld tokens", g->path, key, (long long)got,
                        (long long)n);
}

static kf_status build(kf_tokenizer **out, const kf_gguf *g, kf_error *err) {
    char *model = NULL, *pre = NULL, **tokens = NULL, **merges = NULL;
    float *scores = NULL;
    int64_t *types64 = NULL, n = 0, n_scores = 0, n_types = 0, n_merges = 0;
    int32_t *types = NULL;
    kf_tokenizer_spec spec = {.bos_id = -1, .eos_id = -1, .unk_id = -1};
    char esc[KF_ESC_NAME];
    kf_status st = kf_gguf_get_str(g, "tokenizer.ggml.model", true, &model, err);
    if (st != KF_OK) return st;
    if (strcmp(model, "llama") == 0) {
        spec.kind = KF_TOK_SPM;
    } else if (strcmp(model, "gpt2") == 0) {
        spec.kind = KF_TOK_BYTELEVEL;
    } else {
        st = kf_error_set(err, KF_ERR_UNSUPPORTED, "%s: tokenizer model '%s' is not supported (llama and gpt2 are)",
                          g->path, kf_str_escape(esc, sizeof esc, model, KF_STR_NUL));
        goto done;
    }
    // Byte-level tokenizers differ by their pre-tokenizer split; kfuse has GPT-2's.
    if ((st = kf_gguf_get_str(g, "tokenizer.ggml.pre", false, &pre, err)) != KF_OK) goto done;
    if (spec.kind == KF_TOK_BYTELEVEL && pre && strcmp(pre, "gpt-2") != 0 && strcmp(pre, "default") != 0) {
        st = kf_error_set(err, KF_ERR_UNSUPPORTED, "%s: pre-tokenizer '%s' is not supported (gpt-2 is)", g->path,
                          kf_str_escape(esc, sizeof esc, pre, KF_STR_NUL));
        goto done;
    }
    if ((st = kf_gguf_get_str_array(g, "tokenizer.ggml.tokens", &tokens, &n, err)) != KF_OK) goto done;
    if (n < 1 || n > INT32_MAX) {
        st = kf_error_set(err, KF_ERR_FORMAT, "%s: tokenizer.ggml.tokens has %lld entries", g->path, (long long)n);
        goto done;
    }
    if (kf_gguf_find_kv(g, "tokenizer.ggml.scores")) {
        if ((st = kf_gguf_get_float_array(g, "tokenizer.ggml.scores", &scores, &n_scores, err)) != KF_OK ||
            (st = check_count(g, "tokenizer.ggml.scores", n_scores, n, err)) != KF_OK)
            goto done;
    }
    if (kf_gguf_find_kv(g, "tokenizer.ggml.token_type")) {
        if ((st = kf_gguf_get_int_array(g, "tokenizer.ggml.token_type", &types64, &n_types, err)) != KF_OK ||
            (st = check_count(g, "tokenizer.ggml.token_type", n_types, n, err)) != KF_OK)
            goto done;
        types = malloc(sizeof *types * (size_t)n);
        if (!types) {
            st = kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory", g->path);
            goto done;
        }
        for (int64_t i = 0; i < n; i++) types[i] = types64[i] >= 1 && types64[i] <= 6 ? (int32_t)types64[i] : 1;
    }
    if (spec.kind == KF_TOK_BYTELEVEL) {
        if ((st = kf_gguf_get_str_array(g, "tokenizer.ggml.merges", &merges, &n_merges, err)) != KF_OK) goto done;
        if (n_merges > INT32_MAX) {
            st = kf_error_set(err, KF_ERR_FORMAT, "%s: %lld merges", g->path, (long long)n_merges);
            goto done;
        }
    }
    if ((st = get_id(g, "tokenizer.ggml.bos_token_id", n, &spec.bos_id, err)) != KF_OK ||
        (st = get_id(g, "tokenizer.ggml.eos_token_id", n, &spec.eos_id, err)) != KF_OK ||
        (st = get_id(g, "tokenizer.ggml.unknown_token_id", n, &spec.unk_id, err)) != KF_OK)
        goto done;
    spec.add_bos = spec.kind == KF_TOK_SPM; // llama.cpp's default per tokenizer model
    if ((st = kf_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", false, &spec.add_bos, err)) != KF_OK) goto done;
    bool prefix = spec.kind == KF_TOK_SPM; // llama.cpp's default per tokenizer model
    if ((st = kf_gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", false, &prefix, err)) != KF_OK) goto done;
    spec.prefix = prefix ? KF_TOK_PREFIX_ON : KF_TOK_PREFIX_OFF;
    if ((st = kf_gguf_get_bool(g, "kfuse.tokenizer.split_words", false, &spec.split_words, err)) != KF_OK) goto done;
    spec.n_vocab = (int)n;
    spec.pieces = (const char *const *)tokens;
    spec.scores = scores;
    spec.types = types;
    spec.n_merges = (int)n_merges;
    spec.merges = (const char *const *)merges;
    if ((st = kf_tokenizer_init(out, &spec, err)) != KF_OK && err && !strstr(err->msg, g->path)) {
        char msg[sizeof err->msg];
        memcpy(msg, err->msg, sizeof msg);
        kf_error_set(err, st, "%s: %s", g->path, msg);
    }
done:
    free(model);
    free(pre);
    free(tokens);
    free(merges);
    free(scores);
    free(types64);
    free(types);
    return st;
}

kf_status kf_tokenizer_load_gguf(kf_tokenizer **out, const char *path, kf_error *err) {
    *out = NULL;
    kf_gguf *g;
    kf_status st = kf_gguf_open(&g, path, err);
    if (st != KF_OK) return st;
    st = build(out, g, err);
    kf_gguf_close(g);
    return st;
}

// Byte-level merges as llama.cpp stores them: "left right", rank = index.
static bool add_merges(kf_gguf_writer *w, const kf_tokenizer *tok) {
    int n = kf_tokenizer_n_merges(tok);
    char **merges = calloc((size_t)n + 1, sizeof *merges);
    bool ok = merges != NULL;
    for (int i = 0; ok && i < n; i++) {
        int32_t a, b;
        ok = kf_tokenizer_merge(tok, i, &a, &b);
        const char *l = ok ? kf_tokenizer_piece(tok, a) : NULL, *r = ok ? kf_tokenizer_piece(tok, b) : NULL;
        ok = l && r && (merges[i] = malloc(strlen(l) + strlen(r) + 2)) != NULL;
        if (ok) sprintf(merges[i], "%s %s", l, r);
    }
    if (ok) kf_gguf_writer_add_str_array(w, "tokenizer.ggml.merges", (const char *const *)merges, n);
    for (int i = 0; merges && i < n; i++) free(merges[i]);
    free(merges);
    return ok;
}

// Tokenizer metadata as llama.cpp reads it: `llama` (SentencePiece-style:
// pieces, scores, types) or `gpt2` (byte-level: pieces, types, merges, GPT-2
// pre-tokenizer). The vocabulary is padded to the model's embedding rows with
// unused "[PADn]" pieces, as llama.cpp's converter does. An SPM vocabulary
// without scores (from a tokenizer.json, whose merges follow SentencePiece's
// piece order) gets score -id for normal pieces: SentencePiece's priority.
kf_status kf_vocab_gguf_add(kf_gguf_writer *w, const kf_tokenizer *tok, int V, const char *path, kf_error *err) {
    bool spm = kf_tokenizer_kind(tok) == KF_TOK_SPM;
    int n_tok = kf_tokenizer_n_vocab(tok);
    if (n_tok > V)
        return kf_error_set(err, KF_ERR_ARG, "%s: tokenizer has %d pieces but the model only %d embedding rows", path,
                            n_tok, V);
    const char **pieces = calloc((size_t)V, sizeof *pieces);
    char *pads = malloc((size_t)(V - n_tok) * 24 + 1);
    float *scores = calloc((size_t)V, sizeof *scores);
    int32_t *types = calloc((size_t)V, sizeof *types);
    if (!pieces || !pads || !scores || !types) {
        free(pieces), free(pads), free(scores), free(types);
        return kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory", path);
    }
    int unk = -1;
    bool scored = false;
    for (int i = 0; i < n_tok; i++) scored = scored || kf_tokenizer_score(tok, i) != 0;
    for (int i = 0; i < V; i++) {
        if (i < n_tok) {
            pieces[i] = kf_tokenizer_piece(tok, i);
            types[i] = kf_tokenizer_piece_type(tok, i);
            scores[i] = scored ? kf_tokenizer_score(tok, i) : types[i] == KF_PIECE_NORMAL ? -(float)i : 0.0f;
            if (types[i] == KF_PIECE_UNKNOWN && unk < 0) unk = i;
        } else {
            char *p = pads + (size_t)(i - n_tok) * 24;
            snprintf(p, 24, "[PAD%d]", i);
            pieces[i] = p;
            types[i] = KF_PIECE_UNUSED;
        }
    }
    kf_gguf_writer_add_str(w, "tokenizer.ggml.model", spm ? "llama" : "gpt2");
    if (!spm) kf_gguf_writer_add_str(w, "tokenizer.ggml.pre", "gpt-2");
    kf_gguf_writer_add_str_array(w, "tokenizer.ggml.tokens", pieces, V);
    if (spm) kf_gguf_writer_add_f32_array(w, "tokenizer.ggml.scores", scores, V);
    kf_gguf_writer_add_i32_array(w, "tokenizer.ggml.token_type", types, V);
    bool ok = spm || add_merges(w, tok);
    free(pieces), free(pads), free(scores), free(types);
    if (!ok) return kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory writing the merges", path);
    if (kf_tokenizer_bos(tok) >= 0)
        kf_gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)kf_tokenizer_bos(tok));
    if (kf_tokenizer_eos(tok) >= 0)
        kf_gguf_writer_add_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)kf_tokenizer_eos(tok));
    if (unk >= 0) kf_gguf_writer_add_u32(w, "tokenizer.ggml.unknown_token_id", (uint32_t)unk);
    kf_gguf_writer_add_bool(w, "tokenizer.ggml.add_bos_token", kf_tokenizer_add_bos(tok));
    kf_gguf_writer_add_bool(w, "tokenizer.ggml.add_space_prefix", kf_tokenizer_prefix_space(tok));
    if (kf_tokenizer_split_words(tok)) kf_gguf_writer_add_bool(w, "kfuse.tokenizer.split_words", true);
    return KF_OK;
}
