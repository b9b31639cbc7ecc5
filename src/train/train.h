// The training pass of a dense model: a forward that keeps every activation
// the backward needs (or, under a memory cap, each layer's input, the
// backward recomputing the rest), in one workspace allocated at init (nothing
// is allocated per step), and the backward that fills the gradients of the
// trainable parameters. Both families (model.h): Llama (RMSNorm, rotate-half
// RoPE, grouped-query attention, SwiGLU, tied or untied head) and GPT-2
// (LayerNorm, learned positions, GELU-tanh, biases), each layer at its own
// FFN width, dense or a mixture of experts (kfuse moefy). The forward
// computes what runtime's kf_forward_prefill computes (same matmul calls and
// row-wise roundings; attention through sgemm instead of an online softmax;
// a MoE layer's experts masked in one dense sgemm instead of grouped by
// expert), checked by tests/test_train.c.
//
// MoE layers: the router scores the experts and the same selection as the
// runtime's (top-k or coverage) zeroes the unselected experts' activations,
// so the value trained is the function the exported model computes. Every
// expert's activations are computed (the router's gradient needs them), the
// expert weights receive the gradient of the selected slices only, and the
// router's gradient comes through the straight-through softmax relaxation
// of ops.h (docs/moe-training.md). The oracle router has no parameters and
// its selection no gradient.
//
// What trains:
//   KF_TRAIN_ALL    every tensor of the model (routers included)
//   KF_TRAIN_FFN    w_gate, w_up, b_up, w_down, b_down of every layer
//   KF_TRAIN_ROUTER the routers of the MoE layers (router_w, router_b, router_w2, router_b2)
//   KF_TRAIN_LORA  LoRA adapters (Hu et al. 2021) of rank r on chosen linear
//                  layers: y = W x + (alpha / r) B (A x), A (r, in) seeded
//                  uniform in +-1/sqrt(in) (PEFT's default), B (out, r) zero;
//                  the model's weights stay frozen until kf_train_lora_merge.
#ifndef KF_TRAIN_TRAIN_H
#define KF_TRAIN_TRAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "model/model.h"

typedef enum { KF_TRAIN_ALL = 0, KF_TRAIN_FFN, KF_TRAIN_LORA, KF_TRAIN_ROUTER } kf_train_mode;

// The linear layers of a block (LoRA targets).
typedef enum { KF_LIN_Q = 0, KF_LIN_K, KF_LIN_V, KF_LIN_O, KF_LIN_GATE, KF_LIN_UP, KF_LIN_DOWN, KF_LIN_COUNT } kf_lin;

typedef struct {
    kf_train_mode mode;
    int lora_rank;         // r (LoRA only)
    float lora_alpha;      // scale alpha / r; 0: alpha = r
    unsigned lora_targets; // bit mask of 1u << kf_lin; 0: kf_train_lora_default_targets
    uint64_t seed;         // LoRA initialisation
    uint64_t max_memory;   // cap on the workspace (activations and backward scratch) in bytes; 0: none.
                           // Above it, each layer keeps only its input and the backward recomputes
                           // the layer's activations from it (one more forward per step).
} kf_train_opts;

// One trainable tensor: its values, its gradient (same length), whether
// weight decay applies (matrices yes, norms and biases no).
typedef struct {
    char name[64];
    float *w, *g;
    int64_t n;
    bool decay;
} kf_param;

typedef struct kf_train kf_train;

// Llama: every linear layer; GPT-2: wo, w_up, w_down (its q, k, v are one
// fused c_attn in Hugging Face's layout, which a per-matrix adapter cannot express).
unsigned kf_train_lora_default_targets(const kf_model *m);

// Sets up training of m (its weights are copied out of file maps so they can
// change) for batches of B sequences of T tokens. Fails on T beyond learned
// positions, on KF_TRAIN_ROUTER without a linear or MLP router, on a
// max_memory too small even for recomputed activations (saying what they
// need), or on bad options.
kf_status kf_train_init(kf_train **out, kf_model *m, int B, int T, const kf_train_opts *o, kf_error *err);
void kf_train_free(kf_train *t);

// Forward of tokens (B, T) (each sequence at positions 0..T-1); the logits
// (B*T, V) stay in the workspace.
kf_status kf_train_forward(kf_train *t, const int32_t *tokens, kf_error *err);
const float *kf_train_logits(const kf_train *t);
// d loss / d logits (B*T, V), filled by the caller (kf_train_distill_loss) before backward.
float *kf_train_dlogits(kf_train *t);
void kf_train_zero_grad(kf_train *t);
// Adds the gradients of the last forward's loss (through kf_train_dlogits) to every parameter's g.
void kf_train_backward(kf_train *t);
// The last forward's output of the last block, before the final norm (B*T, C).
const float *kf_train_hidden(const kf_train *t);
// As kf_train_backward for a loss of the last block's output alone: dx (B*T, C)
// = d loss / d kf_train_hidden; the final norm and the head get no gradient.
void kf_train_backward_hidden(kf_train *t, const float *dx);

kf_param *kf_train_params(kf_train *t, int *n);
// Whether the activations are recomputed layer by layer (max_memory), and the workspace's bytes.
bool kf_train_recomputes(const kf_train *t);
int64_t kf_train_workspace_bytes(const kf_train *t);
// Batch shape given at init.
void kf_train_shape(const kf_train *t, int *B, int *T);
// A model-shaped view of the gradients: every tensor's data is its gradient,
// NULL for frozen tensors (the tied head shares tok_embd's). Owned by t.
const kf_model *kf_train_grads(const kf_train *t);

// LoRA: adds (alpha / r) B A into each adapted weight (the export) and drops
// the adapters' effect (B zeroed), so that the model alone computes what the
// adapted model did.
kf_status kf_train_lora_merge(kf_train *t, kf_error *err);
// LoRA: writes dir/adapter_config.json and dir/adapter_model.safetensors in
// PEFT's layout and names (base_model.model.<HF module>.lora_A.weight (r, in),
// lora_B.weight (out, r)); base names the base model in the config.
kf_status kf_train_lora_save_peft(const kf_train *t, const char *dir, const char *base, kf_error *err);
// The PEFT key of (layer, which)'s lora_A (b false) or lora_B (b true) weight.
void kf_train_lora_peft_key(const kf_model *m, int layer, kf_lin which, bool b, char *buf, size_t n);
// The adapter of (layer, which), or false when it has none.
bool kf_train_lora_get(const kf_train *t, int layer, kf_lin which, float **A, float **B, int *in, int *out);

#endif
