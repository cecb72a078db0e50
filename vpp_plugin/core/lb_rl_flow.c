/*
 * lb_rl_flow.c — the fast path: flow table lookup, TCP state machine,
 * per-server counters and reservoir samples, new-flow decisions, the batch
 * loop and the expiry sweep.
 *
 * Flow table: table_size slots (power of two) of 64-byte entries plus parallel
 * u32 tag and due-hint arrays. A flow lives in the group of PROBE_LEN slots
 * (16: one 64-byte line of tags, one of hints) that holds its home slot
 * hash & mask, preferably in the home slot itself (a scan starts there and
 * wraps within the group). Lookup scans the whole group (no early stop on an
 * empty slot), so freeing a slot needs no tombstone. Expired, linger-ended and
 * lost entries are freed lazily when met (lookup or insertion) and by
 * lb_rl_expire.
 */
#include "lb_rl_hash.h"
#include "lb_rl_internal.h"

#define LB_RL_NO_SLOT UINT32_MAX

static inline int32_t
lb_rl_forward (lb_rl_ctx_t *ctx, uint32_t srv, uint32_t len)
{
  ctx->sc[srv].packets++;
  ctx->sc[srv].bytes += len;
  return (int32_t) srv;
}

/* Time in ticks of 1/256 s, wrapping modulo 2^32 (194 days): due hints are compared
 * by signed difference, valid while a hint is within 97 days of now (the sweep
 * visits every hint that has passed long before that). */
#define LB_RL_TICKS_PER_S 256.0

static inline uint32_t
lb_rl_ticks (double t)
{
  return (uint32_t) (int64_t) (t * LB_RL_TICKS_PER_S);
}

/* Could slot s's entry be reclaimable at now_ticks = lb_rl_ticks (now)? False only
 * when it certainly is not: its due hint lies more than a tick ahead (the tick
 * covers rounding) and no server removal is pending. */
static inline int
lb_rl_maybe_due (const lb_rl_ctx_t *ctx, uint32_t s, uint32_t now_ticks)
{
  return ctx->lost_scan || (int32_t) (ctx->due[s] - now_ticks) <= 1;
}

static inline void
lb_rl_slot_free (lb_rl_ctx_t *ctx, uint32_t s)
{
  ctx->tags[s] = 0;
  ctx->flows[s].state = LB_RL_FLOW_NONE; /* the home-slot check below relies on it */
  ctx->c.tracked_flows--;
}

/* Idle time after which a live entry ends: pending (SYN) entries have their
 * own short timeout so unanswered SYNs stop counting toward their server. */
static inline double
lb_rl_idle_limit (const lb_rl_ctx_t *ctx, const lb_rl_flow_t *e)
{
  return LB_RL_LIKELY (e->state == LB_RL_FLOW_EST) ? ctx->cfg.flow_timeout_s
						  : ctx->cfg.syn_timeout_s;
}

/* End a live (SYN or EST) entry by idle timeout and free it. The flow's FCT
 * sample is last_seen - first_seen, stamped at detection time now. */
static void
lb_rl_flow_timeout (lb_rl_ctx_t *ctx, uint32_t s, double now)
{
  lb_rl_flow_t *e = &ctx->flows[s];
  if (e->state == LB_RL_FLOW_EST)
    {
      ctx->n_on[e->server]--;
      ctx->sc[e->server].n_flow_timeout++;
      lb_rl_res_add (ctx, e->server, LB_RL_RES_FCT, now, e->last_seen - e->first_seen);
    }
  lb_rl_load_add (ctx, e->server, -1); /* pending or established, it counted */
  ctx->c.timeouts++;
  lb_rl_slot_free (ctx, s);
}

/* Try to free occupied slot s: lost (server removed), closed past linger, or
 * live but idle past the timeout. Returns 1 if freed. */
static int
lb_rl_slot_reclaim (lb_rl_ctx_t *ctx, uint32_t s, double now)
{
  lb_rl_flow_t *e = &ctx->flows[s];
  if (e->gen != ctx->gen[e->server])
    {
      ctx->c.flows_lost++;
      lb_rl_slot_free (ctx, s);
      return 1;
    }
  if (e->state == LB_RL_FLOW_CLOSED)
    {
      if (now - e->last_seen > ctx->cfg.closed_linger_s)
	{
	  lb_rl_slot_free (ctx, s);
	  return 1;
	}
      ctx->due[s] = lb_rl_ticks (e->last_seen + ctx->cfg.closed_linger_s);
      return 0;
    }
  if (now - e->last_seen > lb_rl_idle_limit (ctx, e))
    {
      lb_rl_flow_timeout (ctx, s, now);
      return 1;
    }
  /* still live: the hint catches up with its packets since the last refresh */
  ctx->due[s] = lb_rl_ticks (e->last_seen + lb_rl_idle_limit (ctx, e));
  return 0;
}

static inline int32_t
lb_rl_process_hashed (lb_rl_ctx_t *ctx, double now, const lb_rl_5tuple_t *key, uint64_t h,
		      uint8_t flags, uint32_t len, int32_t forced)
{
  uint32_t tag = (uint32_t) (h >> 32) | 1u;
  uint32_t home = (uint32_t) h & ctx->table_mask;
  uint32_t free_slot = LB_RL_NO_SLOT, s = 0, j, now_ticks;
  int is_syn = (flags & (LB_RL_TCP_SYN | LB_RL_TCP_ACK | LB_RL_TCP_FIN | LB_RL_TCP_RST)) ==
	       LB_RL_TCP_SYN;
  lb_rl_flow_t *e;
  int32_t srv;
  uint16_t b;

  ctx->c.packets++;
  /* Most flows sit in their home slot: its entry alone (free slots have state NONE)
   * identifies them, without a look at the tags. Not for a SYN, which usually
   * starts a flow: the tags say where (if anywhere) it is. */
  e = &ctx->flows[home];
  if (LB_RL_LIKELY (!is_syn) && e->state != LB_RL_FLOW_NONE && lb_rl_key_eq (&e->key, key))
    {
      s = home;
      goto found;
    }
  for (j = 0; j < ctx->probe; j++)
    {
      uint32_t t;
      s = lb_rl_group_slot (ctx, home, j);
      t = ctx->tags[s];
      if (t == tag && LB_RL_LIKELY (lb_rl_key_eq (&ctx->flows[s].key, key)))
	goto found;
      if (t == 0 && free_slot == LB_RL_NO_SLOT)
	free_slot = s;
    }
  goto miss;

found:
  e = &ctx->flows[s];
  if (LB_RL_UNLIKELY (e->gen != ctx->gen[e->server]))
    {
      ctx->c.flows_lost++;
      goto free_and_miss;
    }
  if (LB_RL_UNLIKELY (e->state == LB_RL_FLOW_CLOSED))
    {
      /* Closed: keep forwarding (last ACK after FIN) until the linger ends;
       * a new SYN of the same key starts a fresh flow. */
      if (is_syn || now - e->last_seen > ctx->cfg.closed_linger_s)
	goto free_and_miss;
      return lb_rl_forward (ctx, e->server, len);
    }
  if (LB_RL_UNLIKELY (now - e->last_seen > lb_rl_idle_limit (ctx, e)))
    {
      lb_rl_flow_timeout (ctx, s, now);
      if (free_slot == LB_RL_NO_SLOT)
	free_slot = s;
      goto miss;
    }
  e->last_seen = now;
  if (LB_RL_UNLIKELY (flags & (LB_RL_TCP_FIN | LB_RL_TCP_RST)))
    {
      if (e->state == LB_RL_FLOW_EST)
	{
	  ctx->n_on[e->server]--;
	  ctx->sc[e->server].n_flow_closed++;
	  lb_rl_res_add (ctx, e->server, LB_RL_RES_FCT, now, now - e->first_seen);
	}
      lb_rl_load_add (ctx, e->server, -1);
      e->state = LB_RL_FLOW_CLOSED;
      /* the linger may end before the old hint: the hint must never be late */
      ctx->due[s] = lb_rl_ticks (now + ctx->cfg.closed_linger_s);
    }
  else if ((flags & (LB_RL_TCP_ACK | LB_RL_TCP_SYN)) == LB_RL_TCP_ACK)
    {
      if (LB_RL_LIKELY (e->state == LB_RL_FLOW_EST))
	lb_rl_res_add (ctx, e->server, LB_RL_RES_FLOW_DURATION, now, now - e->first_seen);
      else
	{
	  e->state = LB_RL_FLOW_EST;
	  ctx->n_on[e->server]++; /* pending -> established: the load stays */
	}
    }
  return lb_rl_forward (ctx, e->server, len);

free_and_miss:
  lb_rl_slot_free (ctx, s);
  if (free_slot == LB_RL_NO_SLOT)
    free_slot = s;

miss:
  if (is_syn)
    {
      /* Window full: reclaim an entry past its time, looking only at those whose
       * due hint says they may be (under a flood none is, and no entry is read). */
      if (free_slot == LB_RL_NO_SLOT)
	for (j = 0, now_ticks = lb_rl_ticks (now); j < ctx->probe; j++)
	  {
	    s = lb_rl_group_slot (ctx, home, j);
	    if (lb_rl_maybe_due (ctx, s, now_ticks) && lb_rl_slot_reclaim (ctx, s, now))
	      {
		free_slot = s;
		break;
	      }
	  }
      if (LB_RL_UNLIKELY (free_slot == LB_RL_NO_SLOT))
	{
	  ctx->c.untracked_full++;
	  goto hash_forward;
	}
      if (forced >= 0 && (uint32_t) forced < ctx->cfg.max_servers &&
	  lb_rl_bit (ctx->present, (uint32_t) forced))
	srv = forced;
      else
	srv = lb_rl_policy_choose (ctx, h);
      if (LB_RL_UNLIKELY (srv < 0))
	{
	  ctx->c.no_server++;
	  return LB_RL_E_NO_SERVER;
	}
      e = &ctx->flows[free_slot];
      e->key = *key;
      e->first_seen = now;
      e->last_seen = now;
      e->gen = ctx->gen[srv];
      e->server = (uint16_t) srv;
      e->state = LB_RL_FLOW_SYN;
      ctx->tags[free_slot] = tag;
      ctx->due[free_slot] = lb_rl_ticks (now + ctx->cfg.syn_timeout_s);
      ctx->c.tracked_flows++;
      ctx->c.new_flows++;
      ctx->sc[srv].n_flow_new++;
      lb_rl_load_add (ctx, (uint32_t) srv, 1);
      return lb_rl_forward (ctx, (uint32_t) srv, len);
    }
  ctx->c.untracked_miss++;

hash_forward:
  /* Untracked packets follow the weights in force through the weighted bucket
   * table (equal buckets under ECMP, whose new flows ignore weights), so a flood
   * that fills the table does not turn WCMP/SED into ECMP; same hash, same
   * server while the weights stay. */
  {
    const lb_rl_wtab_t *t = LB_RL_ACQUIRE (ctx->wt);
    b = (ctx->cfg.policy == LB_RL_POLICY_ECMP ? t->ecmp : t->wmap)[h & ctx->ecmp_mask];
  }
  if (LB_RL_UNLIKELY (b == LB_RL_NO_SERVER_U16))
    {
      ctx->c.no_server++;
      return LB_RL_E_NO_SERVER;
    }
  if (is_syn)
    ctx->sc[b].n_flow_untracked++;
  return lb_rl_forward (ctx, b, len);
}

int32_t
lb_rl_process_ex (lb_rl_ctx_t *ctx, double now, const lb_rl_5tuple_t *key, uint8_t tcp_flags,
		  uint32_t len, int32_t new_flow_server)
{
  return lb_rl_process_hashed (ctx, now, key, lb_rl_hash_5tuple (key), tcp_flags, len,
			       new_flow_server);
}

int32_t
lb_rl_process (lb_rl_ctx_t *ctx, double now, const lb_rl_5tuple_t *key, uint8_t tcp_flags,
	       uint32_t len)
{
  return lb_rl_process_hashed (ctx, now, key, lb_rl_hash_5tuple (key), tcp_flags, len, -1);
}

/* How many packets ahead the batch loop hashes and prefetches. */
#define LB_RL_BATCH_AHEAD 8

/* Prefetch what the lookup of a packet with this home slot reads first: the home
 * entry and the group's tags; for a SYN, which usually misses, the tags and the
 * group's due hints (a full group's scan reads them), not the entry. A macro, not
 * an inline function: GCC 12 -O2 deleted the inline version's prefetches as dead
 * code (clang kept them); check with -S | grep prefetch. */
#define LB_RL_PREFETCH_HOME(ctx, home, flags)                                           \
  do                                                                                     \
    {                                                                                    \
      LB_RL_PREFETCH (&(ctx)->tags[home]);                                               \
      if ((flags) &LB_RL_TCP_SYN)                                                        \
	LB_RL_PREFETCH (&(ctx)->due[home]);                                              \
      else                                                                               \
	LB_RL_PREFETCH (&(ctx)->flows[home]);                                            \
    }                                                                                    \
  while (0)

/* Packets are processed strictly in order (results equal n single calls); only
 * the hash and the prefetch of the home tag/entry run AHEAD packets early so
 * their cache misses overlap. Packet i's key is keys[idx[i]], or keys[i] when
 * idx is NULL (inlined into both callers, so the test folds away). */
static inline void
lb_rl_process_batch_inline (lb_rl_ctx_t *ctx, uint32_t n, const double *now,
			    const lb_rl_5tuple_t *keys, const uint32_t *idx,
			    const uint8_t *tcp_flags, const uint32_t *len, const int32_t *forced,
			    int32_t *out_server)
{
  uint64_t hs[LB_RL_BATCH_AHEAD];
  uint32_t i, pre = n < LB_RL_BATCH_AHEAD ? n : LB_RL_BATCH_AHEAD;
  for (i = 0; i < pre; i++)
    {
      uint64_t h = lb_rl_hash_5tuple (&keys[idx ? idx[i] : i]);
      uint32_t home = (uint32_t) h & ctx->table_mask;
      hs[i] = h;
      LB_RL_PREFETCH_HOME (ctx, home, tcp_flags[i]);
    }
  for (i = 0; i < n; i++)
    {
      uint64_t h = hs[i % LB_RL_BATCH_AHEAD];
      uint32_t ahead = i + LB_RL_BATCH_AHEAD;
      if (ahead < n)
	{
	  uint64_t ha = lb_rl_hash_5tuple (&keys[idx ? idx[ahead] : ahead]);
	  uint32_t home = (uint32_t) ha & ctx->table_mask;
	  hs[ahead % LB_RL_BATCH_AHEAD] = ha;
	  LB_RL_PREFETCH_HOME (ctx, home, tcp_flags[ahead]);
	}
      out_server[i] = lb_rl_process_hashed (ctx, now[i], &keys[idx ? idx[i] : i], h,
					    tcp_flags[i], len[i], forced ? forced[i] : -1);
    }
}

void
lb_rl_process_batch (lb_rl_ctx_t *ctx, uint32_t n, const double *now,
		     const lb_rl_5tuple_t *keys, const uint8_t *tcp_flags, const uint32_t *len,
		     const int32_t *forced, int32_t *out_server)
{
  lb_rl_process_batch_inline (ctx, n, now, keys, 0, tcp_flags, len, forced, out_server);
}

void
lb_rl_process_batch_idx (lb_rl_ctx_t *ctx, uint32_t n, const double *now,
			 const lb_rl_5tuple_t *key_table, const uint32_t *key_idx,
			 const uint8_t *tcp_flags, const uint32_t *len, const int32_t *forced,
			 int32_t *out_server)
{
  lb_rl_process_batch_inline (ctx, n, now, key_table, key_idx, tcp_flags, len, forced,
			      out_server);
}

uint32_t
lb_rl_expire (lb_rl_ctx_t *ctx, double now, uint32_t budget)
{
  /* Visit at most one full table round from a persistent cursor, freeing up
   * to budget entries that are lost, closed past linger or idle past timeout. */
  uint32_t visited, freed = 0, s = ctx->expire_cursor, now_ticks = lb_rl_ticks (now);
  for (visited = 0; visited < ctx->cfg.table_size && freed < budget; visited++)
    {
      if (ctx->tags[s] != 0 && lb_rl_maybe_due (ctx, s, now_ticks) &&
	  lb_rl_slot_reclaim (ctx, s, now))
	freed++;
      s = (s + 1) & ctx->table_mask;
    }
  ctx->expire_cursor = s;
  /* A full round with every generation checked ends the lost-entry scan. */
  if (ctx->lost_scan)
    {
      ctx->lost_scan_left = visited >= ctx->lost_scan_left ? 0 : ctx->lost_scan_left - visited;
      if (ctx->lost_scan_left == 0)
	ctx->lost_scan = 0;
    }
  return freed;
}
