// A statistics file: named kf_moments accumulators (e.g. "layer.3.ffn_act")
// stamped with the 64-bit fingerprint of the model that produced them and the
// calibration protocol (calib/calib.h) of the windows they were gathered on,
// so that a run under another protocol can refuse them.
//
// On-disk layout (little-endian, no padding):
//   header  "KFSTATS\0" | u32 version (2) | u32 n_entries | u64 fingerprint
//           i32 ctx | i32 batch | i32 bos_id (-1: none) | i32 n_ranks | i64 n_tokens (tokens run)
//   entry   u64 n_bytes (bytes that follow, up to and including the checksum)
//           u32 name_len | name (no NUL)
//           u32 d | u32 topk | f32 eps | u32 has_shift | i64 n
//           f64 shift[d] | f64 sum[d] | f64 sxx[d(d+1)/2] (packed upper triangle)
//           i64 n_pos[d] | i64 n_nz[d] | f64 sum_abs[d] | f32 max[d] | f32 min[d]
//           u32 coact[d(d+1)/2] (only when topk > 0)
//           u64 checksum (FNV-1a 64 of the entry bytes from name_len on)
// Loading validates every size against the file size, the magic, version,
// fingerprint, protocol and checksums, and names the file in every error.
// Version 1 (before the protocol was recorded) is refused with one line.
#ifndef KF_STATS_STATSFILE_H
#define KF_STATS_STATSFILE_H

#include <stdint.h>
#include <stdio.h>

#include "calib/calib.h"
#include "core/status.h"
#include "stats/moments.h"

#define KF_STATSFILE_VERSION 2
#define KF_STATSFILE_NAME_MAX 255

typedef struct {
    char name[KF_STATSFILE_NAME_MAX + 1];
    kf_moments m;
} kf_stats_entry;

typedef struct {
    uint64_t fingerprint;     // of the model the statistics come from
    kf_calib_protocol protocol; // windows they were gathered on; max_tokens = tokens run, rank 0
    int n, cap;
    kf_stats_entry **entries; // (n) owned
} kf_statsfile;

void kf_statsfile_init(kf_statsfile *f, uint64_t fingerprint, const kf_calib_protocol *protocol);
void kf_statsfile_free(kf_statsfile *f);

// Creates an empty accumulator under a new, unique name (1..255 bytes) and
// returns it in *out; the file owns it.
kf_status kf_statsfile_add(kf_statsfile *f, const char *name, int d, int topk, float eps, kf_moments **out,
                           kf_error *err);
// NULL when absent.
kf_moments *kf_statsfile_get(const kf_statsfile *f, const char *name);
// Merges every accumulator of src into the same-named one of dst (created
// when missing). Fingerprints and windows (kf_calib_check_same) must match;
// the token counts add up.
kf_status kf_statsfile_merge(kf_statsfile *dst, const kf_statsfile *src, kf_error *err);

// Writes path.tmp, then renames it over path.
kf_status kf_statsfile_save(const kf_statsfile *f, const char *path, kf_error *err);
// A statistics file written as its entries become ready (analyze's layer
// groups): the header, with n_entries and the protocol, first; each call of
// kf_statsfile_stream_add appends every entry of f (f may then be freed);
// close renames path.tmp over path only when exactly n_entries were added.
// abort (or any failure) leaves nothing at path.
typedef struct {
    FILE *fp;
    char tmp[4096], path[4096];
    int n_expected, n_written, ok;
} kf_statsfile_stream;
kf_status kf_statsfile_stream_open(kf_statsfile_stream *s, const char *path, uint64_t fingerprint,
                                   const kf_calib_protocol *protocol, int n_entries, kf_error *err);
kf_status kf_statsfile_stream_add(kf_statsfile_stream *s, const kf_statsfile *f, kf_error *err);
kf_status kf_statsfile_stream_close(kf_statsfile_stream *s, kf_error *err);
void kf_statsfile_stream_abort(kf_statsfile_stream *s);
// f must be freed or fresh; on failure it is left empty. The file's
// fingerprint must equal the given one and, when want is not NULL, its
// protocol must give the same windows as want ("stats.kfs was gathered with
// ctx 128 and no BOS; this run uses ctx 256 with BOS 1").
kf_status kf_statsfile_load(kf_statsfile *f, const char *path, uint64_t fingerprint, const kf_calib_protocol *want,
                            kf_error *err);

#endif
