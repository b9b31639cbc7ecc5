// The smallest helpers every file-writing test needs: the source root (KF_ROOT,
// set by ctest) and writing a whole file, exiting with the path on failure.
#ifndef KF_TEST_UTIL_H
#define KF_TEST_UTIL_H

#include <stdio.h>
#include <stdlib.h>

static inline const char *kf_test_root(void) {
    const char *r = getenv("KF_ROOT");
    return r ? r : ".";
}

static inline void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, n, f) != n || fclose(f) != 0) {
        perror(path);
        exit(1);
    }
}

#endif
