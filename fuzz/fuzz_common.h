// Shared pieces of the libFuzzer harnesses (docs/FUZZING.md): a per-process
// temporary folder in /dev/shm, inputs split into several files, the tiny
// models the seeds and the fixed files come from, and the round trip that
// checks that whatever kfuse writes from a parsed input loads back.
#ifndef KF_FUZZ_COMMON_H
#define KF_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>

#include "io/load.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

// Separates the files of a multi-file input (e.g. config.json, then
// model.safetensors): a line no seed file contains.
#define KF_FUZZ_SEP "\n#KF-NEXT-FILE#\n"
#define KF_FUZZ_MAX_PARTS 4

typedef struct {
    const uint8_t *p[KF_FUZZ_MAX_PARTS];
    size_t n[KF_FUZZ_MAX_PARTS]; // missing parts are empty
} kf_fuzz_parts;

// Splits data at KF_FUZZ_SEP into at most n_parts parts (the last takes the rest).
void kf_fuzz_split(const uint8_t *data, size_t size, int n_parts, kf_fuzz_parts *out);

// The process's temporary folder (created on first use, removed at exit).
const char *kf_fuzz_dir(void);
// dir/name into a static-lifetime buffer slot (up to 8 live paths).
const char *kf_fuzz_path(const char *name);
// Writes bytes to kf_fuzz_path(name) and returns that path (abort on failure).
const char *kf_fuzz_write(const char *name, const void *data, size_t n);
// Removes everything inside the folder (between inputs).
void kf_fuzz_clean(void);

// Prints why an input was refused when KF_FUZZ_VERBOSE is set (for
// checking that the seeds parse: KF_FUZZ_VERBOSE=1 fuzz_hf SEED...).
void kf_fuzz_refused(const kf_error *err);

// Prints the message and aborts: a finding.
void kf_fuzz_fail(const char *what, const char *detail) __attribute__((noreturn));

// Deterministic tiny models (V=16, C=8, 2 layers, 2 heads / 1 KV head, F=8,
// 16 positions): Llama or GPT-2, optionally MoEfied (2 experts, linear
// router, top-1). Abort on failure.
typedef enum { KF_FUZZ_LLAMA = 0, KF_FUZZ_GPT2, KF_FUZZ_LLAMA_MOE } kf_fuzz_tiny;
kf_model *kf_fuzz_tiny_model(kf_fuzz_tiny kind);
// An SPM tokenizer of 16 pieces for the tiny models.
kf_tokenizer *kf_fuzz_tiny_tokenizer(void);

// The files kf_model_save writes for a tiny model as an HF folder, in
// memory: [0] config.json, [1] model.safetensors, [2] moe_router.safetensors
// (empty for a dense model). Free with kf_fuzz_files_free.
typedef struct {
    char *data[3];
    size_t n[3];
} kf_fuzz_files;
void kf_fuzz_tiny_hf(kf_fuzz_tiny kind, kf_fuzz_files *out);
void kf_fuzz_files_free(kf_fuzz_files *f);
// Writes the files of an HF folder into folder `name` of the temporary
// folder (a part with data NULL is not written) and returns its path.
const char *kf_fuzz_write_hf(const char *name, const void *const data[3], const size_t n[3]);

// Writes m (and tok, may be NULL) as GGUF, as a Hugging Face folder and as a
// llama2.c checkpoint; every write that succeeds must load back into a model
// with the same fingerprint (and the GGUF vocabulary into a tokenizer of the
// same size). A writer may refuse a model (unsupported), never fail inside.
void kf_fuzz_roundtrip(const kf_model *m, const kf_tokenizer *tok);

// Writes tok as the vocabulary of a GGUF file (with a tiny model of its
// size) and checks that it loads back with the same pieces, types, BOS and EOS.
void kf_fuzz_tokenizer_roundtrip(const kf_tokenizer *tok);

// Encodes text with tok and decodes the ids (both must not crash; invalid
// UTF-8 is refused, valid text must encode).
void kf_fuzz_encode_decode(const kf_tokenizer *tok, const uint8_t *text, size_t n);

#endif
