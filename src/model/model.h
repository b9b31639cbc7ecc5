// The architecture-generic in-memory model.
//
// Conventions (said once here, relied on everywhere):
// - Weights are row-major W (out, in) and y = W x. GPT-2's Conv1D weights,
//   stored (in, out) on disk, are transposed at load time.
// - RoPE is the rotate-half form of Hugging Face Llama: for head dimension D,
//   element i pairs with i + D/2. Loaders of formats that use the interleaved
//   form (GGUF `llama`, llama2.c) permute wq/wk rows back at load time, and
//   writers permute them forward.
// - A FFN "neuron" j of layer l is the pair (row j of w_gate/w_up, column j
//   of w_down). Each layer has its own width n_ff: fusion changes it per
//   layer, so nothing may assume one global intermediate size.
// - Weights are fp32 in memory (kf_tensor.dtype F32) unless the model was
//   loaded with kf_load_opts.keep_dtype (io/load.h). Then the 2-D weights
//   (tok_embd, lm_head, pos_embd, wq/wk/wv/wo, w_gate/w_up/w_down of dense
//   layers) keep the file's F16, BF16 or Q8_0 bytes, memory-mapped when the
//   file needs no reordering, and 1-D tensors (norms, biases) and the FFN and
//   routers of mixture-of-experts layers are fp32. Only the forward pass
//   (runtime/, which dispatches on dtype), and what runs it, reads such a
//   model: the commands that only run the model (info, perplexity, bench,
//   generate, eval) ask for it; everything that reads weights as float*
//   (transforms, moefy, training, weight analyses, writers) loads fp32, or
//   converts the tensors it reads with kf_model_tensor_to_f32. Writers store
//   each weight in its src_dtype unless told a dtype (io/save.h).
#ifndef KF_MODEL_MODEL_H
#define KF_MODEL_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "core/file.h"
#include "core/status.h"
#include "core/tensor.h"

// The limits every reader checks and every writer keeps (kf_model_validate),
// one set for all formats, so that whatever kfuse writes it reads back.
#define KF_MAX_VOCAB (1 << 24)
#define KF_MAX_EMBD (1 << 20)
#define KF_MAX_LAYERS 4096
#define KF_MAX_HEADS 4096
#define KF_MAX_HEAD_DIM (1 << 16)
#define KF_MAX_FFN (1 << 24)
#define KF_MAX_CTX (1 << 24)

typedef enum {
    KF_ARCH_LLAMA = 0, // Llama, Mistral, Qwen2: RMSNorm, RoPE, SwiGLU, GQA
    KF_ARCH_GPT2,      // GPT-2: LayerNorm, learned positions, GELU-tanh, biases
} kf_arch;

typedef enum { KF_NORM_RMS = 0, KF_NORM_LAYER } kf_norm_kind;
typedef enum { KF_ACT_SILU = 0, KF_ACT_GELU_TANH } kf_act_kind;
typedef enum { KF_POS_ROPE = 0, KF_POS_LEARNED } kf_pos_kind;

// Router of a mixture-of-experts FFN (kfuse moefy, src/runtime/moe.h).
typedef enum {
    KF_ROUTER_LINEAR = 0, // scores (E) = router_w x + router_b (trained, or expert means: "similarity")
    KF_ROUTER_MLP,        // scores (E) = router_w2 relu(router_w x + router_b) + router_b2
    KF_ROUTER_ORACLE,     // scores = true per-expert output norms (all experts computed: an upper bound)
} kf_router_kind;

typedef struct {
    // attention; C = n_embd, Dh = head_dim, H = n_head, Hkv = n_head_kv
    kf_tensor attn_norm_w, attn_norm_b; // (C); bias only for LayerNorm
    kf_tensor wq, wk, wv;               // wq (H*Dh, C), wk/wv (Hkv*Dh, C)
    kf_tensor bq, bk, bv;               // optional (H*Dh), (Hkv*Dh)
    kf_tensor wo, bo;                   // wo (C, H*Dh), bo optional (C)
    // feed-forward; F = n_ff of this layer
    kf_tensor ffn_norm_w, ffn_norm_b;   // (C)
    kf_tensor w_gate;                   // (F, C); absent when the FFN is not gated
    kf_tensor w_up, b_up;               // (F, C), optional (F)
    kf_tensor w_down, b_down;           // (C, F), optional (C)
    int n_ff;
    // mixture of experts (kfuse moefy). Dense layers have n_expert == 0 and
    // use none of this. Otherwise expert e is neurons [e*S, (e+1)*S),
    // S = F / n_expert, and per token only the experts the router selects
    // are computed: the top_k best scores, or (top_k == 0) the fewest
    // experts whose positive scores cover a share `coverage` of their sum.
    int n_expert;                       // E
    kf_router_kind router;
    int top_k;
    float coverage;
    kf_tensor router_w, router_b;       // linear (E, C), (E); MLP first layer (Hr, C), (Hr)
    kf_tensor router_w2, router_b2;     // MLP only: (E, Hr), (E)
} kf_layer;

typedef struct kf_buffer kf_buffer; // owned allocations, freed with the model

typedef struct {
    kf_arch arch;
    kf_norm_kind norm;
    kf_act_kind act;
    kf_pos_kind pos;
    bool gated_ffn;     // SwiGLU: act(gate x) * (up x); else act(up x)

    int n_vocab;
    int n_embd;         // C
    int n_layer;
    int n_head;         // H
    int n_head_kv;      // Hkv (H for plain multi-head attention)
    int head_dim;       // Dh
    int n_ctx_train;    // max positions (size of pos_embd for GPT-2)
    float norm_eps;
    float rope_theta;
    bool tied_head;     // lm_head.data == tok_embd.data
    int bos_id, eos_id; // -1 when unknown

    kf_tensor tok_embd;              // (V, C)
    kf_tensor pos_embd;              // (n_ctx_train, C), learned positions only
    kf_tensor out_norm_w, out_norm_b; // (C)
    kf_tensor lm_head;               // (V, C); may alias tok_embd
    kf_layer *layers;                // n_layer entries

    char path[1024];      // what it was loaded from
    char format[16];      // "hf", "gguf", "llama2c", or "memory"
    kf_mmap *maps;        // memory maps the weights may point into
    int n_maps;
    kf_buffer *buffers;   // owned weight buffers
} kf_model;

void kf_model_free(kf_model *m);

// Creates an empty model (format "memory") whose fields the caller fills;
// used by loaders and transforms.
kf_model *kf_model_new(void);
// Zeroed float buffer owned by the model (NULL if out of memory).
float *kf_model_alloc(kf_model *m, int64_t n_floats);
// n bytes owned by the model, 64-byte aligned and zeroed (NULL if out of memory).
void *kf_model_alloc_bytes(kf_model *m, size_t n);
// Converts a tensor kept in its file dtype to an owned fp32 copy (no-op for
// F32 or absent tensors). Code that reads weights as floats (transforms,
// routers, analyses of weights) calls it on the tensors it reads.
kf_status kf_model_tensor_to_f32(kf_model *m, kf_tensor *t, kf_error *err);
// Allocates t->data as an owned buffer of the given shape.
// Gives back the memory behind t's data, which must not be read again: an
// allocation of m's made for t alone is freed, pages of a mapped file that
// lie wholly inside it are dropped from memory (madvise; the file is
// untouched). What a transform calls on the tensors it replaced.
void kf_model_release_tensor(kf_model *m, const kf_tensor *t);
// Stores t (fp32, e.g. a transform's result) in dtype d: a new allocation of
// m's, the fp32 one released. Q8_0 needs rows of whole blocks of 32.
kf_status kf_model_tensor_store(kf_model *m, kf_tensor *t, kf_dtype d, kf_error *err);
kf_status kf_model_alloc_tensor(kf_model *m, kf_tensor *t, int ndim, const int64_t *ne, kf_error *err);
// Registers a memory map whose lifetime becomes the model's.
kf_status kf_model_add_map(kf_model *m, kf_mmap map, kf_error *err);

// Copies every weight that points into a memory map into one owned buffer,
// in the order a decode step reads them, and releases the maps (llama.cpp's
// --no-mmap). Decode streams all weights per token; from anonymous memory it
// runs at the machine's bandwidth, from the file mapping it did not here
// (bench/RESULTS.md). Costs one copy of the weights in RAM.
kf_status kf_model_load_to_memory(kf_model *m, kf_error *err);

// Replaces every weight by a seeded random initialisation of the same shape,
// as Hugging Face initialises these architectures: matrices and embeddings
// N(0, 0.02), GPT-2's projections into the residual stream (wo, w_down)
// N(0, 0.02 / sqrt(2 L)), biases 0, norm weights 1. Copies mapped weights into
// memory first (kf_model_load_to_memory). The control of a trained model: the
// same architecture and shape with nothing learnt. Refuses MoE models.
kf_status kf_model_randomize(kf_model *m, uint64_t seed, kf_error *err);

// Checks the hyper-parameters against the KF_MAX_* limits, every tensor's
// presence and shape against them and each layer's n_ff, and the expert
// fields; err names `what` (usually the file) on mismatch.
kf_status kf_model_validate(const kf_model *m, const char *what, kf_error *err);

// Every present tensor with a generic name ("tok_embd", "layers.3.w_up", ...),
// in a fixed order: globals, then layers in order. Returns the count written
// (at most cap); with out NULL, returns the number of present tensors.
typedef struct {
    char name[48];
    int layer; // -1 for global tensors
    const kf_tensor *t;
} kf_named_tensor;
int kf_model_list_tensors(const kf_model *m, kf_named_tensor *out, int cap);

// Changes the expert selection of every mixture-of-experts layer: top_k > 0
// fixed top-k, else dynamic-k with coverage in (0, 1]. Fails (changing
// nothing) if the model has no such layer or top_k exceeds a layer's experts.
kf_status kf_model_set_expert_selection(kf_model *m, int top_k, float coverage, kf_error *err);

// 64-bit FNV-1a fingerprint of a model: hyper-parameters, per-layer widths,
// every tensor's shape and up to 4096 evenly spaced values of each (ties a
// statistics file to the model it was gathered on).
uint64_t kf_model_fingerprint(const kf_model *m);

int64_t kf_model_n_params(const kf_model *m);     // tied head counted once
// The file dtype (src_dtype) most 2-D weights were loaded from (F32 for a
// model built in memory); writers keep it by default (io/save.h).
kf_dtype kf_model_weight_dtype(const kf_model *m);
int64_t kf_model_weight_bytes(const kf_model *m); // bytes read per decoded token (all weights once, as stored)
const char *kf_arch_name(kf_arch a);

#endif
