// Reader and writer for .safetensors files (reading: single or sharded).
//
// Layout: u64 little-endian header length N, N bytes of JSON
//   {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
//    "__metadata__": {...}}
// then the data section; offsets are relative to its first byte (8 + N).
// Every field is validated at open time (dtype, shape x dtype size == byte
// span, spans inside the data section and not overlapping), so callers may
// read a tensor's bytes without further checks.
#ifndef KF_FORMATS_SAFETENSORS_H
#define KF_FORMATS_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>

#include "core/file.h"
#include "core/status.h"
#include "core/tensor.h"

#define KF_ST_MAX_HEADER (100u << 20) // the format's own limit on the JSON header

typedef struct {
    char *name;
    char dtype_name[16];     // as written in the file, e.g. "BF16" or "I64"
    kf_dtype dtype;          // KF_DTYPE_COUNT for dtypes without fp32 conversion
    int ndim;
    int64_t ne[KF_MAX_DIMS]; // outer-first
    int64_t nelem;           // 1 for a scalar (ndim 0)
    const void *data;        // inside the file's map, nbytes long
    size_t nbytes;
    int file;                // index into kf_st_set.paths
} kf_st_tensor;

typedef struct {
    kf_st_tensor *tensors; // sorted by name once indexed
    int n_tensors;
    char **paths;          // one per file (shard)
    kf_mmap *maps;         // one per file; moved out by kf_st_set_take_map
    int n_files;
} kf_st_set;

// Opens one file and appends its tensors to the set (names must be new).
kf_status kf_st_set_add_file(kf_st_set *s, const char *path, kf_error *err);
// Sorts the tensors by name and rejects duplicates; needed after
// kf_st_set_add_file and before kf_st_set_find.
kf_status kf_st_set_index(kf_st_set *s, kf_error *err);
// Opens dir/model.safetensors.index.json and all its shards when present,
// else dir/model.safetensors, and indexes the set. With an index, checks that
// it lists every tensor, each in the shard that holds it.
kf_status kf_st_set_open_dir(kf_st_set *s, const char *dir, kf_error *err);
const kf_st_tensor *kf_st_set_find(const kf_st_set *s, const char *name);
// Hands file i's map to the caller (the set no longer unmaps it).
kf_mmap kf_st_set_take_map(kf_st_set *s, int i);
void kf_st_set_free(kf_st_set *s);

// Writes n F32 tensors (names[i], ts[i]: fp32 data, outer-first shape) to f
// as one safetensors file: the header (with "__metadata__": {"format": "pt"}
// first when pt_metadata) padded with spaces to a multiple of 8 bytes, so
// that the data stays aligned in a map, then the data back to back. False
// when out of memory or a write fails (the caller commits or removes f).
bool kf_st_write(FILE *f, const char *const *names, const kf_tensor *const *ts, int n, bool pt_metadata);
// The same with tensor i stored as dts[i] (F32, F16 or BF16; dts NULL: all
// F32), whatever dtype its data has in memory: bytes already in dts[i] are
// copied, others decoded and encoded in chunks (no copy of a whole tensor).
bool kf_st_write_dt(FILE *f, const char *const *names, const kf_tensor *const *ts, const kf_dtype *dts, int n,
                    bool pt_metadata);
// Bytes tensor t takes stored as d (F32, F16, BF16).
uint64_t kf_st_nbytes(const kf_tensor *t, kf_dtype d);

#endif
