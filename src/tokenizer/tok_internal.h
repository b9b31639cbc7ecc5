// Internal layout of kf_tokenizer, shared by the loaders (tokenizer.json,
// llama2.c tokenizer.bin, in-memory spec) and the encoder/decoder.
#ifndef KF_TOKENIZER_TOK_INTERNAL_H
#define KF_TOKENIZER_TOK_INTERNAL_H

#include "tokenizer/tokenizer.h"

// One merge: (left id, right id) packed in key -> rank and merged id
// (new_id -1: empty slot). One cache line holds four.
typedef struct {
    uint64_t key;
    int32_t rank, new_id;
} kf_tok_pair;

struct kf_tokenizer {
    kf_tok_kind kind;
    int n_vocab;
    char *arena;                  // every piece, NUL-terminated, back to back
    uint32_t *piece_off, *piece_len;
    char *dec_arena;              // what each piece decodes to (raw bytes)
    uint32_t *dec_off, *dec_len;
    uint8_t *types;               // kf_piece_type per id
    float *scores;                // 0 where the source had none

    int32_t *vocab_slots;         // open addressing: piece string -> id, -1 empty
    uint32_t vocab_mask;
    kf_tok_pair *pairs;           // open addressing: (left id, right id) -> merge
    uint32_t pair_mask;           // 0 when there are no merges
    int32_t *merges;              // rank merges: (left, right) ids of merge i at 2i, 2i+1
    int n_merges;

    int32_t byte_id[256];         // SPM: the <0xNN> piece; BYTELEVEL: the piece of byte b's character
    int32_t ascii_id[128];        // the piece of each ASCII character, -1 when none (SPM fast path)
    bool prefix_space;            // SPM: dummy "▁" prefix; BYTELEVEL: add_prefix_space
    bool split_words;             // SPM (Metaspace split): no merge across a "▁"
    bool spm_cut_at_space;        // SPM: no piece has "▁" after another character
    int32_t space_id;             // SPM: the "▁" piece, -1 when none
    bool use_regex;               // BYTELEVEL: GPT-2 split pattern
    int bos, eos, unk;
    bool add_bos;
};

// What a loader hands to kf_tok_build. Merges either by rank (merge_left/
// merge_right, rank = index; Hugging Face, GGUF byte-level) or, when
// n_merges == 0 for SPM, by score of the merged piece (SentencePiece).
typedef struct {
    kf_tok_kind kind;
    int n_vocab;
    const char *const *pieces;    // NUL-terminated UTF-8 (SPM spaces as "▁")
    const float *scores;          // optional
    const uint8_t *types;         // optional: NULL infers from the piece strings
    int n_merges;
    const char *const *merge_left, *const *merge_right;
    bool prefix_space, split_words, use_regex;
    int bos, eos, unk;            // -1 = look up "<s>", "</s>", "<unk>" (SPM) / "<|endoftext|>" (byte-level)
    bool add_bos;
} kf_tok_build_args;

// name is the file (or "spec") named in error messages.
kf_status kf_tok_build(kf_tokenizer **out, const kf_tok_build_args *a, const char *name, kf_error *err);
// Piece id of an exact byte string, or -1.
int32_t kf_tok_lookup(const kf_tokenizer *t, const char *s, size_t n);

#endif
