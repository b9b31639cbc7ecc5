#include "arch/rope.h"

#include <string.h>

// Within a head of D rows, interleaved row 2i + j holds rotate-half row j*D/2 + i.
int64_t kf_rope_rotate_half_row(int64_t r, int64_t head_dim) {
    int64_t h = r / head_dim, k = r % head_dim;
    return h * head_dim + (k % 2) * (head_dim / 2) + k / 2;
}

void kf_rope_interleaved_order(int64_t n_heads, int64_t head_dim, int64_t *order) {
    for (int64_t r = 0; r < n_heads * head_dim; r++) order[r] = kf_rope_rotate_half_row(r, head_dim);
}

void kf_rope_rows_from_interleaved(const float *src, float *dst, int64_t n_heads, int64_t head_dim, int64_t ncols) {
    for (int64_t r = 0; r < n_heads * head_dim; r++)
        memcpy(dst + kf_rope_rotate_half_row(r, head_dim) * ncols, src + r * ncols, sizeof(float) * (size_t)ncols);
}
