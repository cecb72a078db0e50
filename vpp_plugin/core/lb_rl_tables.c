/*
 * lb_rl_tables.c — weight tables built off the fast path: eligible list,
 * 1/w for SED, Vose alias table for WCMP, Maglev-style ECMP bucket table and
 * the weighted bucket table that forwards untracked flows.
 * lb_rl_tables_rebuild fills the inactive buffer and publishes it with one
 * release store; the fast path only ever reads the published buffer.
 */
#include <stdlib.h>
#include <string.h>

#include "lb_rl_hash.h"
#include "lb_rl_internal.h"

int
lb_rl_work_alloc (lb_rl_work_t *wk, uint32_t max)
{
  memset (wk, 0, sizeof *wk);
  wk->max = max;
  wk->w = calloc (max, sizeof (double));
  wk->w_by_server = calloc (max, sizeof (double));
  wk->p = calloc (max, sizeof (double));
  wk->frac = calloc (max, sizeof (double));
  wk->small = calloc (max, sizeof (uint32_t));
  wk->large = calloc (max, sizeof (uint32_t));
  wk->next = calloc (max, sizeof (uint32_t));
  wk->offset = calloc (max, sizeof (uint32_t));
  wk->skip = calloc (max, sizeof (uint32_t));
  wk->quota = calloc (max, sizeof (uint32_t));
  wk->have = calloc (max, sizeof (uint32_t));
  wk->order = calloc (max, sizeof (uint32_t));
  if (!wk->w || !wk->w_by_server || !wk->p || !wk->frac || !wk->small || !wk->large ||
      !wk->next || !wk->offset || !wk->skip || !wk->quota || !wk->have || !wk->order)
    {
      lb_rl_work_free (wk);
      return -1;
    }
  return 0;
}

void
lb_rl_work_free (lb_rl_work_t *wk)
{
  free (wk->w);
  free (wk->w_by_server);
  free (wk->p);
  free (wk->frac);
  free (wk->small);
  free (wk->large);
  free (wk->next);
  free (wk->offset);
  free (wk->skip);
  free (wk->quota);
  free (wk->have);
  free (wk->order);
  memset (wk, 0, sizeof *wk);
}

void
lb_rl_alias_build (const double *w, const uint16_t *idx, uint32_t n, uint64_t *thr,
		   uint16_t *alias, lb_rl_work_t *wk)
{
  /* Vose's alias method: scaled p_j = n w_j / sum w. Columns with p < 1
   * ("small") are topped up by one column with p >= 1 ("large"), which then
   * loses (1 - p_small). Each column j keeps its own index with probability
   * p_j and otherwise yields alias[j]; a draw is one uniform column + one
   * uniform u32 compare, O(1). */
  double *p = wk->p, sum = 0.0;
  uint32_t *small = wk->small, *large = wk->large;
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
lb_rl_ecmp_fill (uint16_t *buckets, uint32_t m, const uint16_t *elig, uint32_t n,
		 lb_rl_work_t *wk)
{
  /* Maglev (Eisenbud et al., NSDI'16) population with a power-of-two table:
   * server i walks the permutation (offset_i + k * skip_i) mod m, skip_i odd
   * hence coprime with m, and servers take turns claiming their next free
   * preferred bucket. Turn-taking gives every server floor or ceil of m/n
   * buckets; the per-server permutations keep most buckets in place when the
   * server set changes. Offsets/skips hash the server index only, so every LB
   * builds the same table for the same server set. */
  uint32_t *next = wk->next, *offset = wk->offset, *skip = wk->skip;
  uint32_t i, filled = 0, mask = m - 1;
  for (i = 0; i < m; i++)
    buckets[i] = LB_RL_NO_SERVER_U16;
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
	while (buckets[b] != LB_RL_NO_SERVER_U16)
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

/* Order of the largest-remainder method: larger fractional part first, then lower
 * server index (qsort is not stable, so the index is part of the key). */
static LB_RL_THREAD_LOCAL const double *lb_rl_frac_key;

static int
lb_rl_frac_cmp (const void *a, const void *b)
{
  uint32_t i = *(const uint32_t *) a, j = *(const uint32_t *) b;
  double fi = lb_rl_frac_key[i], fj = lb_rl_frac_key[j];
  if (fi != fj)
    return fi > fj ? -1 : 1;
  return i < j ? -1 : (i > j);
}

void
lb_rl_wmap_update (uint16_t *map, uint32_t m, const double *w, uint32_t max_servers,
		   lb_rl_work_t *wk)
{
  /* Quotas by the largest-remainder method: floor(m w_i / W) each, then one more
   * bucket to the servers with the largest fractional parts (lower index first
   * on ties), so every share is within one bucket of m w_i / W. */
  uint32_t *quota = wk->quota, *have = wk->have, *order = wk->order;
  double *frac = wk->frac, sum = 0.0;
  uint32_t i, b, given = 0, next = 0, n_pos = 0;
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
  /* At most one extra bucket each, to the first m - given servers of weight > 0 in
   * that order: a sort, O(n log n), where picking the largest one by one was O(n^2)
   * (17 M steps per weight update at 4096 servers). */
  if (sum > 0.0 && given < m)
    {
      for (i = 0; i < max_servers; i++)
	if (w[i] > 0.0)
	  order[n_pos++] = i;
      lb_rl_frac_key = frac;
      qsort (order, n_pos, sizeof *order, lb_rl_frac_cmp);
      for (i = 0; i < n_pos && given < m; i++, given++)
	quota[order[i]]++;
    }
  /* Release: a bucket stays with its server while the server is within quota;
   * only the surplus is freed, so no bucket moves that need not. */
  for (b = 0; b < m; b++)
    {
      uint16_t s = map[b];
      if (s == LB_RL_NO_SERVER_U16)
	continue;
      if (s < max_servers && have[s] < quota[s])
	have[s]++;
      else
	map[b] = LB_RL_NO_SERVER_U16;
    }
  /* Refill the freed buckets with the servers below quota, in index order. */
  for (b = 0; b < m; b++)
    {
      if (map[b] != LB_RL_NO_SERVER_U16)
	continue;
      while (next < max_servers && have[next] >= quota[next])
	next++;
      if (next == max_servers)
	break; /* all quotas met: only possible when every weight is 0 */
      map[b] = (uint16_t) next;
      have[next]++;
    }
}

void
lb_rl_tables_rebuild (lb_rl_ctx_t *ctx)
{
  lb_rl_wtab_t *t = (ctx->wt == &ctx->wtab[0]) ? &ctx->wtab[1] : &ctx->wtab[0];
  double *w = ctx->work.w, *w_by_server = ctx->work.w_by_server;
  uint32_t i, n = 0;
  memset (t->inv_w, 0, ctx->cfg.max_servers * sizeof (double));
  for (i = 0; i < ctx->cfg.max_servers; i++)
    {
      w_by_server[i] = 0.0;
      if (lb_rl_bit (ctx->present, i) && !lb_rl_bit (ctx->drained, i) && ctx->cur_w[i] > 0.0)
	{
	  t->elig[n] = (uint16_t) i;
	  w[n] = ctx->cur_w[i];
	  w_by_server[i] = ctx->cur_w[i];
	  t->inv_w[i] = 1.0 / ctx->cur_w[i];
	  n++;
	}
    }
  t->n_elig = n;
  if (n > 0)
    lb_rl_alias_build (w, t->elig, n, t->thr, t->alias, &ctx->work);
  lb_rl_ecmp_fill (t->ecmp, ctx->cfg.ecmp_buckets, t->elig, n, &ctx->work);
  /* The weighted map evolves from the one in force (minimal disruption). */
  if (ctx->wt)
    memcpy (t->wmap, ctx->wt->wmap, ctx->cfg.ecmp_buckets * sizeof (uint16_t));
  else
    for (i = 0; i < ctx->cfg.ecmp_buckets; i++)
      t->wmap[i] = LB_RL_NO_SERVER_U16;
  lb_rl_wmap_update (t->wmap, ctx->cfg.ecmp_buckets, w_by_server, ctx->cfg.max_servers,
		     &ctx->work);
  /* Publish: a reader that sees the new pointer sees the filled tables. */
  LB_RL_PUBLISH (ctx->wt, t);
  /* The tree indexes the published eligible list. Not double-buffered: its updates
   * come from the fast path, so like every other weight change this runs where the
   * fast path cannot (same thread, or VPP workers held at the barrier). */
  lb_rl_tree_rebuild (ctx);
}
