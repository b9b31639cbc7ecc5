// Seeded pseudo-random numbers: the one generator of the library, its tests
// and benches. kf_rng is xoshiro256** (Blackman & Vigna), its state filled
// from the seed by splitmix64 (Steele, Lea & Flood). kf_rng_splitmix64 is the
// seeding step, exposed because a 64-bit counter is a stream of its own where
// one state word suffices (analyze's token sample, moefy's router
// initialisation: their sequences are part of recorded outputs).
#ifndef KF_CORE_RNG_H
#define KF_CORE_RNG_H

#include <stdint.h>

typedef struct {
    uint64_t s[4];
} kf_rng;

uint64_t kf_rng_splitmix64(uint64_t *state); // advances *state, returns the next value
void kf_rng_seed(kf_rng *r, uint64_t seed);
uint64_t kf_rng_u64(kf_rng *r);
double kf_rng_uniform(kf_rng *r);     // [0, 1), 53 random bits
int kf_rng_below(kf_rng *r, int n);   // [0, n), 0 < n < 2^31
double kf_rng_normal(kf_rng *r);      // standard normal (Box-Muller)
double kf_rng_unit(uint64_t bits);    // [0, 1) from the top 53 bits of a 64-bit value

#endif
