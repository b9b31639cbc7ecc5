// kf_model_save: the one place that writes model files.
//
// Everything a model needs (weights, config, tokenizer files, the routers of
// a MoEfied model) is written under a temporary name beside the target and
// committed by one rename, so a failure at any point leaves the target as it
// was. Formats:
//   KF_FORMAT_GGUF     one file llama.cpp loads (architecture `llama`, `deci`
//                      when the FFN widths differ per layer, or `gpt2` with
//                      the FFNs zero-padded to the widest layer) with tok's
//                      vocabulary; 2-D weights as dtype (F32, F16, BF16,
//                      Q8_0), norms and biases F32. A MoEfied model's routers
//                      go to the companion X.moe_router.gguf (moe_fields.h),
//                      written first; both files are renamed into place.
//   KF_FORMAT_HF       a folder: config.json + model.safetensors with the
//                      architecture's own tensor names (arch/), 2-D weights
//                      as dtype (F32, F16, BF16), norms and biases F32; above
//                      shard_bytes of tensors, shards model-0000i-of-0000n
//                      .safetensors with model.safetensors.index.json, as
//                      Hugging Face writes them. moe_router.safetensors for a
//                      MoEfied model; tokenizer files copied from
//                      tokenizer_dir. An existing target folder is replaced,
//                      but only when it holds nothing but files kfuse writes.
//   KF_FORMAT_LLAMA2C  a llama2.c checkpoint (io/llama2c.h: Llama only).
#ifndef KF_IO_SAVE_H
#define KF_IO_SAVE_H

#include "core/status.h"
#include "core/tensor.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

typedef enum { KF_FORMAT_HF = 0, KF_FORMAT_GGUF, KF_FORMAT_LLAMA2C } kf_format;

typedef struct {
    kf_format format;
    kf_dtype dtype;            // 2-D weights; F32 (0) unless set (kf_save_default_dtype keeps the model's)
    int64_t shard_bytes;       // HF: largest shard (0: KF_SAVE_SHARD_BYTES)
    const kf_tokenizer *tok;   // GGUF: the vocabulary to embed (NULL: only BOS/EOS ids)
    const char *tokenizer_dir; // HF: a folder whose tokenizer files are copied (NULL: none)
} kf_save_opts;

// Hugging Face's default max_shard_size.
#define KF_SAVE_SHARD_BYTES ((int64_t)5000000000)

kf_status kf_model_save(const kf_model *m, const char *path, const kf_save_opts *o, kf_error *err);

// The dtype writers keep by default: model_dtype (kf_model_weight_dtype of
// the model as loaded) where format f stores it, else the nearest it does
// (HF has no Q8_0: F16, whose 11-bit mantissa loses less than Q8_0 did;
// llama2.c is F32 only).
kf_dtype kf_save_default_dtype(kf_dtype model_dtype, kf_format f);

// "hf", "gguf", "llama2c" -> format; false for anything else.
bool kf_format_parse(const char *name, kf_format *out);

#endif
