// Writes a kf_model as a Hugging Face folder: config.json + one F32
// model.safetensors with the architecture's own tensor names (GPT-2 back in
// Conv1D (in, out) layout with q/k/v fused into c_attn). When layers differ in
// FFN width, config.json lists intermediate_size (n_inner for GPT-2) per layer.
// The folder is created if needed; files are written to temporaries and
// renamed, so an error leaves no half-written output. Copying tokenizer files
// is the caller's business.
#ifndef KF_IO_HF_WRITE_H
#define KF_IO_HF_WRITE_H

#include "core/status.h"
#include "model/model.h"

kf_status kf_hf_write(const kf_model *m, const char *dir, kf_error *err);

#endif
