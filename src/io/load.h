// Loading models from files (saving: io/save.h).
#ifndef KF_IO_LOAD_H
#define KF_IO_LOAD_H

#include "core/status.h"
#include "model/model.h"

// Loads a model: a Hugging Face folder (config.json + safetensors, possibly
// sharded), a GGUF v3 file, or a llama2.c checkpoint (.bin), with the
// mixture-of-experts fields of a MoEfied HF folder or GGUF. F32 weights stay
// in the file's memory map where aligned; others are converted to fp32 in
// owned buffers. On failure *out is NULL and err names the file and the
// problem.
kf_status kf_model_load(kf_model **out, const char *path, kf_error *err);
kf_status kf_model_load_hf(kf_model **out, const char *dir, kf_error *err);
kf_status kf_model_load_gguf(kf_model **out, const char *path, kf_error *err);

// How to load. keep_dtype: 2-D weights stored as F16, BF16 or Q8_0 stay in
// that dtype in memory (model.h says which tensors and who may read them):
// a BF16 7B model then takes 13.5 GB instead of 27. Only for code that runs
// the model (runtime/); the FFN of mixture-of-experts layers is fp32 anyway.
// llama2.c checkpoints are F32 and load as without options.
typedef struct {
    bool keep_dtype;
} kf_load_opts;
// As kf_model_load with options (o NULL: the defaults, all fp32).
kf_status kf_model_load_opts(kf_model **out, const char *path, const kf_load_opts *o, kf_error *err);
kf_status kf_model_load_hf_opts(kf_model **out, const char *dir, const kf_load_opts *o, kf_error *err);
kf_status kf_model_load_gguf_opts(kf_model **out, const char *path, const kf_load_opts *o, kf_error *err);
kf_status kf_model_load_llama2c(kf_model **out, const char *path, kf_error *err);

#endif
