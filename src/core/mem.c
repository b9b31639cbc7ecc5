#define _DEFAULT_SOURCE // madvise
#include "core/mem.h"

#include <stdlib.h>
#include <sys/mman.h>

#define KF_HUGE_PAGE ((size_t)2 << 20)

void *kf_alloc_large(size_t bytes) {
    if (bytes < KF_HUGE_PAGE) return aligned_alloc(64, (bytes + 63) & ~(size_t)63);
    size_t n = (bytes + KF_HUGE_PAGE - 1) & ~(KF_HUGE_PAGE - 1);
    void *p = aligned_alloc(KF_HUGE_PAGE, n);
#ifdef MADV_HUGEPAGE
    if (p) madvise(p, n, MADV_HUGEPAGE);
#endif
    return p;
}
