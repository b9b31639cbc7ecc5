#include "core/rng.h"

#include <math.h>

uint64_t kf_rng_splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void kf_rng_seed(kf_rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = kf_rng_splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t kf_rng_u64(kf_rng *r) {
    uint64_t *s = r->s, out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

double kf_rng_unit(uint64_t bits) { return (double)(bits >> 11) * 0x1.0p-53; }

double kf_rng_uniform(kf_rng *r) { return kf_rng_unit(kf_rng_u64(r)); }

// Multiply-shift on the top 32 bits: no modulo bias worth a division.
int kf_rng_below(kf_rng *r, int n) { return (int)(((kf_rng_u64(r) >> 32) * (uint64_t)n) >> 32); }

double kf_rng_normal(kf_rng *r) {
    double u = kf_rng_uniform(r), v = kf_rng_uniform(r);
    return sqrt(-2.0 * log(1.0 - u)) * cos(6.283185307179586 * v);
}
