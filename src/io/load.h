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
kf_status kf_model_load_llama2c(kf_model **out, const char *path, kf_error *err);

#endif
