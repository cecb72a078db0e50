/*
 * lb_rl_hash.h — 64-bit hash of a 5-tuple.
 *
 * The 40-byte key is read as four 64-bit words (src[0..7], src[8..15],
 * dst[0..7], dst[8..15]) plus one word packing src_port | dst_port << 16 |
 * proto << 32 (the pad bytes are ignored, so callers need not zero them).
 * Each word goes through one xxHash64-style round (acc = rotl(acc ^ w * P2, 31)
 * * P1), then the murmur3 fmix64 finaliser avalanches the result: every input
 * bit flips each output bit with probability ~1/2. Constants are fixed (no
 * per-context seed) so every load balancer hashes a flow identically; this is
 * not a keyed/cryptographic hash and is not meant to resist hash flooding.
 *
 * Users of the 64 bits: flow-table home slot = h & (table_size-1), ECMP bucket
 * = h & (ecmp_buckets-1), flow-table tag = (h >> 32) | 1.
 */
#ifndef LB_RL_HASH_H
#define LB_RL_HASH_H

#include <stdint.h>
#include <string.h>

#include "lb_rl_core.h"

#define LB_RL_HASH_P1 0x9E3779B185EBCA87ULL
#define LB_RL_HASH_P2 0xC2B2AE3D27D4EB4FULL

static inline uint64_t
lb_rl_load_u64 (const uint8_t *p)
{
  uint64_t v;
  memcpy (&v, p, sizeof v);
  return v;
}

static inline uint64_t
lb_rl_hash_round (uint64_t acc, uint64_t w)
{
  acc ^= w * LB_RL_HASH_P2;
  acc = (acc << 31) | (acc >> 33);
  return acc * LB_RL_HASH_P1;
}

static inline uint64_t
lb_rl_fmix64 (uint64_t h)
{
  h ^= h >> 33;
  h *= 0xFF51AFD7ED558CCDULL;
  h ^= h >> 33;
  h *= 0xC4CEB9FE1A85EC53ULL;
  h ^= h >> 33;
  return h;
}

static inline uint64_t
lb_rl_hash_5tuple (const lb_rl_5tuple_t *k)
{
  uint64_t e = (uint64_t) k->src_port | ((uint64_t) k->dst_port << 16) |
	       ((uint64_t) k->proto << 32);
  uint64_t h = 0x27D4EB2F165667C5ULL;
  h = lb_rl_hash_round (h, lb_rl_load_u64 (k->src));
  h = lb_rl_hash_round (h, lb_rl_load_u64 (k->src + 8));
  h = lb_rl_hash_round (h, lb_rl_load_u64 (k->dst));
  h = lb_rl_hash_round (h, lb_rl_load_u64 (k->dst + 8));
  h = lb_rl_hash_round (h, e);
  return lb_rl_fmix64 (h);
}

/* Key equality over the fields that identify a flow (pad ignored). */
static inline int
lb_rl_key_eq (const lb_rl_5tuple_t *a, const lb_rl_5tuple_t *b)
{
  return lb_rl_load_u64 (a->src) == lb_rl_load_u64 (b->src) &&
	 lb_rl_load_u64 (a->src + 8) == lb_rl_load_u64 (b->src + 8) &&
	 lb_rl_load_u64 (a->dst) == lb_rl_load_u64 (b->dst) &&
	 lb_rl_load_u64 (a->dst + 8) == lb_rl_load_u64 (b->dst + 8) &&
	 a->src_port == b->src_port && a->dst_port == b->dst_port &&
	 a->proto == b->proto;
}

#endif /* LB_RL_HASH_H */
