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

/* "No server" in the u16 server fields of flow entries and bucket tables. */
#define LB_RL_NO_SERVER_U16 0xFFFF

/* One flow-table entry: exactly one 64-byte cache line. The full key is
 * stored, so two flows never alias; tags[] holds (hash >> 32) | 1 for a cheap
 * first comparison (0 = slot free). */
typedef struct
{
  lb_rl_5tuple_t key; /* 40 B */
  double first_seen;  /* s: the SYN that created the entry */
  double last_seen;   /* s: last packet; for CLOSED entries the close time */
  uint32_t gen;	      /* server generation at creation (stale => server removed) */
  uint16_t server;    /* 0 .. LB_RL_MAX_SERVERS-1 (was u8 + a pad byte: same 64 B) */
  uint8_t state;      /* LB_RL_FLOW_SYN / _EST / _CLOSED */
  uint8_t pad;
} lb_rl_flow_t;

/* Weight tables: everything the new-flow policies read. Built off the fast
 * path by lb_rl_tables_rebuild into the inactive buffer and published with a
 * release store of ctx->wt. Arrays are allocated at create, sized by max_servers
 * (elig, alias, thr, inv_w) or ecmp_buckets (ecmp, wmap). */
typedef struct
{
  uint32_t n_elig;  /* eligible = present, not drained, weight > 0 */
  uint16_t *elig;   /* eligible server indices, ascending */
  uint16_t *alias;  /* Vose alias: column -> alternative server */
  uint64_t *thr;    /* keep column j's own server if u32 < thr[j] (thr <= 2^32) */
  double *inv_w;    /* per server: 1/w (0 if not eligible) for SED */
  uint16_t *ecmp;   /* ecmp_buckets entries: server or LB_RL_NO_SERVER_U16 */
  uint16_t *wmap;   /* ecmp_buckets entries, server i holding its weight's share of
		     * them: forwards untracked flows */
} lb_rl_wtab_t;

/* Work arrays of the table rebuild (off the fast path), on the heap and sized by
 * max_servers: a VPP process node has a stack of a few tens of KiB, and at 4096
 * servers these arrays are ~150 KiB. */
typedef struct
{
  uint32_t max;	/* entries of every array */
  double *w;	/* weights of the eligible servers, in elig order */
  double *w_by_server;
  double *p;	/* alias: scaled probabilities */
  double *frac; /* wmap: fractional parts of the quotas */
  uint32_t *small, *large;	/* alias work lists */
  uint32_t *next, *offset, *skip; /* Maglev permutation state */
  uint32_t *quota, *have, *order; /* wmap quotas, buckets held, servers by remainder */
} lb_rl_work_t;

/* Tournament (segment) tree over the eligible list for LSQ/SED at large n: leaf j
 * (j < n_elig) holds the score of elig[j], padding leaves +inf with count 0; an inner
 * node holds the minimum of its subtree and how many leaves attain it. A pick draws
 * k = rng_bounded(count) when count > 1 and descends to the k-th tied leaf in
 * eligible order: the same server and the same RNG draws as the linear scan. */
typedef struct
{
  int on;	  /* maintained: LSQ or SED and n_elig > scan_max */
  int sed;	  /* score = (load + 1) / w (SED), else load (LSQ) */
  uint32_t leaves;  /* P: power of two >= n_elig (0 when off) */
  uint32_t cap;	  /* leaves allocated: power of two >= max_servers */
  double *key;	  /* 2 * cap: node 1 is the root, leaf j is node P + j */
  uint32_t *cnt;  /* 2 * cap */
  uint16_t *pos;  /* per server: its leaf (position in elig) or LB_RL_NO_SERVER_U16 */
} lb_rl_tree_t;

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

  /* Per-server state, arrays of max_servers entries (one allocation). */
  uint32_t n_words;   /* u64 words of the server bitmaps: (max_servers + 63) / 64 */
  uint64_t *present;  /* bitmap, bit i of word i/64 = server i */
  uint64_t *drained;  /* bitmap */
  uint32_t *gen;
  double *static_w;
  double *cur_w; /* weights in force (0 for absent servers) */
  /* n_flow_on gauges, contiguous so LSQ/SED scans stay cheap;
   * sc[i].n_flow_on / n_flow_pending are filled from here by lb_rl_server_counters. */
  int64_t *n_on;
  /* established + pending (SYN-state) flows per server: the load LSQ/SED score, one
   * array so their scan stays one pass; pending = n_load - n_on. Change it only through
   * lb_rl_load_add, which keeps the tournament tree in step. */
  int64_t *n_load;
  lb_rl_server_counters_t *sc; /* n_flow_on unused here */
  uint32_t (*res_filled)[LB_RL_N_RES];
  lb_rl_counters_t c;

  uint32_t scan_max;  /* LSQ/SED scan up to this many eligible servers (LB_RL_SCAN_MAX) */
  uint16_t *ties;     /* max_servers: tie list of a scan over more than LB_RL_SCAN_MAX */
  lb_rl_tree_t tree;
  lb_rl_work_t work;

  lb_rl_sample_t *res; /* [server][kind][reservoir_size] */
};

/* Bit i of a server bitmap. */
static inline int
lb_rl_bit (const uint64_t *bm, uint32_t i)
{
  return (int) ((bm[i >> 6] >> (i & 63)) & 1);
}

static inline void
lb_rl_bit_set (uint64_t *bm, uint32_t i)
{
  bm[i >> 6] |= 1ULL << (i & 63);
}

static inline void
lb_rl_bit_clear (uint64_t *bm, uint32_t i)
{
  bm[i >> 6] &= ~(1ULL << (i & 63));
}

/* lb_rl_core.c */
void lb_rl_set_error (const char *msg);

/* lb_rl_tables.c: rebuild eligible list, 1/w, alias and ECMP tables from
 * ctx->present/drained/cur_w into the inactive buffer and publish it. */
void lb_rl_tables_rebuild (lb_rl_ctx_t *ctx);
/* Work arrays for up to max servers; 0 on success, -1 out of memory. */
int lb_rl_work_alloc (lb_rl_work_t *wk, uint32_t max);
void lb_rl_work_free (lb_rl_work_t *wk);
/* Maglev-style fill of an ECMP table of m (power of two) buckets over the
 * n servers in elig[] (n <= wk->max): every server gets floor(m/n) or ceil(m/n)
 * buckets when n <= m. */
void lb_rl_ecmp_fill (uint16_t *buckets, uint32_t m, const uint16_t *elig, uint32_t n,
		      lb_rl_work_t *wk);
/* Vose alias table over weights w[0..n-1] (sum > 0, n <= wk->max): fills thr[] and
 * alias[] where alias[] holds values from idx[]. */
void lb_rl_alias_build (const double *w, const uint16_t *idx, uint32_t n, uint64_t *thr,
			uint16_t *alias, lb_rl_work_t *wk);
/* Update map (m buckets, power of two) so that server i holds its largest-remainder
 * quota of m * w[i] / sum(w) buckets (w has max_servers entries, 0 = not eligible),
 * moving only buckets of servers above their new quota: the fewest moves any table
 * with these quotas allows. All zero weights empty the map. */
void lb_rl_wmap_update (uint16_t *map, uint32_t m, const double *w, uint32_t max_servers,
			lb_rl_work_t *wk);
/* Choose a server for a new flow by the current policy; -1 if none eligible. */
int32_t lb_rl_policy_choose (lb_rl_ctx_t *ctx, uint64_t hash);

/* lb_rl_policy.c: the tournament tree. Rebuild (O(n)) after the active tables or the
 * policy changed; update (O(log n)) after n_load[srv] changed. */
void lb_rl_tree_rebuild (lb_rl_ctx_t *ctx);
void lb_rl_tree_update (lb_rl_ctx_t *ctx, uint32_t srv);
/* White-box knob (tests, benchmarks): LSQ/SED scan up to scan_max eligible servers and
 * use the tree above; LB_RL_SCAN_MAX by default. */
void lb_rl_set_scan_max (lb_rl_ctx_t *ctx, uint32_t scan_max);

/* Every change of a server's load goes through here: the tree (when on) follows. */
static inline void
lb_rl_load_add (lb_rl_ctx_t *ctx, uint32_t srv, int64_t delta)
{
  ctx->n_load[srv] += delta;
  if (LB_RL_UNLIKELY (ctx->tree.on))
    lb_rl_tree_update (ctx, srv);
}

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
