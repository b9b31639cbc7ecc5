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
// A file written entry by entry, for statistics that no single process
// holds whole at once (analyze --shard-layers: rank 0 writes what the owning
// ranks send; analyze --max-memory: each layer group's entries as the group
// finishes). open writes the header of n_entries entries; each entry is
// begin, then its arrays in kf_statsfile_entry_arrays' order through data
// (in any pieces), then end; kf_statsfile_writer_entry writes one whole
// accumulator and kf_statsfile_writer_add every entry of f (f may then be
// freed). close checks every write and renames path.tmp over path only
// when exactly n_entries were written; abort (or any failure) leaves
// nothing at path. close and abort do nothing on a closed writer.
typedef struct {
    FILE *fp;
    char path[4096], tmp[4096];
    uint64_t hash;
    int ok;
    int n_expected, n_written;
} kf_statsfile_writer;

kf_status kf_statsfile_writer_open(kf_statsfile_writer *w, const char *path, uint64_t fingerprint,
                                   const kf_calib_protocol *p, int n_entries, kf_error *err);
// shape gives d, topk and eps; has_shift and n those of the accumulator written.
void kf_statsfile_writer_begin(kf_statsfile_writer *w, const char *name, const kf_moments *shape, int has_shift,
                               int64_t n);
void kf_statsfile_writer_data(kf_statsfile_writer *w, const void *p, size_t n);
void kf_statsfile_writer_end(kf_statsfile_writer *w);
void kf_statsfile_writer_entry(kf_statsfile_writer *w, const char *name, const kf_moments *m);
kf_status kf_statsfile_writer_add(kf_statsfile_writer *w, const kf_statsfile *f, kf_error *err);
kf_status kf_statsfile_writer_close(kf_statsfile_writer *w, kf_error *err);
void kf_statsfile_writer_abort(kf_statsfile_writer *w);
// The arrays of m in file order (shift, sum, sxx, n_pos, n_nz, sum_abs, max,
// min, then coact when topk > 0) into p and their byte counts into n (9
// each); returns how many.
int kf_statsfile_entry_arrays(const kf_moments *m, const void **p, size_t *n);

// f must be freed or fresh; on failure it is left empty. The file's
// fingerprint must equal the given one and, when want is not NULL, its
// protocol must give the same windows as want ("stats.kfs was gathered with
// ctx 128 and no BOS; this run uses ctx 256 with BOS 1").
kf_status kf_statsfile_load(kf_statsfile *f, const char *path, uint64_t fingerprint, const kf_calib_protocol *want,
                            kf_error *err);

#endif
