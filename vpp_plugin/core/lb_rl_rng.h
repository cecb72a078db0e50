/*
 * lb_rl_rng.h — the core's only source of randomness: xoshiro256** seeded
 * through splitmix64 (Blackman & Vigna, "Scrambled linear pseudorandom number
 * generators", 2018). Header-only, static inline, no global state.
 */
#ifndef LB_RL_RNG_H
#define LB_RL_RNG_H

#include <stdint.h>

typedef struct
{
  uint64_t s[4];
} lb_rl_rng_t;

static inline uint64_t
lb_rl_rotl64 (uint64_t x, int k)
{
  return (x << k) | (x >> (64 - k));
}

/* splitmix64 step: advances *state and returns a well-mixed 64-bit value. */
static inline uint64_t
lb_rl_splitmix64 (uint64_t *state)
{
  uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

/* Seed all 256 bits of state from one 64-bit seed (never all-zero). */
static inline void
lb_rl_rng_seed (lb_rl_rng_t *r, uint64_t seed)
{
  uint64_t sm = seed;
  int i;
  for (i = 0; i < 4; i++)
    r->s[i] = lb_rl_splitmix64 (&sm);
}

/* xoshiro256**: next 64 uniformly distributed bits. */
static inline uint64_t
lb_rl_rng_next (lb_rl_rng_t *r)
{
  uint64_t *s = r->s;
  uint64_t result = lb_rl_rotl64 (s[1] * 5, 7) * 9;
  uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = lb_rl_rotl64 (s[3], 45);
  return result;
}

/* Integer in [0, n) for 1 <= n <= 2^32 by Lemire's multiply-shift on the
 * top 32 bits (no division). The bias is at most n / 2^32 (1.5e-8 for n = 64),
 * far below anything the statistical tests can resolve. */
static inline uint32_t
lb_rl_rng_bounded (lb_rl_rng_t *r, uint32_t n)
{
  return (uint32_t) (((lb_rl_rng_next (r) >> 32) * (uint64_t) n) >> 32);
}

/* Uniform double in [0, 1) with 53 random bits. */
static inline double
lb_rl_rng_unit (lb_rl_rng_t *r)
{
  return (double) (lb_rl_rng_next (r) >> 11) * (1.0 / 9007199254740992.0);
}

#endif /* LB_RL_RNG_H */
