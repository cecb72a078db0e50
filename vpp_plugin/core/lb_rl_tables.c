/*
 * lb_rl_tables.c — weight tables built off the fast path: eligible list,
 * 1/w for SED, Vose alias table for WCMP, Maglev-style ECMP bucket table and
 * the weighted bucket table that forwards untracked flows.
 * lb_rl_tables_rebuild fills the inactive buffer and publishes it with one
 * release store; the fast path only ever reads the published buffer.
 */
#include <string.h>

#include "lb_rl_hash.h"
#include "lb_rl_internal.h"

void
lb_rl_alias_build (const double *w, const uint8_t *idx, uint32_t n, uint64_t *thr,
		   uint8_t *alias)
{
  /* Vose's alias method: scaled p_j = n w_j / sum w. Columns with p < 1
   * ("small") are topped up by one column with p >= 1 ("large"), which then
   * loses (1 - p_small). Each column j keeps its own index with probability
   * p_j and otherwise yields alias[j]; a draw is one uniform column + one
   * uniform u32 compare, O(1). */
  double p[LB_RL_MAX_SERVERS], sum = 0.0;
  uint32_t small[LB_RL_MAX_SERVERS], large[LB_RL_MAX_SERVERS];
  uint32_t ns = 0, nl = 0, j;
  for (j = 0; j < n; j++)
    sum += w[j];
  for (j = 0; j < n; j++)
    {
      p[j] = w[j] * (double) n / sum;
      alias[j] = idx[j];
      if (p[j] < 1.0)
	small[ns++] = j;
      else
	large[nl++] = j;
    }
  while (ns > 0 && nl > 0)
    {
      uint32_t s = small[--ns], l = large[nl - 1];
      thr[s] = (uint64_t) (p[s] * 4294967296.0);
      alias[s] = idx[l];
      p[l] = (p[l] + p[s]) - 1.0;
      if (p[l] < 1.0)
	{
	  nl--;
	  small[ns++] = l;
	}
    }
  /* Leftovers have p == 1 up to rounding: keep their own index always. */
  while (nl > 0)
    thr[large[--nl]] = 4294967296ULL;
  while (ns > 0)
    thr[small[--ns]] = 4294967296ULL;
}

void
lb_rl_ecmp_fill (uint8_t *buckets, uint32_t m, const uint8_t *elig, uint32_t n)
{
  /* Maglev (Eisenbud et al., NSDI'16) population with a power-of-two table:
   * server i walks the permutation (offset_i + k * skip_i) mod m, skip_i odd
   * hence coprime with m, and servers take turns claiming their next free
   * preferred bucket. Turn-taking gives every server floor or ceil of m/n
   * buckets; the per-server permutations keep most buckets in place when the
   * server set changes. Offsets/skips hash the server index only, so every LB
   * builds the same table for the same server set. */
  uint32_t next[LB_RL_MAX_SERVERS], offset[LB_RL_MAX_SERVERS], skip[LB_RL_MAX_SERVERS];
  uint32_t i, filled = 0, mask = m - 1;
  memset (buckets, LB_RL_NO_SERVER_U8, m);
  if (n == 0)
    return;
  for (i = 0; i < n; i++)
    {
      uint64_t h = lb_rl_fmix64 (0x5EED5EED00000000ULL + elig[i]);
      offset[i] = (uint32_t) h & mask;
      skip[i] = ((uint32_t) (h >> 32) & mask) | 1u;
      next[i] = 0;
    }
  for (;;)
    for (i = 0; i < n; i++)
      {
	uint32_t b = (offset[i] + next[i] * skip[i]) & mask;
	while (buckets[b] != LB_RL_NO_SERVER_U8)
	  {
	    next[i]++;
	    b = (offset[i] + next[i] * skip[i]) & mask;
	  }
	buckets[b] = elig[i];
	next[i]++;
	if (++filled == m)
	  return;
      }
}

void
lb_rl_wmap_update (uint8_t *map, uint32_t m, const double *w, uint32_t max_servers)
{
  /* Quotas by the largest-remainder method: floor(m w_i / W) each, then one more
   * bucket to the servers with the largest fractional parts (lower index first
   * on ties), so every share is within one bucket of m w_i / W. */
  uint32_t quota[LB_RL_MAX_SERVERS], have[LB_RL_MAX_SERVERS];
  double frac[LB_RL_MAX_SERVERS], sum = 0.0;
  uint32_t i, b, given = 0, next = 0;
  for (i = 0; i < max_servers; i++)
    sum += w[i];
  for (i = 0; i < max_servers; i++)
    {
      double exact = sum > 0.0 ? (double) m * w[i] / sum : 0.0;
      quota[i] = (uint32_t) exact;
      frac[i] = exact - (double) quota[i];
      given += quota[i];
      have[i] = 0;
    }
  while (sum > 0.0 && given < m)
    {
      uint32_t best = max_servers;
      for (i = 0; i < max_servers; i++)
	if (w[i] > 0.0 && frac[i] >= 0.0 && (best == max_servers || frac[i] > frac[best]))
	  best = i;
      frac[best] = -1.0; /* at most one extra bucket each */
      quota[best]++;
      given++;
    }
  /* Release: a bucket stays with its server while the server is within quota;
   * only the surplus is freed, so no bucket moves that need not. */
  for (b = 0; b < m; b++)
    {
      uint8_t s = map[b];
      if (s == LB_RL_NO_SERVER_U8)
	continue;
      if (s < max_servers && have[s] < quota[s])
	have[s]++;
      else
	map[b] = LB_RL_NO_SERVER_U8;
    }
  /* Refill the freed buckets with the servers below quota, in index order. */
  for (b = 0; b < m; b++)
    {
      if (map[b] != LB_RL_NO_SERVER_U8)
	continue;
      while (next < max_servers && have[next] >= quota[next])
	next++;
      if (next == max_servers)
	break; /* all quotas met: only possible when every weight is 0 */
      map[b] = (uint8_t) next;
      have[next]++;
    }
}

void
lb_rl_tables_rebuild (lb_rl_ctx_t *ctx)
{
  lb_rl_wtab_t *t = (ctx->wt == &ctx->wtab[0]) ? &ctx->wtab[1] : &ctx->wtab[0];
  double w[LB_RL_MAX_SERVERS], w_by_server[LB_RL_MAX_SERVERS];
  uint32_t i, n = 0;
  uint64_t ok = ctx->present & ~ctx->drained;
  memset (t->inv_w, 0, sizeof t->inv_w);
  for (i = 0; i < ctx->cfg.max_servers; i++)
    {
      w_by_server[i] = 0.0;
      if ((ok & (1ULL << i)) && ctx->cur_w[i] > 0.0)
	{
	  t->elig[n] = (uint8_t) i;
	  w[n] = ctx->cur_w[i];
	  w_by_server[i] = ctx->cur_w[i];
	  t->inv_w[i] = 1.0 / ctx->cur_w[i];
	  n++;
	}
    }
  t->n_elig = n;
  if (n > 0)
    lb_rl_alias_build (w, t->elig, n, t->thr, t->alias);
  lb_rl_ecmp_fill (t->ecmp, ctx->cfg.ecmp_buckets, t->elig, n);
  /* The weighted map evolves from the one in force (minimal disruption). */
  if (ctx->wt)
    memcpy (t->wmap, ctx->wt->wmap, ctx->cfg.ecmp_buckets);
  else
    memset (t->wmap, LB_RL_NO_SERVER_U8, ctx->cfg.ecmp_buckets);
  lb_rl_wmap_update (t->wmap, ctx->cfg.ecmp_buckets, w_by_server, ctx->cfg.max_servers);
  /* Publish: a reader that sees the new pointer sees the filled tables. */
  LB_RL_PUBLISH (ctx->wt, t);
}
