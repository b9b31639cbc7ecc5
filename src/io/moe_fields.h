// Saving and loading the mixture-of-experts fields of a MoEfied model (see
// docs/formats.md, "Mixture of experts"). The FFN weights themselves stay in
// the standard dense layout and names (experts are consecutive neuron
// ranges), so any reader sees an equivalent dense model; the routers and the
// selection rule are extra:
//   HF folder: config.json "kfuse_moe" {n_expert, router, top_k, coverage:
//              per-layer arrays} + moe_router.safetensors (F32 tensors
//              layers.<l>.router.weight/.bias, layers.<l>.router2.weight/.bias)
//   GGUF:      kfuse.moe.n_expert / .router / .top_k (i32 arrays, per layer),
//              kfuse.moe.coverage (f32 array), kfuse.moe.router_file (the
//              companion's file name) + the companion GGUF X.moe_router.gguf
//              beside X.gguf holding the F32 tensors blk.<l>.ffn_router.weight/
//              .bias, blk.<l>.ffn_router2.weight/.bias. The model file thus
//              holds exactly the dense tensors: llama.cpp, which refuses
//              tensors it does not expect, loads it as the dense model.
//              (Files from before the companion hold the router tensors
//              themselves; they are still read.)
// Router kinds are written as names in config.json ("linear", "mlp",
// "oracle") and as kf_router_kind numbers in GGUF.
#ifndef KF_IO_MOE_FIELDS_H
#define KF_IO_MOE_FIELDS_H

#include <stdbool.h>

#include <cjson/cJSON.h>

#include "core/status.h"
#include "formats/gguf.h"
#include "model/model.h"

#define KF_MOE_ROUTER_FILE "moe_router.safetensors"

bool kf_moe_model_has_experts(const kf_model *m);

// HF: adds "kfuse_moe" to config.json's tree, and writes the routers to path
// (the folder's moe_router.safetensors; kf_model_save commits the folder).
// Both do nothing for a dense model.
void kf_moe_hf_config(const kf_model *m, cJSON *cfg);
kf_status kf_moe_hf_write_routers(const kf_model *m, const char *path, kf_error *err);

// The companion router file of the GGUF at gguf_path: X.gguf -> X.moe_router.gguf
// (X -> X.moe_router.gguf without the suffix); false when it does not fit in n.
bool kf_moe_gguf_router_path(const char *gguf_path, char *out, size_t n);
// Adds the keys to a GGUF being written, naming the companion router_path
// (nothing for a dense model).
kf_status kf_moe_gguf_add(kf_gguf_writer *w, const kf_model *m, const char *router_path, kf_error *err);
// Writes the companion GGUF with the router tensors.
kf_status kf_moe_gguf_write_routers(const kf_model *m, const char *router_path, kf_error *err);
// Makes m dense: every layer's expert fields and router tensors cleared. The
// FFN weights are the dense layout already, so this is the function a reader
// that ignores the experts computes (all neurons).
void kf_moe_make_dense(kf_model *m);

// After a model was loaded from path (HF folder or GGUF): reads the MoE
// fields when the file has them, validates them against the model, and
// leaves a dense model untouched. Router tensors are copied into buffers the
// model owns.
kf_status kf_moe_load(kf_model *m, const char *path, kf_error *err);

#endif
