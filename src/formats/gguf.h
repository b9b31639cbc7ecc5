// GGUF (v3, also v2): the single-file format of llama.cpp/ggml.
//
// Layout (little-endian): magic "GGUF", u32 version, u64 tensor count, u64
// key/value count; the key/values (string key, u32 type, value); the tensor
// infos (string name, u32 n_dims, u64 dims innermost-first, u32 ggml type,
// u64 offset into the data section); padding to the alignment
// (`general.alignment`, default 32); the data section.
//
// GGML writes dims innermost-first: ne[0] is the row length. A row-major
// weight W (out, in) therefore has GGUF dims [in, out]. kf_gguf_tensor keeps
// the file's order in dims[] and the outer-first shape of kf_tensor in ne[].
#ifndef KF_FORMATS_GGUF_H
#define KF_FORMATS_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/file.h"
#include "core/status.h"
#include "core/tensor.h"

typedef enum {
    KF_GGUF_UINT8 = 0,
    KF_GGUF_INT8 = 1,
    KF_GGUF_UINT16 = 2,
    KF_GGUF_INT16 = 3,
    KF_GGUF_UINT32 = 4,
    KF_GGUF_INT32 = 5,
    KF_GGUF_FLOAT32 = 6,
    KF_GGUF_BOOL = 7,
    KF_GGUF_STRING = 8,
    KF_GGUF_ARRAY = 9,
    KF_GGUF_UINT64 = 10,
    KF_GGUF_INT64 = 11,
    KF_GGUF_FLOAT64 = 12,
    KF_GGUF_TYPE_COUNT,
} kf_gguf_type;

#define KF_GGUF_DEFAULT_ALIGNMENT 32
#define KF_GGUF_MAX_NAME 64 // ggml's limit on tensor names, NUL included

// ggml tensor types this reader understands.
enum { KF_GGML_F32 = 0, KF_GGML_F16 = 1, KF_GGML_Q8_0 = 8, KF_GGML_BF16 = 30 };

typedef struct {
    const char *key; // not NUL-terminated: key_len bytes inside the map
    size_t key_len;
    kf_gguf_type type;
    const uint8_t *val;    // the value's bytes (for arrays: the first element)
    kf_gguf_type arr_type; // arrays only
    uint64_t arr_n;        // arrays only
} kf_gguf_kv;

typedef struct {
    const char *name; // not NUL-terminated
    size_t name_len;
    int ndim;
    int64_t dims[KF_MAX_DIMS]; // as in the file: innermost first
    int64_t ne[KF_MAX_DIMS];   // outer-first, as kf_tensor
    kf_dtype dtype;
    uint64_t offset; // from the start of the data section
    size_t nbytes;
    const uint8_t *data; // inside the map, bounds already checked
} kf_gguf_tensor;

// Open-addressing index of names (a slot with name NULL is empty).
typedef struct {
    const char *name; // inside the map
    size_t len;
    int64_t index;
} kf_gguf_slot;
typedef struct {
    kf_gguf_slot *slots;
    uint64_t mask; // capacity - 1 (a power of two, at least twice the entries)
} kf_gguf_index;

typedef struct {
    char path[1024];
    kf_mmap map;
    uint32_t version;
    uint32_t alignment;
    int64_t n_kv, n_tensors;
    kf_gguf_kv *kv;
    kf_gguf_tensor *tensors;
    kf_gguf_index kv_index, tensor_index; // by key, by tensor name
    size_t data_offset; // start of the data section in the file
} kf_gguf;

// Maps and parses a GGUF file, checking every count, string, type, offset
// and tensor extent against the file size. Tensors must not overlap.
kf_status kf_gguf_open(kf_gguf **out, const char *path, kf_error *err);
// Frees the parse; the map is closed unless it was taken with kf_gguf_take_map.
void kf_gguf_close(kf_gguf *g);
// Hands the memory map over to the caller (e.g. a model that points into it).
kf_mmap kf_gguf_take_map(kf_gguf *g);

const kf_gguf_kv *kf_gguf_find_kv(const kf_gguf *g, const char *key);
const kf_gguf_tensor *kf_gguf_find_tensor(const kf_gguf *g, const char *name);
const char *kf_gguf_type_name(kf_gguf_type t);

// Typed getters. Each returns KF_OK and fills *out; when the key is absent it
// returns KF_ERR_FORMAT ("missing key") if required, else KF_OK leaving *out
// unchanged. A value of the wrong type is always KF_ERR_FORMAT.
kf_status kf_gguf_get_int(const kf_gguf *g, const char *key, bool required, int64_t *out, kf_error *err);
kf_status kf_gguf_get_float(const kf_gguf *g, const char *key, bool required, double *out, kf_error *err);
kf_status kf_gguf_get_bool(const kf_gguf *g, const char *key, bool required, bool *out, kf_error *err);
// *out is a malloc'd NUL-terminated copy.
kf_status kf_gguf_get_str(const kf_gguf *g, const char *key, bool required, char **out, kf_error *err);
// Integer arrays of any integer element type, as int64 (malloc'd, *n elements).
kf_status kf_gguf_get_int_array(const kf_gguf *g, const char *key, int64_t **out, int64_t *n, kf_error *err);
// Float arrays (FLOAT32/FLOAT64) as float (malloc'd).
kf_status kf_gguf_get_float_array(const kf_gguf *g, const char *key, float **out, int64_t *n, kf_error *err);
// String arrays: *out is one malloc'd block holding n pointers followed by
// the NUL-terminated strings; free(*out) releases everything.
kf_status kf_gguf_get_str_array(const kf_gguf *g, const char *key, char ***out, int64_t *n, kf_error *err);

// Converts a tensor to fp32 into dst (nelem floats).
void kf_gguf_tensor_to_f32(const kf_gguf_tensor *t, float *dst);

// ---- writing ----

typedef struct kf_gguf_writer kf_gguf_writer;

kf_status kf_gguf_writer_init(kf_gguf_writer **out, kf_error *err);
void kf_gguf_writer_free(kf_gguf_writer *w);
// Every add copies what it needs except tensor data. A failed add (out of
// memory, bad name or shape) is remembered and reported by save.
void kf_gguf_writer_add_u32(kf_gguf_writer *w, const char *key, uint32_t v);
void kf_gguf_writer_add_f32(kf_gguf_writer *w, const char *key, float v);
void kf_gguf_writer_add_bool(kf_gguf_writer *w, const char *key, bool v);
void kf_gguf_writer_add_str(kf_gguf_writer *w, const char *key, const char *v);
void kf_gguf_writer_add_i32_array(kf_gguf_writer *w, const char *key, const int32_t *v, int64_t n);
void kf_gguf_writer_add_f32_array(kf_gguf_writer *w, const char *key, const float *v, int64_t n);
void kf_gguf_writer_add_str_array(kf_gguf_writer *w, const char *key, const char *const *v, int64_t n);
// Adds a tensor of outer-first shape ne whose fp32 data (not copied: it must
// live until kf_gguf_writer_save) is stored as dtype (F32, F16, BF16 or Q8_0).
void kf_gguf_writer_add_tensor(kf_gguf_writer *w, const char *name, int ndim, const int64_t *ne, const float *data,
                               kf_dtype dtype);
// A block of rows (not copied): fp32, or bytes of `dtype` (a tensor kept in
// its file dtype, core/tensor.h), converted to the stored dtype on writing.
typedef struct {
    const float *data;
    int64_t rows;
    kf_dtype dtype; // of data; F32 (0) unless set
} kf_gguf_rows;
// Adds a tensor whose rows are 1-3 blocks stacked (their rows sum to ne[0]),
// optionally reordered: stored row r is stacked row row_order[r] (row_order,
// ne[0] entries, not copied; NULL keeps the order).
void kf_gguf_writer_add_stacked(kf_gguf_writer *w, const char *name, int ndim, const int64_t *ne,
                                const kf_gguf_rows *parts, int n_parts, const int64_t *row_order, kf_dtype dtype);
// Writes path (through path.tmp and a rename).
kf_status kf_gguf_writer_save(kf_gguf_writer *w, const char *path, kf_error *err);

#endif
