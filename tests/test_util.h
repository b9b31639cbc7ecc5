// The smallest helpers every file-writing test needs: the source root (KF_ROOT,
// set by ctest), writing a whole file (exiting with the path on failure), and
// skips: a check whose data is absent calls kf_test_skip and returns; the
// program still runs its other checks and then exits with kf_test_status,
// 77 (ctest: skipped, SKIP_RETURN_CODE) when nothing failed but something
// was skipped, so a skip is never reported as a pass.
#ifndef KF_TEST_UTIL_H
#define KF_TEST_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <sys/stat.h>

#include "core/rng.h"

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

// The tests' random stream (core/rng.h): one per program, the same every run.
static inline kf_rng *kf_test_rng(void) {
    static kf_rng r;
    static bool seeded;
    if (!seeded) kf_rng_seed(&r, 12345), seeded = true;
    return &r;
}

static inline double kf_test_urand(void) { return 2 * kf_rng_uniform(kf_test_rng()) - 1; } // [-1, 1)

// n token ids uniform in [lo, hi), from a stream of their own.
static inline void kf_test_random_ids(int32_t *ids, int n, int lo, int hi, uint64_t seed) {
    kf_rng r;
    kf_rng_seed(&r, seed);
    for (int i = 0; i < n; i++) ids[i] = lo + kf_rng_below(&r, hi - lo);
}

static inline int *kf_test_n_skipped(void) {
    static int n;
    return &n;
}

__attribute__((format(printf, 1, 2))) static inline void kf_test_skip(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("SKIP: ");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    ++*kf_test_n_skipped();
}

// True when path exists; else records a skip naming it.
static inline bool kf_test_have(const char *path) {
    struct stat st;
    if (stat(path, &st) == 0) return true;
    kf_test_skip("%s not found (the shared data folder sits beside the repository)", path);
    return false;
}

// Exit status of a test program from cmocka's count of failed tests.
static inline int kf_test_status(int n_failed) { return n_failed ? n_failed : *kf_test_n_skipped() ? 77 : 0; }

#endif
