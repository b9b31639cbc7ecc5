// Tokenizers: Hugging Face tokenizer.json BPE of two kinds
// (SentencePiece-style with byte fallback, as Llama/Mistral/TinyLlama; and
// GPT-2 byte-level), and llama2.c's tokenizer.bin.
#ifndef KF_TOKENIZER_TOKENIZER_H
#define KF_TOKENIZER_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

typedef enum {
    KF_TOK_SPM = 0,   // SentencePiece-style BPE: "▁" for spaces, <0xNN> byte fallback
    KF_TOK_BYTELEVEL, // GPT-2 byte-level BPE with GPT-2's pre-tokenizer split pattern
} kf_tok_kind;

typedef struct kf_tokenizer kf_tokenizer;

// Per-token type, numbered as in SentencePiece and GGUF.
typedef enum {
    KF_PIECE_NORMAL = 1,
    KF_PIECE_UNKNOWN = 2,
    KF_PIECE_CONTROL = 3, // special tokens (<s>, </s>, <|endoftext|>): never produced from text, skipped in decode
    KF_PIECE_USER = 4,    // added, non-special tokens: decode to their text as is
    KF_PIECE_UNUSED = 5,
    KF_PIECE_BYTE = 6,    // <0xNN> byte fallback
} kf_piece_type;

// Loads dir/tokenizer.json (+ tokenizer_config.json, generation_config.json
// for BOS/EOS and add_bos), or a tokenizer.json path directly.
kf_status kf_tokenizer_load_hf(kf_tokenizer **out, const char *path, kf_error *err);
// Loads a llama2.c tokenizer.bin for a model of vocab_size entries.
kf_status kf_tokenizer_load_llama2c(kf_tokenizer **out, const char *path, int vocab_size, kf_error *err);
// Finds the tokenizer that belongs to a model path: a folder's tokenizer.json
// (or, when it has none, a llama2.c tokenizer.bin in it), the tokenizer.bin
// beside a llama2.c .bin, or the vocabulary inside a GGUF.
kf_status kf_tokenizer_load_for_model(kf_tokenizer **out, const char *model_path, int vocab_size, kf_error *err);
// The GGUF branch of kf_tokenizer_load_for_model (src/tokenizer/vocab_gguf.c):
// reads the vocabulary from GGUF metadata and calls kf_tokenizer_init.
kf_status kf_tokenizer_load_gguf(kf_tokenizer **out, const char *path, kf_error *err);

// Whether a space is put before the text: SentencePiece's dummy "▁" prefix,
// byte-level BPE's add_prefix_space.
typedef enum {
    KF_TOK_PREFIX_DEFAULT = 0, // the kind's usual: SPM yes, byte-level no
    KF_TOK_PREFIX_ON,
    KF_TOK_PREFIX_OFF,
} kf_tok_prefix;

// Builds a tokenizer from a vocabulary held in memory (GGUF metadata).
// SPM: pieces + scores (merge priority = score, higher first).
// BYTELEVEL: pieces + merges ("a b" strings, rank = index).
typedef struct {
    kf_tok_kind kind;
    int n_vocab;
    const char *const *pieces;  // n_vocab UTF-8 strings
    const float *scores;        // SPM only (may be NULL for BYTELEVEL)
    const int32_t *types;       // optional per-token type (1 normal, 2 unknown, 3 control, 6 byte); NULL = infer
    int n_merges;
    const char *const *merges;  // BYTELEVEL only
    int bos_id, eos_id, unk_id; // -1 when absent
    bool add_bos;
    kf_tok_prefix prefix;
    bool split_words;           // SPM: Metaspace's split (no merge across a "▁")
} kf_tokenizer_spec;
kf_status kf_tokenizer_init(kf_tokenizer **out, const kf_tokenizer_spec *spec, kf_error *err);

void kf_tokenizer_free(kf_tokenizer *tok);

// Text is text: "<s>" or "<|endoftext|>" written in the input is encoded as
// ordinary characters (as SentencePiece and llama.cpp do by default), never as
// the special token; add_bos is the only way to get BOS.
// Encodes UTF-8 text (len bytes; need not be NUL-terminated). Invalid UTF-8
// is an error (KF_ERR_FORMAT naming the byte offset). *ids is malloc'd.
kf_status kf_tokenizer_encode(const kf_tokenizer *tok, const char *text, size_t len, bool add_bos, int32_t **ids,
                              size_t *n_ids, kf_error *err);
// Decodes ids to a malloc'd NUL-terminated string (special tokens skipped).
kf_status kf_tokenizer_decode(const kf_tokenizer *tok, const int32_t *ids, size_t n, char **text, kf_error *err);
// The bytes one token adds after token prev (for streaming generation);
// writes into buf (NUL-terminated), returns the length.
size_t kf_tokenizer_decode_piece(const kf_tokenizer *tok, int32_t prev, int32_t id, char *buf, size_t cap);

int kf_tokenizer_n_vocab(const kf_tokenizer *tok);
int kf_tokenizer_bos(const kf_tokenizer *tok); // -1 when none
int kf_tokenizer_eos(const kf_tokenizer *tok);
bool kf_tokenizer_add_bos(const kf_tokenizer *tok); // tokenizer's default
bool kf_tokenizer_prefix_space(const kf_tokenizer *tok); // a space (SPM "▁") is put before the text
kf_tok_kind kf_tokenizer_kind(const kf_tokenizer *tok);
// SPM with Metaspace's split: every "▁" starts a new word, no merge crosses it.
bool kf_tokenizer_split_words(const kf_tokenizer *tok);
// Whether the split changes ids at all: some piece holds a "▁" after its
// first character ("▁▁", "a▁b"), which an encoder without the split (such as
// llama.cpp's llama tokenizer) may produce.
bool kf_tokenizer_split_matters(const kf_tokenizer *tok);
// The vocabulary as stored (SPM spaces as "▁", byte-level pieces in GPT-2's
// byte-to-character form); NULL / 0 for an id out of range. The score is the
// SentencePiece score where the source had one (llama2.c, spec), else 0.
const char *kf_tokenizer_piece(const kf_tokenizer *tok, int32_t id);
kf_piece_type kf_tokenizer_piece_type(const kf_tokenizer *tok, int32_t id);
float kf_tokenizer_score(const kf_tokenizer *tok, int32_t id);
// Merges held by rank (tokenizer.json, byte-level spec): merge i joins piece
// ids *left and *right; false for i out of [0, kf_tokenizer_n_merges). SPM
// vocabularies merged by score (llama2.c, GGUF) have none.
int kf_tokenizer_n_merges(const kf_tokenizer *tok);
bool kf_tokenizer_merge(const kf_tokenizer *tok, int i, int32_t *left, int32_t *right);

#endif
