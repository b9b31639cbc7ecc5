// Shared windows between two token streams (overlap.h).
#include "train/overlap.h"

#include <stdlib.h>

// Polynomial rolling hash of w ids mod 2^64 (ids shifted by one so that id 0 counts).
#define KF_HASH_MUL 0x100000001b3ULL

static int cmp_u64(const void *a, const void *b) {
    const uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static uint64_t hash_window(const int32_t *ids, int w) {
    uint64_t h = 0;
    for (int i = 0; i < w; i++) h = h * KF_HASH_MUL + (uint64_t)(uint32_t)ids[i] + 1;
    return h;
}

kf_status kf_train_overlap(const int32_t *train, int64_t n_train, const int32_t *eval, int64_t n_eval, int w,
                           int64_t *n_shared, int64_t *n_windows, kf_error *err) {
    *n_shared = 0;
    *n_windows = w > 0 ? n_eval / w : 0;
    if (w < 1) return kf_error_set(err, KF_ERR_ARG, "overlap: window of %d tokens", w);
    if (n_train < w || *n_windows == 0) return KF_OK;
    const int64_t n = n_train - w + 1;
    uint64_t *h = malloc(sizeof *h * (size_t)n);
    if (!h) return kf_error_set(err, KF_ERR_NOMEM, "overlap: out of memory for %lld window hashes", (long long)n);
    uint64_t top = 1; // KF_HASH_MUL^(w-1): weight of the id leaving the window
    for (int i = 1; i < w; i++) top *= KF_HASH_MUL;
    h[0] = hash_window(train, w);
    for (int64_t i = 1; i < n; i++)
        h[i] = (h[i - 1] - top * ((uint64_t)(uint32_t)train[i - 1] + 1)) * KF_HASH_MUL +
               (uint64_t)(uint32_t)train[i + w - 1] + 1;
    qsort(h, (size_t)n, sizeof *h, cmp_u64);
    for (int64_t k = 0; k < *n_windows; k++) {
        const uint64_t x = hash_window(eval + k * w, w);
        if (bsearch(&x, h, (size_t)n, sizeof *h, cmp_u64)) ++*n_shared;
    }
    free(h);
    return KF_OK;
}
