/*
 * lb_rl_internal.h — private layout of lb_rl_ctx_t and helpers shared by the
 * core's .c files (and by white-box unit tests). Not part of the API.
 */
#ifndef LB_RL_INTERNAL_H
#define LB_RL_INTERNAL_H

#include <stdint.h>

#include "lb_rl_core.h"
#include "lb_rl_rng.h"

#if defined(__GNUC__) || defined(__clang__)
#define LB_RL_LIKELY(x) __builtin_expect (!!(x), 1)
#define LB_RL_UNLIKELY(x) __builtin_expect (!!(x), 0)
#define LB_RL_PREFETCH(p) __builtin_prefetch ((p), 1, 3)
#define LB_RL_PUBLISH(dst, v) __atomic_store_n (&(dst), (v), __ATOMIC_RELEASE)
#define LB_RL_ACQUIRE(src) __atomic_load_n (&(src), __ATOMIC_ACQUIRE)
#define LB_RL_THREAD_LOCAL __thread
#else
#define LB_RL_LIKELY(x) (x)
#define LB_RL_UNLIKELY(x) (x)
#define LB_RL_PREFETCH(p) ((void) (p))
#define LB_RL_PUBLISH(dst, v) ((dst) = (v))
#define LB_RL_ACQUIRE(src) (src)
#define LB_RL_THREAD_LOCAL
#endif

#define LB_RL_NO_SERVER_U8 0xFF

/* One flow-table entry: exactly one 64-byte cache line. The full key is
 * stored, so two flows never alias; tags[] holds (hash >> 32) | 1 for a cheap
 * first comparison (0 = slot free). */
typedef struct
{
  lb_rl_5tuple_t key; /* 40 B */
  double first_seen;  /* s: the SYN that created the entry */
  double last_seen;   /* s: last packet; for CLOSED entries the close time */
  uint32_t gen;	      /* server generation at creation (stale => server removed) */
  uint8_t server;
  uint8_t state; /* LB_RL_FLOW_SYN / _EST / _CLOSED */
  uint8_t pad[2];
} lb_rl_flow_t;

/* Weight tables: everything the new-flow policies read. Built off the fast
 * path by lb_rl_tables_rebuild into the inactive buffer and published with a
 * release store of ctx->wt. */
typedef struct
{
  uint32_t n_elig;			/* eligible = present, not drained, weight > 0 */
  uint8_t elig[LB_RL_MAX_SERVERS];	/* eligible server indices, ascending */
  uint8_t alias[LB_RL_MAX_SERVERS];	/* Vose alias: column -> alternative server */
  uint64_t thr[LB_RL_MAX_SERVERS];	/* keep column j's own server if u32 < thr[j] (thr <= 2^32) */
  double inv_w[LB_RL_MAX_SERVERS];	/* per server: 1/w (0 if not eligible) for SED */
  uint8_t *ecmp;			/* ecmp_buckets entries: server or LB_RL_NO_SERVER_U8 */
  uint8_t *wmap;			/* ecmp_buckets entries, server i holding its weight's
					 * share of them: forwards untracked flows */
} lb_rl_wtab_t;

struct lb_rl_ctx
{
  lb_rl_config_t cfg;
  uint32_t table_mask;
  uint32_t ecmp_mask;
  uint32_t probe; /* min (LB_RL_PROBE_LEN, table_size) */
  uint32_t expire_cursor;
  uint32_t *tags;      /* table_size */
  /* table_size: a lower bound, in ticks of 1/256 s, of when a slot's entry may first
   * be reclaimed (last_seen + its idle limit, set on insert and close, refreshed
   * lazily). Scans for reclaimable entries (a full probe window, the sweep) read this
   * compact array and touch only the entries it names; an entry's own times decide. */
  uint32_t *due;
  int lost_scan; /* a server was removed: scans check every entry's generation until the
		  * sweep has completed a full round */
  uint32_t lost_scan_left; /* slots the sweep still has to visit in that round */
  lb_rl_flow_t *flows; /* table_size, 64-byte aligned */

  lb_rl_wtab_t *wt; /* active tables (fast path reads with acquire) */
  lb_rl_wtab_t wtab[2];

  lb_rl_rng_t rng;
  uint64_t sample_thr; /* offer a sample if rng < sample_thr */
  int sample_all;      /* sample_prob >= 1: skip the draw */

  uint64_t present;
  uint64_t drained;
  uint32_t gen[LB_RL_MAX_SERVERS];
  double static_w[LB_RL_MAX_SERVERS];
  double cur_w[LB_RL_MAX_SERVERS]; /* weights in force (0 for absent servers) */

  /* n_flow_on gauges, contiguous (8 cache lines) so LSQ/SED scans stay cheap;
   * sc[i].n_flow_on / n_flow_pending are filled from here by lb_rl_server_counters. */
  int64_t n_on[LB_RL_MAX_SERVERS];
  /* established + pending (SYN-state) flows per server: the load LSQ/SED score, one
   * array so their scan stays one pass over 8 cache lines; pending = n_load - n_on */
  int64_t n_load[LB_RL_MAX_SERVERS];
  lb_rl_server_counters_t sc[LB_RL_MAX_SERVERS]; /* n_flow_on unused here */
  lb_rl_counters_t c;

  uint32_t res_filled[LB_RL_MAX_SERVERS][LB_RL_N_RES];
  lb_rl_sample_t *res; /* [server][kind][reservoir_size] */
};

/* lb_rl_core.c */
void lb_rl_set_error (const char *msg);

/* lb_rl_tables.c: rebuild eligible list, 1/w, alias and ECMP tables from
 * ctx->present/drained/cur_w into the inactive buffer and publish it. */
void lb_rl_tables_rebuild (lb_rl_ctx_t *ctx);
/* Maglev-style fill of an ECMP table of m (power of two) buckets over the
 * n servers in elig[]: every server gets floor(m/n) or ceil(m/n) buckets. */
void lb_rl_ecmp_fill (uint8_t *buckets, uint32_t m, const uint8_t *elig, uint32_t n);
/* Vose alias table over weights w[0..n-1] (sum > 0): fills thr[] and alias[]
 * where alias[] holds values from idx[]. */
void lb_rl_alias_build (const double *w, const uint8_t *idx, uint32_t n, uint64_t *thr,
			uint8_t *alias);
/* Update map (m buckets, power of two) so that server i holds its largest-remainder
 * quota of m * w[i] / sum(w) buckets (w has max_servers entries, 0 = not eligible),
 * moving only buckets of servers above their new quota: the fewest moves any table
 * with these quotas allows. All zero weights empty the map. */
void lb_rl_wmap_update (uint8_t *map, uint32_t m, const double *w, uint32_t max_servers);
/* Choose a server for a new flow by the current policy; -1 if none eligible. */
int32_t lb_rl_policy_choose (lb_rl_ctx_t *ctx, uint64_t hash);

/* Slot j (0 .. probe-1) of the probe group of home: home itself first, then the rest
 * of its aligned group of probe slots, wrapping. */
static inline uint32_t
lb_rl_group_slot (const lb_rl_ctx_t *ctx, uint32_t home, uint32_t j)
{
  uint32_t m = ctx->probe - 1;
  return (home & ~m) | ((home + j) & m);
}

/* Reservoir: offer one (t, v) sample to server srv's reservoir of kind. */
static inline void
lb_rl_res_add (lb_rl_ctx_t *ctx, uint32_t srv, lb_rl_res_kind_t kind, double t, double v)
{
  uint32_t k = ctx->cfg.reservoir_size;
  uint32_t *filled = &ctx->res_filled[srv][kind];
  uint32_t slot;
  lb_rl_sample_t *s;
  if (!ctx->sample_all && lb_rl_rng_next (&ctx->rng) >= ctx->sample_thr)
    return;
  ctx->sc[srv].n_samples[kind]++;
  /* The first K samples fill slots in order; afterwards each sample
   * overwrites a uniformly random slot (recency-biased, not Algorithm R). */
  slot = (*filled < k) ? (*filled)++ : lb_rl_rng_bounded (&ctx->rng, k);
  s = &ctx->res[((uint64_t) srv * LB_RL_N_RES + kind) * k + slot];
  s->t = t;
  s->v = v;
}

#endif /* LB_RL_INTERNAL_H */
