// llama2.c checkpoint header (llama2c.h).
#include "formats/llama2c.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

// Total floats the header implies, or -1 on overflow.
static int64_t expected_floats(const kf_l2c_header *h, bool shared) {
    int64_t C = h->dim, F = h->hidden_dim, L = h->n_layers, V = h->vocab_size, T = h->seq_len;
    int64_t KV = C / h->n_heads * h->n_kv_heads, Dh = C / h->n_heads;
    // Each factor is below 2^31 and at most three are multiplied, so only
    // the sums and triple products need care: compute in double first.
    double approx = (double)V * C * (shared ? 1 : 2) +
                    (double)L * (2.0 * C + 2.0 * C * C + 2.0 * KV * C + 3.0 * F * C) + C + (double)T * Dh;
    if (approx > 4e18) return -1;
    return V * C * (shared ? 1 : 2) + L * (2 * C + 2 * C * C + 2 * KV * C + 3 * F * C) + C + T * Dh;
}

kf_status kf_l2c_read_header(const kf_mmap *map, const char *path, kf_l2c_header *h, kf_error *err) {
    if (map->size < KF_L2C_HEADER_BYTES)
        return kf_error_set(err, KF_ERR_FORMAT, "%s: %zu bytes is too short for a llama2.c header", path, map->size);
    int32_t v[7];
    memcpy(v, map->data, sizeof v);
    *h = (kf_l2c_header){v[0], v[1], v[2], v[3], v[4], v[5] == INT32_MIN ? 0 : v[5] < 0 ? -v[5] : v[5], v[6], v[5] > 0};
    if (h->dim <= 0 || h->hidden_dim <= 0 || h->n_layers <= 0 || h->n_heads <= 0 || h->n_kv_heads <= 0 ||
        h->vocab_size <= 0 || h->seq_len <= 0 || h->dim % h->n_heads != 0 || h->n_heads % h->n_kv_heads != 0 ||
        (h->dim / h->n_heads) % 2 != 0)
        return kf_error_set(err, KF_ERR_FORMAT,
                            "%s: bad llama2.c header (dim %d, hidden %d, layers %d, heads %d/%d, vocab %d, seq_len %d)",
                            path, v[0], v[1], v[2], v[3], v[4], v[5], v[6]);
    int64_t n = expected_floats(h, h->shared);
    if (n < 0 || (uint64_t)n > (SIZE_MAX - KF_L2C_HEADER_BYTES) / 4 || map->size != KF_L2C_HEADER_BYTES + (size_t)n * 4)
        return kf_error_set(err, KF_ERR_FORMAT,
                            "%s: file is %zu bytes but its llama2.c header (dim %d, hidden %d, layers %d, heads %d/%d, "
                            "vocab %d, seq_len %d) implies %.0f",
                            path, map->size, v[0], v[1], v[2], v[3], v[4], v[5], v[6],
                            n < 0 ? INFINITY : KF_L2C_HEADER_BYTES + (double)n * 4);
    return KF_OK;
}
