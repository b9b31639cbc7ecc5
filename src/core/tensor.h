// A tensor is a buffer that knows its shape and its dtype. Shapes are written
// outer-first as in PyTorch: a weight W (out, in) has ne = {out, in} and is
// stored row-major, so y = W x reads row i for output i.
// `data` holds fp32 unless `dtype` says otherwise: a model loaded with
// kf_load_opts.keep_dtype (io/load.h) keeps its 2-D weights as the file
// stores them (F16, BF16, Q8_0; `data` then points at those bytes, not at
// floats) and only the forward pass's kernels read them. Weights either
// point into a memory-mapped file or into a buffer owned by the model
// (converted, transposed, or produced by a transform). Arithmetic is fp32.
#ifndef KF_CORE_TENSOR_H
#define KF_CORE_TENSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KF_MAX_DIMS 4

typedef enum {
    KF_DTYPE_F32 = 0,
    KF_DTYPE_F16,
    KF_DTYPE_BF16,
    KF_DTYPE_Q8_0, // GGUF block quantisation: 32 int8 + one f16 scale
    KF_DTYPE_COUNT,
} kf_dtype;

typedef struct {
    float *data;              // NULL when the tensor is absent (e.g. no bias); bytes of `dtype`
    int ndim;
    int64_t ne[KF_MAX_DIMS];  // outer-first
    kf_dtype src_dtype;       // dtype in the file it was loaded from
    kf_dtype dtype;           // dtype of data in memory: F32 (0) unless the load kept the file's
} kf_tensor;

static inline bool kf_tensor_present(const kf_tensor *t) { return t->data != NULL; }
int64_t kf_tensor_nelem(const kf_tensor *t);
// Sets ndim/ne from a list; data untouched.
void kf_tensor_set_shape(kf_tensor *t, int ndim, const int64_t *ne);
// "(288, 768)" into buf.
const char *kf_tensor_shape_str(const kf_tensor *t, char *buf, size_t n);

// Elements per row (nelem / ne[0]); a row of a 2-D weight is one output.
int64_t kf_tensor_row_len(const kf_tensor *t);
// Bytes of data in memory (kf_dtype_size of dtype and nelem).
size_t kf_tensor_nbytes(const kf_tensor *t);
// Start of row r in memory (Q8_0 rows hold whole blocks).
const void *kf_tensor_row(const kf_tensor *t, int64_t r);
// Row r decoded to fp32: dst (row_len).
void kf_tensor_row_f32(const kf_tensor *t, int64_t r, float *dst);
// Element i (flat index) decoded to fp32.
float kf_tensor_get_f32(const kf_tensor *t, int64_t i);

const char *kf_dtype_name(kf_dtype d);
// "f32", "f16", "bf16", "q8_0" (any case) -> dtype; false for anything else.
bool kf_dtype_parse(const char *name, kf_dtype *out);
// Bytes for n elements stored in dtype d (n a multiple of 32 for Q8_0).
size_t kf_dtype_size(kf_dtype d, int64_t n);

// Conversions to fp32 (n elements); sources need no alignment.
void kf_f16_to_f32(const void *src, float *dst, int64_t n);
void kf_bf16_to_f32(const void *src, float *dst, int64_t n);
void kf_q8_0_to_f32(const void *src, float *dst, int64_t n);
uint16_t kf_f32_to_f16(float x);
uint16_t kf_f32_to_bf16(float x); // round to nearest even
float kf_f16_to_f32_1(uint16_t h);
// Converts n floats from src (stored as dtype, any alignment) into dst.
void kf_dtype_to_f32(kf_dtype d, const void *src, float *dst, int64_t n);
// Stores n floats as dtype into dst (kf_dtype_size(d, n) bytes, any
// alignment); Q8_0 as ggml quantises it (n a multiple of 32).
void kf_f32_to_dtype(kf_dtype d, const float *src, void *dst, int64_t n);

#endif
