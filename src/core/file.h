// Read-only memory maps and whole-file reads, with the size known so that
// every parser can bound-check offsets before touching bytes.
#ifndef KF_CORE_FILE_H
#define KF_CORE_FILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/status.h"

typedef struct {
    void *data;   // NULL for an empty file
    size_t size;
} kf_mmap;

kf_status kf_mmap_open(kf_mmap *m, const char *path, kf_error *err);
void kf_mmap_close(kf_mmap *m);

// Reads a whole file into a malloc'd, NUL-terminated buffer (*len excludes the NUL).
kf_status kf_file_read_all(const char *path, char **buf, size_t *len, kf_error *err);
bool kf_file_exists(const char *path);
// Starts a file written under a temporary name: opens path.tmp (its name
// into tmp, cap bytes) for kf_file_commit to finish.
kf_status kf_file_begin(const char *path, char *tmp, size_t cap, FILE **f, kf_error *err);
// Finishes a file written under a temporary name: closes f, then renames tmp
// to path if every write succeeded (ok) and the close did too, else removes
// tmp. A failed write thus never leaves a half-written file at path.
kf_status kf_file_commit(FILE *f, bool ok, const char *tmp, const char *path, kf_error *err);
bool kf_dir_exists(const char *path);
// dir + "/" + name into out; returns false if it does not fit.
bool kf_path_join(char *out, size_t n, const char *dir, const char *name);
// A descriptor of an unlinked temporary file (tmpfile, under TMPDIR); -1 when none can be made.
int kf_file_temp_fd(void);
// pread (write false) or pwrite of exactly n bytes at off; false on an error or a short file.
bool kf_file_pio(int fd, void *buf, size_t n, int64_t off, bool write);
// True when [off, off+len) lies inside [0, size), without overflow.
static inline bool kf_range_ok(size_t off, size_t len, size_t size) {
    return off <= size && len <= size - off;
}

#endif
