// Allocation of large weight buffers. Decode streams every weight once per
// token, so with 4 KiB pages it takes a TLB miss every 4 KiB; buffers of 2 MiB
// or more are therefore 2 MiB-aligned and marked for transparent huge pages
// (madvise, best effort: where THP is off this is a plain allocation).
#ifndef KF_CORE_MEM_H
#define KF_CORE_MEM_H

#include <stddef.h>

// At least 64-byte aligned, uninitialised; release with free(). NULL on failure.
void *kf_alloc_large(size_t bytes);

#endif
